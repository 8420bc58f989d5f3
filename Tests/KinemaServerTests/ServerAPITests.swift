import Foundation
import XCTest

/// The API's answers to good and bad requests, against a real server process.
final class ServerAPITests: ServerTestCase {
    func errorCode(_ reply: ServerProcess.Reply) -> String? { (reply.json["error"] as? [String: Any])?["code"] as? String }
    func errorField(_ reply: ServerProcess.Reply) -> String? { (reply.json["error"] as? [String: Any])?["field"] as? String }

    func testUploadsAreContentAddressedAndChecked() throws {
        let server = try startServer(["--no-worker", "--upload-limit", "64KiB"])
        let width = Int.random(in: 20...60), height = Int.random(in: 20...60)
        let png = PNG.random(width: width, height: height)
        let first = try server.request("POST", "/api/v1/uploads", body: png, headers: ["Content-Type": "image/png"])
        XCTAssertEqual(first.status, 201, first.text)
        XCTAssertEqual(first.json["width"] as? Int, width)
        XCTAssertEqual(first.json["height"] as? Int, height)
        let id = try XCTUnwrap(first.json["image_id"] as? String)
        XCTAssertEqual(id.count, 64)
        // Multipart with the same bytes gives the same id.
        let boundary = "kinema\(UUID().uuidString)"
        var form = Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/passwd\"\r\nContent-Type: image/png\r\n\r\n".utf8)
        form.append(png)
        form.append(Data("\r\n--\(boundary)--\r\n".utf8))
        let second = try server.request("POST", "/api/v1/uploads", body: form, headers: ["Content-Type": "multipart/form-data; boundary=\(boundary)"])
        XCTAssertEqual(second.status, 201, second.text)
        XCTAssertEqual(second.json["image_id"] as? String, id)
        let stored = try server.request("GET", "/api/v1/uploads/\(id)")
        XCTAssertEqual(stored.body, png)
        XCTAssertEqual(stored.headers["content-type"], "image/png")

