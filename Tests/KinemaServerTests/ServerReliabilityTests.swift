import Foundation
import XCTest

/// Issue 5's reliability tests, with real processes: kill -9 mid-denoise, concurrent idempotent
/// submissions, and a worker frozen past its lease.
final class ServerReliabilityTests: ServerTestCase {
    /// A job long enough to be caught mid-denoise (the tiny test model at 64x64, 4 frames, 30 steps: about 15 s).
    func longJob(_ image: String, seed: Int = Int.random(in: 0...1_000_000)) -> [String: Any] {
        ["image_id": image, "prompt": "the camera slowly zooms in", "width": 64, "height": 64, "frames": 4, "steps": 30, "seed": seed]
    }

    func partialFolders(_ server: ServerProcess) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: server.dataDirectory.appendingPathComponent("outputs/.partial").path)) ?? []
    }

    func testKillDashNineMidDenoiseThenRestartRunsTheJobAgainAndDropsItsPartialFiles() throws {
        var server = try startServer(["--lease-seconds", "3"])
        let image = try server.uploadRandomImage()
        let job = longJob(image)
        let submitted = try server.request("POST", "/api/v1/jobs", json: job)
        XCTAssertEqual(submitted.status, 202, submitted.text)
        let id = try XCTUnwrap(submitted.json["id"] as? String)
        try server.waitForJob(id, timeout: 120, "mid-denoise") { ($0["phase"] as? String) == "denoise" && ($0["step"] as? Int ?? 0) >= 2 }
        XCTAssertEqual(partialFolders(server), ["\(id)-1"], "the first attempt writes into its own partial folder")

        server.kill(SIGKILL)
        server.process.waitUntilExit()
        server = try startServer(["--lease-seconds", "3"], name: "restarted")
        let finished = try server.waitForJob(id, timeout: 300, "success after the restart") { ($0["status"] as? String) == "succeeded" }
        XCTAssertEqual(finished["attempt"] as? Int, 2, "the restarted server ran the job again")
        XCTAssertEqual(partialFolders(server), [], "no partial files are left")
        let outputs = try XCTUnwrap(finished["outputs"] as? [String: String])
        XCTAssertEqual(Set(outputs.keys), ["video.mp4", "preview.gif", "preview.webp", "poster.png", "params.json"])
        let video = try server.request("GET", outputs["video.mp4"]!)
        XCTAssertEqual(video.status, 200)
        XCTAssertEqual(video.headers["content-type"], "video/mp4")
        XCTAssertGreaterThan(video.body.count, 1000)
        let params = try server.request("GET", outputs["params.json"]!).json
        XCTAssertEqual(params["seed"] as? Int, job["seed"] as? Int)
        XCTAssertEqual(params["steps"] as? Int, 30)
    }

    func testTwentyConcurrentSubmissionsWithRepeatedKeysMakeExactlyOneJobPerKey() throws {
        let server = try startServer(["--no-worker"])
        let image = try server.uploadRandomImage()
        let keys = (0..<5).map { _ in UUID().uuidString }
        // 20 requests: each of 5 keys 4 times with one body per key.
        let requests = (0..<20).map { index -> (key: String, body: [String: Any]) in
            let key = keys[index % 5]
            return (key, ["image_id": image, "prompt": "pan left \(key)", "seed": index % 5])
        }.shuffled()
        nonisolated(unsafe) var replies = [ServerProcess.Reply?](repeating: nil, count: requests.count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: requests.count) { index in
            let reply = try? server.request("POST", "/api/v1/jobs", json: requests[index].body, headers: ["Idempotency-Key": requests[index].key])
            lock.withLock { replies[index] = reply }
        }
        var idsByKey: [String: Set<String>] = [:]
        for (index, reply) in replies.enumerated() {
            let reply = try XCTUnwrap(reply, "request \(index) got no answer")
            XCTAssertEqual(reply.status, 202, reply.text)
            idsByKey[requests[index].key, default: []].insert(reply.json["id"] as? String ?? "")
        }
        XCTAssertEqual(idsByKey.count, 5)
        XCTAssertTrue(idsByKey.values.allSatisfy { $0.count == 1 }, "one job per key: \(idsByKey)")
        let listed = try server.request("GET", "/api/v1/jobs?limit=100").json["jobs"] as? [[String: Any]] ?? []
        XCTAssertEqual(Set(listed.compactMap { $0["id"] as? String }), Set(idsByKey.values.flatMap { $0 }), "none lost, none doubled")
        // The same key with another body is refused and makes no job.
        let conflict = try server.request("POST", "/api/v1/jobs", json: ["image_id": image, "prompt": "zoom out"], headers: ["Idempotency-Key": keys[0]])
        XCTAssertEqual(conflict.status, 422)
        XCTAssertEqual((conflict.json["error"] as? [String: Any])?["code"] as? String, "idempotency_conflict")
        XCTAssertEqual((try server.request("GET", "/api/v1/jobs?limit=100").json["jobs"] as? [Any])?.count, 5)
    }

    func testWorkerFrozenPastItsLeaseCannotCompleteItsJob() throws {
        let frozen = try startServer(["--lease-seconds", "2", "--worker-id", "frozen"], name: "frozen")
        let image = try frozen.uploadRandomImage()
        let id = try XCTUnwrap(try frozen.request("POST", "/api/v1/jobs", json: longJob(image)).json["id"] as? String)
        try frozen.waitForJob(id, timeout: 120, "mid-denoise") { ($0["phase"] as? String) == "denoise" && ($0["step"] as? Int ?? 0) >= 1 }
        frozen.kill(SIGSTOP)

        // A second server on the same data directory takes the job over once the lease lapses.
        let other = try startServer(["--lease-seconds", "2", "--worker-id", "other"], name: "other")
        let finished = try other.waitForJob(id, timeout: 300, "success on the other worker") { ($0["status"] as? String) == "succeeded" }
        XCTAssertEqual(finished["attempt"] as? Int, 2)
        let video = try other.request("GET", "/api/v1/jobs/\(id)/video.mp4")
        XCTAssertEqual(video.status, 200)

        // The frozen worker wakes up, finds itself fenced out and stops without touching the job or its files.
        frozen.kill(SIGCONT)
        let deadline = Date().addingTimeInterval(60)
        while !frozen.logText.contains("another worker holds the job") && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        XCTAssertTrue(frozen.logText.contains("another worker holds the job"), frozen.logText)
        let after = try other.request("GET", "/api/v1/jobs/\(id)").json
        XCTAssertEqual(after["status"] as? String, "succeeded")
        XCTAssertEqual(after["attempt"] as? Int, 2)
        let again = try other.request("GET", "/api/v1/jobs/\(id)/video.mp4")
        XCTAssertEqual(again.body, video.body, "the published video is the other worker's")
        XCTAssertEqual(partialFolders(other), [])
    }

    func testSigtermRequeuesTheRunningJobAndTheNextServerFinishesIt() throws {
        var server = try startServer(["--lease-seconds", "30"])
        let image = try server.uploadRandomImage()
        let id = try XCTUnwrap(try server.request("POST", "/api/v1/jobs", json: longJob(image)).json["id"] as? String)
        try server.waitForJob(id, timeout: 120, "mid-denoise") { ($0["phase"] as? String) == "denoise" && ($0["step"] as? Int ?? 0) >= 1 }
        // An open event stream does not hold the shutdown up.
        let streaming = server
        let streamEnded = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = try? streaming.request("GET", "/api/v1/jobs/\(id)/events", timeout: 120)
            streamEnded.signal()
        }
        Thread.sleep(forTimeInterval: 0.5)
        let stopping = Date()
        server.kill(SIGTERM)
        server.process.waitUntilExit()
        XCTAssertLessThan(Date().timeIntervalSince(stopping), 20, "graceful shutdown took too long")
        XCTAssertEqual(streamEnded.wait(timeout: .now() + 10), .success, "the event stream ended with the server")
        XCTAssertTrue(server.logText.contains("went back to the queue"), server.logText)
        // Queued again at once (no waiting for the 30 s lease to lapse).
        let reader = try startServer(["--no-worker"], name: "reader")
        let queued = try reader.request("GET", "/api/v1/jobs/\(id)").json
        XCTAssertEqual(queued["status"] as? String, "queued")
        XCTAssertEqual(queued["queue_position"] as? Int, 1)
        reader.stop()
        server = try startServer(["--lease-seconds", "30"], name: "next")
        let finished = try server.waitForJob(id, timeout: 300, "success") { ($0["status"] as? String) == "succeeded" }
        XCTAssertEqual(finished["attempt"] as? Int, 2)
    }
}
