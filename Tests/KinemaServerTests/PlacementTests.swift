import Foundation
import XCTest

/// Issue 8's placement by memory and its operations view, with real API and worker processes on a real
/// PostgreSQL server: workers advertise their memory, a job waits for a worker it fits, a job no registered
/// worker can hold is refused at submission, and `/api/v1/system` and `/metrics` show the workers alive now.
final class PlacementTests: ClusterTestCase {
    func workers(_ node: ServerProcess) throws -> [[String: Any]] {
        try XCTUnwrap(try node.request("GET", "/api/v1/system").json["workers"] as? [[String: Any]])
    }

    /// Polls `/api/v1/system` until the listed worker ids are `ids`, or fails after `timeout`.
    @discardableResult
    func waitForWorkers(_ ids: Set<String>, on node: ServerProcess, timeout: TimeInterval) throws -> [[String: Any]] {
        let deadline = Date().addingTimeInterval(timeout)
        var listed: [[String: Any]] = []
        while Date() < deadline {
            listed = try workers(node)
            if Set(listed.compactMap { $0["id"] as? String }) == ids { return listed }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw ServerTestError("workers \(ids.sorted()) were not listed within \(timeout) s; listed: \(listed)")
    }

    func testAJobWaitsForAWorkerWithTheMemoryItNeedsAndOneNoWorkerCanHoldIsRefused() throws {
        let cluster = try startCluster(apiNodes: 1, workers: 0, lease: 30)
        let api = cluster.apis[0]
        let image = try api.uploadRandomImage()
        let body: [String: Any] = ["image_id": image, "prompt": "the camera pans left", "width": 64, "height": 64, "frames": 4, "steps": 3, "seed": 7]

        // No worker registered yet: the job is queued.
        XCTAssertTrue(try workers(api).isEmpty)
        let plan = try api.request("POST", "/api/v1/plan", json: body)
        let required = try XCTUnwrap(plan.json["required_memory_bytes"] as? Int, plan.text)
        let accepted = try api.request("POST", "/api/v1/jobs", json: body)
        XCTAssertEqual(accepted.status, 202, accepted.text)
        let id = try XCTUnwrap(accepted.json["id"] as? String)
        XCTAssertEqual(try api.request("GET", "/api/v1/system").json["queue_depth"] as? Int, 1)

        // A worker one byte short registers: it is listed, leaves the job queued, and a job that no registered
        // worker can hold is refused with the budget it needs.
        let small = try cluster.addWorker("small", arguments: ["--memory-budget", "\(required - 1)"])
        let listed = try waitForWorkers(["small"], on: api, timeout: 10)
        XCTAssertEqual(listed[0]["device"] as? String, "cpu")
        XCTAssertEqual(listed[0]["free_memory_bytes"] as? Int, required - 1)
        XCTAssertFalse((listed[0]["host"] as? String ?? "").isEmpty)
        let iso = ISO8601DateFormatter()
        iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        XCTAssertNotNil(iso.date(from: listed[0]["last_heartbeat"] as? String ?? ""), "\(listed[0])")
        XCTAssertTrue(listed[0]["current_job"] is NSNull)
        let refused = try api.request("POST", "/api/v1/jobs", json: body.merging(["seed": 8]) { $1 })
        XCTAssertEqual(refused.status, 422, refused.text)
        let error = try XCTUnwrap(refused.json["error"] as? [String: Any])
        XCTAssertEqual(error["code"] as? String, "does_not_fit")
        XCTAssertTrue((error["message"] as? String ?? "").contains("\(required) bytes"), "\(error)")
        // Allowed to degrade, the same job is planned again for the largest worker and runs there, lossy.
        let degradable = try api.request("POST", "/api/v1/jobs", json: body.merging(["seed": 9, "allow_degrade": true]) { $1 })
        XCTAssertEqual(degradable.status, 202, degradable.text)
        let degraded = try api.waitForJob(try XCTUnwrap(degradable.json["id"] as? String), timeout: 120, "success") {
            ($0["status"] as? String) == "succeeded"
        }
        XCTAssertEqual((degraded["plan"] as? [String: Any])?["lossy"] as? Bool, true, "\(degraded)")
        XCTAssertEqual(try api.request("GET", "/api/v1/jobs/\(id)").json["status"] as? String, "queued")
        XCTAssertFalse(small.logText.contains("running job \(id)"))

        let metrics = try api.request("GET", "/metrics").text
        XCTAssertTrue(metrics.contains("kinema_workers_alive 1\n"), metrics)
        XCTAssertTrue(metrics.contains("kinema_worker_free_memory_bytes{worker=\"small\","), metrics)
        XCTAssertTrue(metrics.contains("kinema_worker_busy{worker=\"small\","), metrics)

        // A worker with exactly the memory needed takes the job.
        let large = try cluster.addWorker("large", arguments: ["--memory-budget", "\(required)"])
        try api.waitForJob(id, timeout: 120, "success") { ($0["status"] as? String) == "succeeded" }
        XCTAssertTrue(large.logText.contains("running job \(id)"))
        XCTAssertFalse(small.logText.contains("running job \(id)"))

        // A worker stopped with SIGTERM leaves the list at once, long before its 30 s lease would lapse.
        let stoppedAt = Date()
        small.kill(SIGTERM)
        try waitForWorkers(["large"], on: api, timeout: 10)
        print("FIGURE placement: a stopped worker left /api/v1/system after \(String(format: "%.2f", Date().timeIntervalSince(stoppedAt))) s")
    }
}