        let text = try server.request("POST", "/api/v1/uploads", body: Data("hello, not an image".utf8), headers: ["Content-Type": "image/png"])
        XCTAssertEqual(text.status, 415)
        XCTAssertEqual(errorCode(text), "not_an_image")
        var broken = png.prefix(40)
        broken.append(Data(repeating: 7, count: 100))
        let truncated = try server.request("POST", "/api/v1/uploads", body: Data(broken), headers: ["Content-Type": "image/png"])
        XCTAssertEqual(truncated.status, 415, truncated.text)
        let big = PNG.random(width: 200, height: 200)  // 120 KB > 64 KiB
        let tooLarge = try server.request("POST", "/api/v1/uploads", body: big, headers: ["Content-Type": "image/png"])
        XCTAssertEqual(tooLarge.status, 413)
        XCTAssertEqual(errorCode(tooLarge), "too_large")
        let listing = (try? FileManager.default.contentsOfDirectory(atPath: server.dataDirectory.appendingPathComponent("uploads").path)) ?? []
        XCTAssertEqual(Set(listing), [id, id + ".json"], "rejected uploads leave nothing behind")
    }

    func testBadJobParametersAreRefusedWithTheirField() throws {
        let server = try startServer(["--no-worker"])
        let image = try server.uploadRandomImage()
        let good: [String: Any] = ["image_id": image, "prompt": "zoom in"]
        let cases: [([String: Any], Int, String, String?)] = [
            (good.merging(["colour": "red"]) { $1 }, 422, "unknown_field", "colour"),
            (good.merging(["width": 1000]) { $1 }, 422, "out_of_range", "width"),
            (good.merging(["width": 100]) { $1 }, 422, "out_of_range", "width"),
            (good.merging(["frames": 0]) { $1 }, 422, "out_of_range", "frames"),
            (good.merging(["steps": "ten"]) { $1 }, 422, "invalid_type", "steps"),
            (good.merging(["guidance": 50.5]) { $1 }, 422, "out_of_range", "guidance"),
            (good.merging(["seed": -1]) { $1 }, 422, "out_of_range", "seed"),
            (good.merging(["prompt": "   "]) { $1 }, 422, "missing_field", "prompt"),
            (good.merging(["prompt": String(repeating: "a", count: 1001)]) { $1 }, 422, "invalid_value", "prompt"),
            (good.merging(["preset": "ultra"]) { $1 }, 422, "unknown_preset", "preset"),
            (good.merging(["model": "../../etc"]) { $1 }, 422, "unknown_model", "model"),
            (good.merging(["image_id": "../../../etc/passwd"]) { $1 }, 422, "invalid_value", "image_id"),
            (good.merging(["image_id": String(repeating: "a", count: 64)]) { $1 }, 404, "unknown_image", "image_id"),
            (good.merging(["memory_budget": "lots"]) { $1 }, 422, "invalid_value", "memory_budget"),
            (good.merging(["memory_budget": "1KiB"]) { $1 }, 422, "does_not_fit", "memory_budget"),
        ]
        for (body, status, code, field) in cases {
            let reply = try server.request("POST", "/api/v1/jobs", json: body)
            XCTAssertEqual(reply.status, status, "\(body): \(reply.text)")
            XCTAssertEqual(errorCode(reply), code, "\(body): \(reply.text)")
            XCTAssertEqual(errorField(reply), field, "\(body): \(reply.text)")
        }
        let notJSON = try server.request("POST", "/api/v1/jobs", body: Data("{\"prompt\":".utf8), headers: ["Content-Type": "application/json"])
        XCTAssertEqual(notJSON.status, 400)
        let list = try server.request("GET", "/api/v1/jobs").json["jobs"] as? [Any]
        XCTAssertEqual(list?.count, 0, "no refused request made a job")
    }

    func testUnknownIdsAndPathTricksAre404AndWrongMethodsAre405() throws {
        let server = try startServer(["--no-worker"])
        for path in ["/api/v1/jobs/\(UUID().uuidString.lowercased())", "/api/v1/jobs/not-a-uuid", "/api/v1/jobs/..%2F..%2Fjobs.sqlite3",
                     "/api/v1/jobs/\(UUID().uuidString.lowercased())/video.mp4", "/api/v1/uploads/\(String(repeating: "0", count: 64))",
                     "/ui/..%2F..%2FPackage.swift", "/ui/.hidden", "/nowhere"] {
            let reply = try server.request("GET", path)
            XCTAssertEqual(reply.status, 404, "\(path): \(reply.text)")
            XCTAssertNotNil(errorCode(reply), path)
        }
        for (method, path) in [("POST", "/api/v1/jobs/\(UUID().uuidString.lowercased())/cancel"), ("POST", "/api/v1/jobs/\(UUID().uuidString.lowercased())/retry"),
                               ("DELETE", "/api/v1/jobs/\(UUID().uuidString.lowercased())")] {
            XCTAssertEqual(try server.request(method, path).status, 404, path)
        }
        // A path that exists under other methods: 405 with Allow, literal segments before parameters.
        let id = UUID().uuidString.lowercased()
        for (method, path, allow) in [("PUT", "/api/v1/jobs/\(id)", "DELETE, GET"), ("GET", "/api/v1/jobs/\(id)/cancel", "POST"),
                                      ("DELETE", "/api/v1/uploads", "POST"), ("PATCH", "/api/v1/jobs", "GET, POST"),
                                      ("POST", "/healthz", "GET"), ("DELETE", "/api/v1/jobs/\(id)/video.mp4", "GET")] {
            let reply = try server.request(method, path)
            XCTAssertEqual(reply.status, 405, "\(method) \(path): \(reply.text)")
            XCTAssertEqual(reply.headers["allow"], allow, "\(method) \(path)")
            XCTAssertEqual(errorCode(reply), "method_not_allowed", "\(method) \(path)")
        }
    }

    func testJobLifecycleOutputsRangeEtagCancelRetryDelete() throws {
        let server = try startServer()
        let image = try server.uploadRandomImage()
        let seed = Int.random(in: 0...1_000_000)
        let reply = try server.request("POST", "/api/v1/jobs", json: ["image_id": image, "prompt": "pan right", "seed": seed, "frames": 2, "steps": 2])
        XCTAssertEqual(reply.status, 202, reply.text)
        let id = try XCTUnwrap(reply.json["id"] as? String)
        XCTAssertEqual(reply.headers["location"], "/api/v1/jobs/\(id)")
        let done = try server.waitForJob(id, timeout: 120, "success") { ($0["status"] as? String) == "succeeded" }
        XCTAssertEqual(done["seed"] as? Int, seed)
        XCTAssertEqual(done["progress"] as? Double, 1)

        let full = try server.request("GET", "/api/v1/jobs/\(id)/preview.gif")
        XCTAssertEqual(full.status, 200)
        XCTAssertEqual(full.headers["content-type"], "image/gif")
        let etag = try XCTUnwrap(full.headers["etag"])
        XCTAssertEqual(try server.request("GET", "/api/v1/jobs/\(id)/preview.gif", headers: ["If-None-Match": etag]).status, 304)
        let part = try server.request("GET", "/api/v1/jobs/\(id)/preview.gif", headers: ["Range": "bytes=5-14"])
        XCTAssertEqual(part.status, 206)
        XCTAssertEqual(part.body, full.body.subdata(in: 5..<15))
        XCTAssertEqual(part.headers["content-range"], "bytes 5-14/\(full.body.count)")
        XCTAssertEqual(try server.request("GET", "/api/v1/jobs/\(id)/preview.gif", headers: ["Range": "bytes=\(full.body.count + 10)-"]).status, 416)
        XCTAssertEqual(try server.request("GET", "/api/v1/jobs/\(id)/secrets.txt").status, 404)

        let cancelled = try server.request("POST", "/api/v1/jobs/\(id)/cancel")
        XCTAssertEqual(cancelled.json["cancelled"] as? String, "already_finished")
        let retried = try server.request("POST", "/api/v1/jobs/\(id)/retry")
        XCTAssertEqual(retried.status, 202)
        let retryID = try XCTUnwrap(retried.json["id"] as? String)
        let second = try server.waitForJob(retryID, timeout: 120, "success") { ($0["status"] as? String) == "succeeded" }
        XCTAssertEqual(second["seed"] as? Int, seed)
        XCTAssertEqual(second["retry_of"] as? String, id)
        let again = try server.request("GET", "/api/v1/jobs/\(retryID)/preview.gif")
        XCTAssertEqual(again.body, full.body, "the same parameters and seed give the same video")

        XCTAssertEqual(try server.request("DELETE", "/api/v1/jobs/\(id)").status, 204)
        XCTAssertEqual(try server.request("GET", "/api/v1/jobs/\(id)").status, 404)
        XCTAssertFalse(FileManager.default.fileExists(atPath: server.dataDirectory.appendingPathComponent("outputs/\(id)").path))
    }

    func testCancelOfAQueuedJobIsImmediateAndOfARunningJobStopsIt() throws {
        let server = try startServer()
        let image = try server.uploadRandomImage()
        let long: [String: Any] = ["image_id": image, "prompt": "rotate", "steps": 100]
        let running = try XCTUnwrap(try server.request("POST", "/api/v1/jobs", json: long).json["id"] as? String)
        let queued = try XCTUnwrap(try server.request("POST", "/api/v1/jobs", json: long).json["id"] as? String)
        try server.waitForJob(running, timeout: 120, "running") { ($0["phase"] as? String) == "denoise" }
        let now = try server.request("POST", "/api/v1/jobs/\(queued)/cancel").json
        XCTAssertEqual(now["cancelled"] as? String, "now")
        XCTAssertEqual(now["status"] as? String, "cancelled")
        let later = try server.request("POST", "/api/v1/jobs/\(running)/cancel").json
        XCTAssertEqual(later["cancelled"] as? String, "at_next_step")
        let stopped = try server.waitForJob(running, timeout: 60, "cancelled") { ($0["status"] as? String) == "cancelled" }
        XCTAssertEqual(stopped["outputs"] as? [String: String], [:])
    }

    func testEventsStreamProgressThenDoneAndResumeAfterLastEventID() throws {
        let server = try startServer()
        let image = try server.uploadRandomImage()
        // A plan asked for first with other settings of the same size must not leak into the job.
        XCTAssertEqual(try server.request("POST", "/api/v1/plan", json: ["prompt": "something else", "steps": 2, "seed": 1]).status, 200)
        let id = try XCTUnwrap(try server.request("POST", "/api/v1/jobs", json: ["image_id": image, "prompt": "tilt up", "steps": 12]).json["id"] as? String)
        let stream = try server.request("GET", "/api/v1/jobs/\(id)/events", timeout: 120)
        XCTAssertEqual(stream.headers["content-type"], "text/event-stream")
        let events = stream.text.components(separatedBy: "\n\n").filter { !$0.isEmpty }.map { block -> (Int64, String) in
            let lines = block.split(separator: "\n")
            let eventID = Int64(lines.first { $0.hasPrefix("id: ") }?.dropFirst(4) ?? "") ?? -1
            return (eventID, String(lines.first { $0.hasPrefix("event: ") }?.dropFirst(7) ?? ""))
        }
        XCTAssertEqual(events.last?.1, "done", stream.text)
        XCTAssertEqual(events.map(\.0), events.map(\.0).sorted(), "ids only grow")
        XCTAssertEqual(Set(events.map(\.0)).count, events.count, "ids are unique")
        let denoising = stream.text.components(separatedBy: "\n\n").filter { $0.contains("event: progress") && $0.contains("\"denoise\"") }
        XCTAssertFalse(denoising.isEmpty, stream.text)
        for block in denoising {
            let data = try XCTUnwrap(block.split(separator: "\n").first { $0.hasPrefix("data: ") }?.dropFirst(6))
            let progress = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any])
            XCTAssertEqual(progress["total_steps"] as? Int, 12, "the job runs its own settings")
        }
        let resumed = try server.request("GET", "/api/v1/jobs/\(id)/events", headers: ["Last-Event-ID": "\(events.last!.0)"])
        XCTAssertEqual(resumed.text, "", "nothing after the last event")
    }

    func testTokenIsRequiredWhenSetAndForBindingBeyondLoopback() throws {
        let token = UUID().uuidString
        let server = try startServer(["--no-worker", "--api-token", token])
        XCTAssertEqual(try server.request("GET", "/api/v1/capabilities").status, 401)
        XCTAssertEqual(try server.request("GET", "/api/v1/capabilities", headers: ["Authorization": "Bearer wrong-token"]).status, 401)
        XCTAssertEqual(try server.request("GET", "/api/v1/capabilities", headers: ["Authorization": "Bearer \(token)"]).status, 200)
        XCTAssertEqual(try server.request("GET", "/healthz").status, 200)

        let exposed = Process()
        exposed.executableURL = try ServerProcess.executable
        exposed.arguments = ["serve", "--model", model.path, "--data-dir", directory.appendingPathComponent("exposed").path, "--host", "0.0.0.0", "--port", "0"]
        let pipe = Pipe()
        exposed.standardError = pipe
        exposed.standardOutput = Pipe()
        try exposed.run()
        let message = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        exposed.waitUntilExit()
        XCTAssertNotEqual(exposed.terminationStatus, 0)
        XCTAssertTrue(message.contains("--api-token"), message)
    }

    func testSystemListsTheBuiltInWorkerAndTheQueueDepth() throws {
        let server = try startServer(["--memory-budget", "3GiB"])
        let deadline = Date().addingTimeInterval(15)
        var system: [String: Any] = [:]
        while Date() < deadline {
            system = try server.request("GET", "/api/v1/system").json
            if !((system["workers"] as? [Any]) ?? []).isEmpty { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        XCTAssertEqual(system["queue_depth"] as? Int, 0)
        let workers = try XCTUnwrap(system["workers"] as? [[String: Any]])
        XCTAssertEqual(workers.count, 1, "the all-in-one server registers its own worker: \(system)")
        XCTAssertEqual(Set(workers.first?.keys.map { $0 } ?? []), ["id", "host", "device", "free_memory_bytes", "last_heartbeat", "current_job"])
        XCTAssertEqual(workers.first?["device"] as? String, "cpu")
        XCTAssertEqual(workers.first?["free_memory_bytes"] as? Int, 3 << 30)
        let metrics = try server.request("GET", "/metrics").text
        XCTAssertTrue(metrics.contains("kinema_workers_alive 1\n"), metrics)
        XCTAssertTrue(metrics.contains("kinema_worker_free_memory_bytes{worker=\""), metrics)
    }

    func testCapabilitiesPlanHealthReadinessMetricsAndTheWebUI() throws {
        let server = try startServer(["--no-worker", "--memory-budget", "2GiB"])
        let capabilities = try server.request("GET", "/api/v1/capabilities").json
        XCTAssertEqual(capabilities["default_model"] as? String, "model")
        let presets = try XCTUnwrap(capabilities["presets"] as? [[String: Any]])
        XCTAssertEqual(presets.last?["name"] as? String, "recommended")
        XCTAssertEqual(presets.last?["width"] as? Int, 64)
        let plan = try server.request("POST", "/api/v1/plan", json: ["prompt": "zoom out", "width": 96, "height": 64])
        XCTAssertEqual(plan.status, 200, plan.text)
        XCTAssertEqual(plan.json["fits"] as? Bool, true)
        XCTAssertGreaterThan(plan.json["predicted_peak_bytes"] as? Int ?? 0, 0)
        XCTAssertEqual(plan.json["memory_budget_bytes"] as? Int, 2 << 30)
        let tight = try server.request("POST", "/api/v1/plan", json: ["prompt": "zoom out", "memory_budget": "1MiB"]).json
        XCTAssertEqual(tight["fits"] as? Bool, false)
        XCTAssertNotNil(tight["reason"] as? String)
        XCTAssertEqual(try server.request("GET", "/readyz").json["status"] as? String, "ready")
        let metrics = try server.request("GET", "/metrics")
        XCTAssertTrue(metrics.text.contains("kinema_queue_depth"), metrics.text)
        let page = try server.request("GET", "/")
        XCTAssertEqual(page.status, 200)
        XCTAssertTrue(page.headers["content-type"]?.hasPrefix("text/html") ?? false)
        XCTAssertEqual(try server.request("GET", "/openapi.yaml").status, 200)
    }
}
