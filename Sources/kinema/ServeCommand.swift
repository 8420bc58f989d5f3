import ArgumentParser
import Foundation
import KinemaPlanner
import KinemaServer
import Logging

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the WebUI and the HTTP API, and run the job queue.",
        discussion: """
            Opens the WebUI at http://HOST:PORT/ and the API under /api/v1 (see docs/api.md and \
            /openapi.yaml). Jobs are kept in a SQLite database in the data directory and survive \
            restarts: a job that was running when the server stopped is run again.

            With --store postgres://… the server is an API node of a cluster: jobs, uploads and \
            outputs live in that PostgreSQL database, any number of API nodes may share it, and \
            `kinema worker` processes (one per device, on any machines) run the jobs. See docs/deploy.md.

            The server binds 127.0.0.1 unless told otherwise; another address needs --api-token \
            (clients then send "Authorization: Bearer TOKEN") or --insecure.

            Examples:
              kinema serve                                   the default model on 127.0.0.1:7860
              kinema serve --model ~/i2vgen-xl --memory-budget 12GiB
              kinema serve --host 0.0.0.0 --api-token "$(openssl rand -hex 16)"
              kinema serve --store postgres://kinema@db:5432/kinema --host 0.0.0.0 --api-token TOKEN
            """
    )

    @Option(help: "Address to bind.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks a free one and logs it).")
    var port = 7860

    @Option(help: "A diffusers model folder to serve (default: as for generate: $KINEMA_MODEL, ./Models/kinema-tiny, …).")
    var model: String?

    @Option(help: "Where jobs, uploads and outputs are kept (default: $KINEMA_DATA, else ~/.local/share/kinema); with --store, a local cache.")
    var dataDir: String?

    @Option(help: ArgumentHelp("A PostgreSQL URL (postgres://user[:password]@host[:port]/db[?sslmode=disable]) shared with other API nodes and workers; this process then serves the API only (default: $KINEMA_STORE, else SQLite in the data directory).", valueName: "url"))
    var store: String?

    @Option(help: "Most memory one generation may plan for, e.g. 6GiB or auto; a job may ask for less, never more.")
    var memoryBudget: String?

    @Option(help: "What --memory-budget auto leaves free.")
    var memoryHeadroom = "512MiB"

    @Option(help: "Require 'Authorization: Bearer TOKEN' on the API (default: $KINEMA_API_TOKEN).")
    var apiToken: String?

    @Flag(help: "Allow binding beyond loopback without a token.")
    var insecure = false

    @Option(help: "Largest upload, e.g. 20MiB.")
    var uploadLimit = "20MiB"

    @Option(help: "Queued jobs accepted before new ones are refused with 429.")
    var queueLimit = 100

    @Option(help: "Seconds a worker's claim on a job lasts without a heartbeat; a job whose worker died is taken up again after it.")
    var leaseSeconds = 30.0

    @Option(help: "CPU worker threads for generation (default: one per core).")
    var threads: Int?

    @Option(help: "This worker's name in job leases (default: host/cpu/pid).")
    var workerID: String?

    @Flag(help: "Do not run jobs in this process (another process on the same data directory runs them).")
    var noWorker = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel = "info"

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        let folder = try ModelLocator.resolve(model)
        var configuration = ServerConfiguration(models: [ServedModel(folder: folder)], dataDirectory: DataDirectory.resolve(dataDir))
        configuration.storeURL = sharedStoreURL(store)
        configuration.host = host
        configuration.port = port
        configuration.memoryBudget = memoryBudget
        configuration.memoryHeadroom = memoryHeadroom
        configuration.apiToken = apiToken ?? environment["KINEMA_API_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        configuration.insecure = insecure
        configuration.uploadLimitBytes = try MemoryBudget.bytes(parsing: uploadLimit)
        configuration.queueLimit = queueLimit
        configuration.leaseSeconds = leaseSeconds
        configuration.threads = threads
        configuration.runsWorker = !noWorker && configuration.storeURL == nil
        configuration.workerID = workerID
        if let threads, threads < 1 { throw CLIError("--threads must be at least 1") }
        try runServer(configuration, logLevel: logLevel)
    }
}

/// The shared store's URL: the option, else $KINEMA_STORE when set and not empty.
func sharedStoreURL(_ option: String?) -> String? {
    option ?? ProcessInfo.processInfo.environment["KINEMA_STORE"].flatMap { $0.isEmpty ? nil : $0 }
}

/// Sets up logging at `logLevel` and runs the server or worker until it stops.
func runServer(_ configuration: ServerConfiguration, logLevel: String) throws {
    guard let level = Logger.Level(rawValue: logLevel) else { throw CLIError("--log-level must be one of trace, debug, info, notice, warning, error") }
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
    let logger = Logger(label: "kinema")
    let outcome = ServerOutcome()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        do { try await KinemaServer.run(configuration, logger: logger) } catch { outcome.error = error }
        done.signal()
    }
    done.wait()
    if let error = outcome.error { throw CLIError("\(error)") }
}

/// The server task's error, handed to the waiting main thread.
final class ServerOutcome: @unchecked Sendable { var error: Error? }
