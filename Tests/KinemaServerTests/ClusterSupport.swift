import Foundation
import XCTest

/// The PostgreSQL test server that `./test.sh` starts (KINEMA_TEST_POSTGRES_URL, with its cluster folder in
/// KINEMA_TEST_POSTGRES_DIR), reached with Debian's own `psql` and `pg_ctl`.
enum TestPostgres {
    static var serverURL: String? {
        ProcessInfo.processInfo.environment["KINEMA_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Skips the test with one clear line when no test server is configured.
    static func require() throws -> String {
        guard let url = serverURL else {
            throw XCTSkip("KINEMA_TEST_POSTGRES_URL is not set: multi-node tests need a PostgreSQL server (./test.sh starts one)")
        }
        return url
    }

    /// A new empty database on the test server; its URL.
    static func makeDatabase() throws -> String {
        let server = try require()
        let name = "kinema_cluster_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased())"
        try psql(server, "CREATE DATABASE \(name)")
        var components = URLComponents(string: server)!
        components.path = "/\(name)"
        return components.string!
    }

    static func dropDatabase(_ url: String) {
        guard let server = serverURL, let name = URLComponents(string: url)?.path.dropFirst() else { return }
        _ = try? psql(server, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    /// Runs one statement with psql and returns its unaligned output.
    @discardableResult
    static func psql(_ url: String, _ sql: String) throws -> String {
        try run(["psql", url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql], asServerOwner: false)
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`).
    static func crash() throws { try pgctl(["stop", "-m", "immediate", "-w"]) }

    /// Starts the stopped server again and waits until it accepts connections.
    static func start() throws {
        guard let dir = ProcessInfo.processInfo.environment["KINEMA_TEST_POSTGRES_DIR"] else { throw XCTSkip("KINEMA_TEST_POSTGRES_DIR is not set") }
        try pgctl(["start", "-w", "-t", "60", "-l", "\(dir)/server.log"])
    }

    private static func pgctl(_ arguments: [String]) throws {
        let environment = ProcessInfo.processInfo.environment
        guard let dir = environment["KINEMA_TEST_POSTGRES_DIR"], let bin = environment["KINEMA_TEST_POSTGRES_BIN"] else {
            throw XCTSkip("KINEMA_TEST_POSTGRES_DIR and KINEMA_TEST_POSTGRES_BIN are not set: the server cannot be restarted (./test.sh sets them)")
        }
        try run(["\(bin)/pg_ctl", "-D", "\(dir)/data"] + arguments, asServerOwner: true)
    }

    /// PostgreSQL refuses to run as root: as root, `pg_ctl` runs as the cluster's owner `postgres`. Spawned and
    /// reaped with posix_spawn and waitpid, output through a file: the server that `pg_ctl start` leaves behind
    /// would hold a pipe open, and Foundation's Process was seen waiting for ever on it.
    @discardableResult
    private static func run(_ command: [String], asServerOwner: Bool) throws -> String {
        let capture = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-command-\(UUID().uuidString).txt")
        defer { try? FileManager.default.removeItem(at: capture) }
        let words = (asServerOwner && getuid() == 0 ? ["runuser", "-u", "postgres", "--"] : []) + command
        let quoted = words.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
        let shell: [String] = ["/bin/sh", "-c", "\(quoted) >'\(capture.path)' 2>&1 </dev/null"]
        var argv: [UnsafeMutablePointer<CChar>?] = shell.map { strdup($0) }
        argv.append(nil)
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, "/bin/sh", nil, nil, argv, environ) == 0 else { throw ServerTestError("cannot run \(quoted)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = ((try? String(contentsOf: capture, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard status == 0 else { throw ServerTestError("\(quoted) failed (status \(status)): \(text)") }
        return text
    }
}

/// API nodes and workers sharing one PostgreSQL database, each with a data folder of its own (no shared
/// file system), all real `kinema` processes.
/// A test case that runs a `Cluster` on the test PostgreSQL server, stops it after each test and
/// prints its nodes' logs when the test failed.
class ClusterTestCase: ServerTestCase {
    var cluster: Cluster?

    override func tearDownWithError() throws {
        if let cluster {
            if (testRun?.totalFailureCount ?? 0) > 0 { print(cluster.logs) }
            cluster.stop()
        }
        try super.tearDownWithError()
    }

    func startCluster(apiNodes: Int, workers: Int, lease: Double, apiArguments: [String] = []) throws -> Cluster {
        _ = try TestPostgres.require()
        let cluster = try Cluster(directory: directory, model: model, apiNodes: apiNodes, workers: workers, lease: lease, apiArguments: apiArguments)
        self.cluster = cluster
        return cluster
    }
}

final class Cluster {
    let store: String
    var apis: [ServerProcess] = []
    var workers: [ServerProcess] = []
    /// Every worker process started, restarted ones included, for their logs.
    private(set) var workerHistory: [ServerProcess] = []
    let directory: URL
    let model: URL
    let lease: Double

    init(directory: URL, model: URL, apiNodes: Int, workers: Int, lease: Double, apiArguments: [String] = []) throws {
        store = try TestPostgres.makeDatabase()
        self.directory = directory
        self.model = model
        self.lease = lease
        // Every node starts at once on the empty database: the migration lock lets one of them create the schema.
        let lock = NSLock()
        nonisolated(unsafe) var started: [String: Result<ServerProcess, Error>] = [:]
        let names = (0..<apiNodes).map { "api\($0)" } + (0..<workers).map { "worker\($0)" }
        DispatchQueue.concurrentPerform(iterations: names.count) { index in
            let name = names[index]
            let node = Result { name.hasPrefix("api") ? try Self.startAPI(name, directory: directory, model: model, store: store, arguments: apiArguments)
                                                      : try Self.startWorker(name, directory: directory, model: model, store: store, lease: lease) }
            lock.withLock { started[name] = node }
        }
        apis = try (0..<apiNodes).map { try started["api\($0)"]!.get() }
        self.workers = try (0..<workers).map { try started["worker\($0)"]!.get() }
        workerHistory = self.workers
    }

    private static func startAPI(_ name: String, directory: URL, model: URL, store: String, arguments: [String]) throws -> ServerProcess {
        try ServerProcess(model: model, dataDirectory: directory.appendingPathComponent(name), arguments: ["--store", store] + arguments, name: name)
    }

    private static func startWorker(_ name: String, directory: URL, model: URL, store: String, lease: Double,
                                    arguments: [String] = []) throws -> ServerProcess {
        try ServerProcess(model: model, dataDirectory: directory.appendingPathComponent(name),
                          arguments: ["--store", store, "--device", "cpu", "--lease-seconds", "\(lease)", "--worker-id", name] + arguments,
                          name: name, command: "worker")
    }

    /// Starts one more worker, named `name`, with extra `kinema worker` arguments.
    @discardableResult
    func addWorker(_ name: String, arguments: [String]) throws -> ServerProcess {
        let worker = try Self.startWorker(name, directory: directory, model: model, store: store, lease: lease, arguments: arguments)
        workers.append(worker)
        workerHistory.append(worker)
        return worker
    }

    /// Starts worker `index` again (after it was killed), with the same name and data folder.
    @discardableResult
    func restartWorker(_ index: Int) throws -> ServerProcess {
        workers[index] = try Self.startWorker("worker\(index)", directory: directory, model: model, store: store, lease: lease)
        workerHistory.append(workers[index])
        return workers[index]
    }

    /// The worker whose log says it started this job's attempt.
    func worker(running id: String, attempt: Int) -> Int? {
        workers.firstIndex { $0.logText.contains("running job \(id) attempt \(attempt)") }
    }

    /// How many times workers logged the job as succeeded (exactly once when nothing was completed twice).
    func successes(of id: String) -> Int {
        workerHistory.reduce(0) { $0 + $1.logText.components(separatedBy: "job \(id) succeeded").count - 1 }
    }

    func stop() {
        (apis + workerHistory).forEach { $0.stop() }
        TestPostgres.dropDatabase(store)
    }

    var logs: String {
        (apis + workerHistory).map { "--- \($0.log.lastPathComponent)\n\($0.logText.suffix(2000))" }.joined(separator: "\n")
    }
}

/// A server-sent event stream read straight off a socket, so that what arrived before the server died is kept.
final class EventStreamReader: @unchecked Sendable {
    private let lock = NSLock()
    private var text = ""
    private var ended = false
    private let socket: Int32

    /// Opens `GET path` on 127.0.0.1:`port` with `Last-Event-ID` when given and reads in the background.
    init(port: Int, path: String, lastEventID: Int64? = nil) throws {
        socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { close(socket); throw ServerTestError("cannot connect to port \(port)") }
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        if let lastEventID { request += "Last-Event-ID: \(lastEventID)\r\n" }
        request += "\r\n"
        _ = request.withCString { send(socket, $0, strlen($0), 0) }
        let descriptor = socket
        Thread.detachNewThread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = recv(descriptor, &buffer, buffer.count, 0)
                if count <= 0 { break }
                let chunk = String(decoding: buffer[0..<count], as: UTF8.self)
                lock.withLock { text += chunk }
            }
            lock.withLock { ended = true }
        }
    }

    deinit { close(socket) }

    /// The events so far, as (id, name, data); chunked-encoding lines between events are skipped.
    var events: [(id: Int64, name: String, data: String)] {
        // Carriage returns (HTTP and chunk framing) go first: Swift sees "\r\n" as one character, not a "\n".
        let raw = String(String.UnicodeScalarView(lock.withLock { text }.unicodeScalars.filter { $0 != "\r" }))
        var found: [(Int64, String, String)] = []
        var id: Int64?, name: String?
        for line in raw.components(separatedBy: "\n") {
            if line.hasPrefix("id: ") { id = Int64(line.dropFirst(4)) }
            else if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
            else if line.hasPrefix("data: "), let eventID = id, let eventName = name {
                found.append((eventID, eventName, String(line.dropFirst(6))))
                id = nil
                name = nil
            }
        }
        return found
    }

    var hasEnded: Bool { lock.withLock { ended } }

    /// Everything received, for failure messages.
    var received: String { lock.withLock { text } }

    /// Waits until an event satisfies `condition` or `timeout` passes; the event, or nil.
    func wait(timeout: TimeInterval, for condition: ((id: Int64, name: String, data: String)) -> Bool) -> (id: Int64, name: String, data: String)? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let event = events.first(where: condition) { return event }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return nil
    }
}
