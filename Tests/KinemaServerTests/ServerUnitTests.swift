import Foundation
import XCTest
@testable import KinemaServer
import KinemaJobs

/// The server's pure parts, without a process.
final class ServerUnitTests: XCTestCase {
    func testSHA256MatchesKnownVectorsAndTheSystemTool() throws {
        XCTAssertEqual(SHA256.hex(Data()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hex(Data("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex(Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        for length in [55, 56, 63, 64, 65, Int.random(in: 1000...5000)] {
            let data = Data((0..<length).map { _ in UInt8.random(in: 0...255) })
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("sha-\(UUID().uuidString)")
            try data.write(to: file)
            defer { try? FileManager.default.removeItem(at: file) }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
            process.arguments = [file.path]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            XCTAssertEqual(SHA256.hex(data), String(output.prefix(64)), "length \(length)")
        }
    }

    func testPerWorkerMetricsEscapeTheirLabelsAndCoverOnlyTheWorkersGiven() {
        let now = Date()
        let busy = WorkerRecord(advert: WorkerAdvert(id: "gpu\"1\\a", host: "h\nx", device: "cpu", freeMemoryBytes: 1 << 30),
                                lastHeartbeat: now.addingTimeInterval(-1.5), aliveUntil: now.addingTimeInterval(10), currentJob: "job")
        let text = ServerMetrics.workerText([busy], now: now)
        let labels = #"{worker="gpu\"1\\a",host="h\nx",device="cpu"}"#
        XCTAssertTrue(text.contains("kinema_workers_alive 1\n"), text)
        XCTAssertTrue(text.contains("kinema_worker_free_memory_bytes\(labels) 1073741824\n"), text)
        XCTAssertTrue(text.contains("kinema_worker_busy\(labels) 1\n"), text)
        XCTAssertTrue(text.contains("kinema_worker_heartbeat_age_seconds\(labels) 1.500\n"), text)
        XCTAssertEqual(ServerMetrics.workerText([], now: now), """
            # HELP kinema_workers_alive Workers that advertised themselves within their lease.
            # TYPE kinema_workers_alive gauge
            kinema_workers_alive 0

            """)
    }

    func testByteRanges() {
        let size = Int.random(in: 100...1000)
        XCTAssertEqual(FileResponse.byteRange("bytes=0-9", size: size), 0..<10)
        XCTAssertEqual(FileResponse.byteRange("bytes=10-", size: size), 10..<size)
        XCTAssertEqual(FileResponse.byteRange("bytes=-5", size: size), (size - 5)..<size)
        XCTAssertEqual(FileResponse.byteRange("bytes=5-\(size * 2)", size: size), 5..<size)
        XCTAssertEqual(FileResponse.byteRange("bytes=0-0, 5-9", size: size), 0..<1)
        XCTAssertNil(FileResponse.byteRange("bytes=\(size)-", size: size))
        XCTAssertNil(FileResponse.byteRange("bytes=9-5", size: size))
        XCTAssertNil(FileResponse.byteRange("items=0-5", size: size))
        XCTAssertNil(FileResponse.byteRange("bytes=-0", size: size))
    }

    func testMultipartFormReadsFieldsAndTheFile() throws {
        let boundary = "b\(UInt32.random(in: 0...UInt32.max))"
        let file = Data((0..<Int.random(in: 10...300)).map { _ in UInt8.random(in: 0...255) })
        var body = Data()
        func part(_ name: String, _ content: Data) {
            body.append(Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n".utf8))
            body.append(content)
            body.append(Data("\r\n".utf8))
        }
        part("prompt", Data("42".utf8))
        part("width", Data("128".utf8))
        part("guidance", Data("7.5".utf8))
        part("allow_degrade", Data("true".utf8))
        part("file", file)
        body.append(Data("--\(boundary)--\r\n".utf8))
        let form = try MultipartForm(body: body, contentType: "multipart/form-data; boundary=\"\(boundary)\"")
        XCTAssertEqual(form.file, file)
        XCTAssertEqual(MultipartForm.value(of: "prompt", text: form.fields["prompt"]!), .string("42"))
        XCTAssertEqual(MultipartForm.value(of: "width", text: form.fields["width"]!), .integer(128))
        XCTAssertEqual(MultipartForm.value(of: "guidance", text: form.fields["guidance"]!), .number(7.5))
        XCTAssertEqual(MultipartForm.value(of: "allow_degrade", text: form.fields["allow_degrade"]!), .bool(true))
        XCTAssertThrowsError(try MultipartForm(body: body, contentType: "multipart/form-data"))
    }

    func testMalformedMultipartBodiesAreRefusedNeverACrash() {
        let type = "multipart/form-data; boundary=X"
        for bad in ["", "--X\r\n\u{86}--X--\r\n", "--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end", "--Xjunk", "hello"] {
            XCTAssertThrowsError(try MultipartForm(body: Data(bad.utf8), contentType: type), bad)
        }
        XCTAssertThrowsError(try MultipartForm(body: Data([0x2D, 0x2D, 0x58, 0x0D, 0x0A, 0xC2, 0x86, 0x0D, 0x0A, 0x0D, 0x0A, 0x2D, 0x2D, 0x58, 0x2D, 0x2D])
                                               + Data(), contentType: type))
        // Random bodies around a valid skeleton: refused or parsed, never a trap.
        for _ in 0..<500 {
            var bytes = [UInt8]("--X\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc\r\n--X--\r\n".utf8)
            for _ in 0..<Int.random(in: 1...4) { bytes[Int.random(in: 0..<bytes.count)] = UInt8.random(in: 0...255) }
            if Bool.random() { bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count))) }
            _ = try? MultipartForm(body: Data(bytes), contentType: type)
        }
    }

    func testParameterRangesKeepToTheirGrid() {
        let range = ParameterRanges(model: .init(ranges: ["width": .init(min: 32, max: 256, step: 8)]))
        XCTAssertNoThrow(try range.check("width", 32 + 8 * Double(Int.random(in: 0...28))))
        XCTAssertThrowsError(try range.check("width", 36))
        XCTAssertThrowsError(try range.check("width", 264))
        XCTAssertNoThrow(try range.check("height", 1280))  // the default range where the model gives none
        XCTAssertThrowsError(try range.check("height", 1288))
        XCTAssertNoThrow(try range.check("guidance", 7.3))
        XCTAssertThrowsError(try range.check("guidance", 0.5))
        XCTAssertThrowsError(try range.check("guidance", 1e19))
        XCTAssertThrowsError(try range.check("width", -3.17e307))
    }

    func testServerRefusesToExposeTheAPIWithoutAToken() {
        var configuration = ServerConfiguration(models: [ServedModel(folder: "/tmp/model")], dataDirectory: "/tmp/data")
        XCTAssertNoThrow(try configuration.validate())
        configuration.host = "0.0.0.0"
        XCTAssertThrowsError(try configuration.validate())
        configuration.apiToken = "short"
        XCTAssertThrowsError(try configuration.validate())
        configuration.apiToken = UUID().uuidString
        XCTAssertNoThrow(try configuration.validate())
        configuration.apiToken = nil
        configuration.insecure = true
        XCTAssertNoThrow(try configuration.validate())
    }
}
