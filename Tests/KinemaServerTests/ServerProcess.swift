import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import XCTest

/// A `kinema serve` process of the release build, on a free port, with a small random-weight model.
final class ServerProcess {
    let process = Process()
    let port: Int
    let log: URL
    let dataDirectory: URL

    /// The release executable: $KINEMA_BIN, else .build/release/kinema of this package (./test.sh builds it first).
    static var executable: URL {
        get throws {
            if let path = ProcessInfo.processInfo.environment["KINEMA_BIN"] { return URL(fileURLWithPath: path) }
            let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            let release = root.appendingPathComponent(".build/release/kinema")
            guard FileManager.default.isExecutableFile(atPath: release.path) else {
                throw XCTSkip("server tests run the release build: run `swift build -c release --product kinema` first (./test.sh does)")
            }
            return release
        }
    }

    /// The random-weight test pipeline with a kinema.json whose ranges allow tiny sizes.
    static func makeModel(in directory: URL) throws -> URL {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        let fixture = root.appendingPathComponent("KinemaPipelineTests/Fixtures/pipelines/tiny_no_guidance")
        let model = directory.appendingPathComponent("model")
        try FileManager.default.copyItem(at: fixture, to: model)
        try? FileManager.default.removeItem(at: model.appendingPathComponent("reference.safetensors"))
        let settings = """
            {"width": 64, "height": 64, "frames": 4, "fps": 8, "steps": 4, "guidance": 1,
             "ranges": {"width": {"min": 32, "max": 256, "step": 8}, "height": {"min": 32, "max": 256, "step": 8},
                        "frames": {"min": 2, "max": 32, "step": 1}, "steps": {"min": 2, "max": 200, "step": 1}}}
            """
        try Data(settings.utf8).write(to: model.appendingPathComponent("kinema.json"))
        return model
    }

    /// Starts `kinema serve` (or, with `command` "worker", `kinema worker`) and waits until it listens (a worker:
    /// until it says it is running jobs).
    init(model: URL, dataDirectory: URL, arguments: [String] = [], name: String = "server", command: String = "serve") throws {
        self.dataDirectory = dataDirectory
        log = dataDirectory.deletingLastPathComponent().appendingPathComponent("\(name)-\(UUID().uuidString.prefix(8)).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        process.executableURL = try Self.executable
        let listening = command == "serve" ? ["--port", "0"] : []
        process.arguments = [command, "--model", model.path, "--data-dir", dataDirectory.path, "--threads", "2"] + listening + arguments
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        var found: Int?
        while found == nil && Date() < deadline && process.isRunning {
            Thread.sleep(forTimeInterval: 0.05)
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            if command != "serve" {
                if text.contains("is running jobs from") { found = 0 }
            } else if let range = text.range(of: #"at http://127\.0\.0\.1:(\d+)/"#, options: .regularExpression) {
                found = Int(text[range].split(separator: ":").last!.dropLast())
            }
        }
        guard let found else {
            process.terminate()
            throw ServerTestError("the \(name) did not start; its log:\n" + ((try? String(contentsOf: log, encoding: .utf8)) ?? ""))
        }
        port = found
    }

    var logText: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    func kill(_ signal: Int32) { Foundation.kill(process.processIdentifier, signal) }

    func stop() {
        guard process.isRunning else { return }
        kill(SIGKILL)
        process.waitUntilExit()
    }

    deinit { stop() }

    // MARK: HTTP

    struct Reply {
        let status: Int
        let headers: [String: String]
        let body: Data
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    func request(_ method: String, _ path: String, json: Any? = nil, body: Data? = nil, headers: [String: String] = [:],
                 timeout: TimeInterval = 30) throws -> Reply {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!, timeoutInterval: timeout)
        request.httpMethod = method
        if let json {
            request.httpBody = try JSONSerialization.data(withJSONObject: json)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        } else if let body {
            request.httpBody = body
        }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var outcome: Result<Reply, Error>?
        URLSession.shared.dataTask(with: request) { data, response, error in
            if let response = response as? HTTPURLResponse {
                var fields: [String: String] = [:]
                for (key, value) in response.allHeaderFields { fields["\(key)".lowercased()] = "\(value)" }
                outcome = .success(Reply(status: response.statusCode, headers: fields, body: data ?? Data()))
            } else {
                outcome = .failure(error ?? ServerTestError("no response to \(method) \(path)"))
            }
            done.signal()
        }.resume()
        done.wait()
        return try outcome!.get()
    }

    /// Uploads a fresh random PNG and returns its image id.
    func uploadRandomImage(width: Int = 48, height: Int = 40) throws -> String {
        let reply = try request("POST", "/api/v1/uploads", body: PNG.random(width: width, height: height), headers: ["Content-Type": "image/png"])
        guard reply.status == 201, let id = reply.json["image_id"] as? String else {
            throw ServerTestError("upload failed: \(reply.status) \(reply.text)")
        }
        return id
    }

    /// Polls the job until `condition` holds, or fails after `timeout`.
    @discardableResult
    func waitForJob(_ id: String, timeout: TimeInterval, _ what: String, until condition: ([String: Any]) -> Bool) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String: Any] = [:]
        while Date() < deadline {
            last = try request("GET", "/api/v1/jobs/\(id)").json
            if condition(last) { return last }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw ServerTestError("job \(id) did not reach \(what) within \(timeout) s; last seen: \(last)\nserver log:\n\(logText.suffix(3000))")
    }
}

struct ServerTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Small PNG files written without any image library (stored, uncompressed deflate blocks).
enum PNG {
    static func random(width: Int, height: Int) -> Data {
        var raw = [UInt8]()
        for _ in 0..<height {
            raw.append(0)
            for _ in 0..<(width * 3) { raw.append(UInt8.random(in: 0...255)) }
        }
        return encode(width: width, height: height, raw: raw)
    }

    static func encode(width: Int, height: Int, raw: [UInt8]) -> Data {
        var out = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
        func chunk(_ type: String, _ data: [UInt8]) {
            let body = Array(type.utf8) + data
            out.append(contentsOf: be32(UInt32(data.count)) + body + be32(crc32(body)))
        }
        chunk("IHDR", be32(UInt32(width)) + be32(UInt32(height)) + [8, 2, 0, 0, 0])
        var zlib: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let n = min(65535, raw.count - offset)
            let last: UInt8 = offset + n == raw.count ? 1 : 0
            zlib += [last, UInt8(n & 255), UInt8(n >> 8), UInt8(~n & 255), UInt8((~n >> 8) & 255)] + raw[offset..<offset + n]
            offset += n
        } while offset < raw.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in raw { a = (a + UInt32(byte)) % 65521; b = (b + a) % 65521 }
        zlib += be32(b << 16 | a)
        chunk("IDAT", zlib)
        chunk("IEND", [])
        return out
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }
}

/// A fresh temporary folder per test.
class ServerTestCase: XCTestCase {
    var directory: URL!
    var model: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-server-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        model = try ServerProcess.makeModel(in: directory)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    func startServer(_ arguments: [String] = [], data: String = "data", name: String = "server") throws -> ServerProcess {
        try ServerProcess(model: model, dataDirectory: directory.appendingPathComponent(data), arguments: arguments, name: name)
    }
}
