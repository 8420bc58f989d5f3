import Foundation
import XCTest

/// Issue 8's multi-node tests: API nodes and workers as real processes on one real PostgreSQL server, each
/// node with a data folder of its own (no shared file system), and faults injected with kill -9 and a
/// PostgreSQL crash. Every wait is bounded. Lines starting `FIGURE` are the figures in docs/reliability.md.
final class ClusterTests: ClusterTestCase {
    func job(_ image: String, steps: Int, size: Int = 64, frames: Int = 4, seed: Int = Int.random(in: 0...1_000_000)) -> [String: Any] {
        ["image_id": image, "prompt": "the camera pans left", "width": size, "height": size, "frames": frames, "steps": steps, "seed": seed]
    }

    func submit(_ body: [String: Any], to node: ServerProcess, key: String? = nil) throws -> String {
        let reply = try node.request("POST", "/api/v1/jobs", json: body, headers: key.map { ["Idempotency-Key": $0] } ?? [:])
        guard reply.status == 202, let id = reply.json["id"] as? String else { throw ServerTestError("submission failed: \(reply.status) \(reply.text)") }
        return id
    }

    func testAnImageUploadedThroughOneAPINodeRunsOnAWorkerAndItsVideoIsServedByTheOtherWithRanges() throws {
        let cluster = try startCluster(apiNodes: 2, workers: 1, lease: 10)
        let (first, second) = (cluster.apis[0], cluster.apis[1])
        let image = try first.uploadRandomImage()
        let id = try submit(job(image, steps: 4), to: second)
        let finished = try first.waitForJob(id, timeout: 180, "success") { ($0["status"] as? String) == "succeeded" }
        XCTAssertEqual(Set((finished["outputs"] as? [String: String] ?? [:]).keys), ["video.mp4", "preview.gif", "preview.webp", "poster.png", "params.json"])

        let video = try second.request("GET", "/api/v1/jobs/\(id)/video.mp4")
        XCTAssertEqual(video.status, 200)
        XCTAssertEqual(video.headers["content-type"], "video/mp4")
        XCTAssertGreaterThan(video.body.count, 1000)
        let range = try first.request("GET", "/api/v1/jobs/\(id)/video.mp4", headers: ["Range": "bytes=100-199"])
        XCTAssertEqual(range.status, 206)
        XCTAssertEqual(range.headers["content-range"], "bytes 100-199/\(video.body.count)")
        XCTAssertEqual(range.body, video.body.subdata(in: 100..<200), "both API nodes serve the worker's video")
        XCTAssertEqual(try first.request("GET", "/api/v1/uploads/\(image)").status, 200)
        XCTAssertEqual(try second.request("GET", "/api/v1/uploads/\(image)").status, 200, "an upload is visible on every API node")
        for node in cluster.apis + cluster.workers {
            XCTAssertFalse(FileManager.default.fileExists(atPath: node.dataDirectory.appendingPathComponent("jobs.sqlite3").path),
                           "no node keeps jobs of its own")
        }

        XCTAssertEqual(try second.request("DELETE", "/api/v1/jobs/\(id)").status, 204)
        XCTAssertEqual(try first.request("GET", "/api/v1/jobs/\(id)/video.mp4").status, 404)
        XCTAssertEqual(try TestPostgres.psql(cluster.store, "SELECT count(*) FROM kinema_blobs WHERE key LIKE 'outputs/%'"), "0",
                       "deleting a job removes its outputs from the shared store")
    }

    func testKillDashNineOfAWorkerMidJobHandsTheJobToAnotherWithinTheLeasePlusFiveSeconds() throws {
        let lease = 4.0
        let cluster = try startCluster(apiNodes: 2, workers: 3, lease: lease)
        let image = try cluster.apis[0].uploadRandomImage()
        let id = try submit(job(image, steps: 20), to: cluster.apis[1])
        try cluster.apis[0].waitForJob(id, timeout: 120, "mid-denoise") { ($0["phase"] as? String) == "denoise" && ($0["step"] as? Int ?? 0) >= 2 }
        let victim = try XCTUnwrap(cluster.worker(running: id, attempt: 1), "no worker logged the job")

        cluster.workers[victim].kill(SIGKILL)
        let killed = Date()
        let rescued = try cluster.apis[1].waitForJob(id, timeout: lease + 30, "a second attempt") { ($0["attempt"] as? Int ?? 0) >= 2 }
        let reclaimSeconds = Date().timeIntervalSince(killed)
        XCTAssertEqual(rescued["attempt"] as? Int, 2)
        XCTAssertLessThanOrEqual(reclaimSeconds, lease + 5, "the job was taken up \(reclaimSeconds) s after the kill")
        try cluster.apis[0].waitForJob(id, timeout: 180, "success") { ($0["status"] as? String) == "succeeded" }
        let finishSeconds = Date().timeIntervalSince(killed)
        let rescuer = try XCTUnwrap(cluster.worker(running: id, attempt: 2))
        XCTAssertNotEqual(rescuer, victim)
        XCTAssertEqual(cluster.successes(of: id), 1)
        XCTAssertEqual(try cluster.apis[0].request("GET", "/api/v1/jobs/\(id)/poster.png").status, 200)
        print(String(format: "FIGURE worker kill -9 (lease %.0f s): taken up by another worker after %.1f s, finished %.1f s after the kill; jobs lost 0, completed twice 0",
                     lease, reclaimSeconds, finishSeconds))
    }

    func testKillDashNineOfAnAPINodeTheEventStreamResumesOnTheOtherWithLastEventID() throws {
        let cluster = try startCluster(apiNodes: 2, workers: 1, lease: 10)
        let (doomed, survivor) = (cluster.apis[0], cluster.apis[1])
        let image = try survivor.uploadRandomImage()
        let id = try submit(job(image, steps: 20), to: doomed)
        let before = try EventStreamReader(port: doomed.port, path: "/api/v1/jobs/\(id)/events")
        let progress = try XCTUnwrap(before.wait(timeout: 120) { $0.name == "progress" }, "no progress event before the kill; received: \(before.received.prefix(1500).debugDescription)")

        doomed.kill(SIGKILL)
        let killed = Date()
        let lastSeen = before.events.last!.id
        let after = try EventStreamReader(port: survivor.port, path: "/api/v1/jobs/\(id)/events", lastEventID: lastSeen)
        let resumed = try XCTUnwrap(after.wait(timeout: 30) { _ in true }, "the other API node sent nothing")
        let resumeSeconds = Date().timeIntervalSince(killed)
        let done = try XCTUnwrap(after.wait(timeout: 180) { $0.name == "done" }, "no done event on the other API node")
        XCTAssertTrue(done.data.contains("\"succeeded\""), done.data)
        let ids = after.events.map(\.id)
        XCTAssertTrue(ids.allSatisfy { $0 > lastSeen }, "the resumed stream repeated events up to Last-Event-ID \(lastSeen): \(ids)")
        XCTAssertEqual(ids, ids.sorted(), "event ids only grow")
        XCTAssertGreaterThan(resumed.id, progress.id)
        let status = try survivor.request("GET", "/api/v1/jobs/\(id)")
        XCTAssertEqual(status.json["status"] as? String, "succeeded")
        XCTAssertEqual(status.json["attempt"] as? Int, 1, "losing an API node does not disturb the worker")
        print(String(format: "FIGURE API node kill -9: the event stream resumed on the other API node %.2f s after the kill (Last-Event-ID %lld, no event repeated), job finished on attempt 1",
                     resumeSeconds, lastSeen))
    }

    func testPostgresCrashMidRunLosesNothingAndCompletesNothingTwice() throws {
        let cluster = try startCluster(apiNodes: 2, workers: 3, lease: 5)
        let image = try cluster.apis[0].uploadRandomImage()
        var ids: [String] = []
        for index in 0..<6 { ids.append(try submit(job(image, steps: 10), to: cluster.apis[index % 2])) }
        try cluster.apis[0].waitForJob(ids[0], timeout: 120, "mid-denoise") { ($0["phase"] as? String) == "denoise" }

        try TestPostgres.crash()
        let crashed = Date()
        Thread.sleep(forTimeInterval: 3)
        try TestPostgres.start()
        let restarted = Date()
        var answered: Date?
        while answered == nil && Date().timeIntervalSince(restarted) < 60 {
            if (try? cluster.apis[1].request("GET", "/api/v1/jobs/\(ids[0])", timeout: 5))?.status == 200 { answered = Date() } else { Thread.sleep(forTimeInterval: 0.1) }
        }
        let apiSeconds = try XCTUnwrap(answered, "the API node did not answer within 60 s of the restart").timeIntervalSince(restarted)

        for id in ids {
            try cluster.apis[0].waitForJob(id, timeout: 300, "success after the restart") { ($0["status"] as? String) == "succeeded" }
        }
        let finished = Date()
        let attempts = try ids.map { try cluster.apis[1].request("GET", "/api/v1/jobs/\($0)").json["attempt"] as? Int ?? 0 }
        XCTAssertEqual(ids.map { cluster.successes(of: $0) }, Array(repeating: 1, count: ids.count), "each job completed exactly once")
        let listed = try cluster.apis[1].request("GET", "/api/v1/jobs?limit=100").json["jobs"] as? [[String: Any]] ?? []
        XCTAssertEqual(Set(listed.compactMap { $0["id"] as? String }), Set(ids), "no job lost, none added")
        print(String(format: "FIGURE PostgreSQL crash (immediate stop, 3 s down): API answering %.2f s after the restart, all %d jobs succeeded %.1f s after the crash, attempts %@; jobs lost 0, completed twice 0",
                     apiSeconds, ids.count, finished.timeIntervalSince(crashed), attempts.map(String.init).joined(separator: ",")))
    }

    func testHundredJobsSubmittedAcrossBothAPINodesWithClientRetriesCompleteExactlyOnce() throws {
        let cluster = try startCluster(apiNodes: 2, workers: 3, lease: 10, apiArguments: ["--queue-limit", "200"])
        let image = try cluster.apis[0].uploadRandomImage(width: 32, height: 32)
        let started = Date()
        let lock = NSLock()
        nonisolated(unsafe) var accepted: [Int: String] = [:]
        nonisolated(unsafe) var retries = 0
        nonisolated(unsafe) var submitted = 0
        let apis = cluster.apis
        // Four clients, 25 jobs each, alternating API nodes; each job has its own Idempotency-Key, every
        // fifth is sent a second time to the other node (a reply lost on the way back), and an API node is
        // killed after 40 submissions: clients whose request fails send it to the other node.
        DispatchQueue.concurrentPerform(iterations: 4) { client in
            for index in stride(from: client, to: 100, by: 4) {
                let body = job(image, steps: 2, size: 32, frames: 2, seed: index)
                let key = "job-\(index)"
                var id: String?
                for attempt in 0..<8 where id == nil {
                    let node = apis[(index + attempt) % 2]
                    if let reply = try? node.request("POST", "/api/v1/jobs", json: body, headers: ["Idempotency-Key": key], timeout: 10),
                       reply.status == 202, let answer = reply.json["id"] as? String {
                        id = answer
                    } else {
                        lock.withLock { retries += 1 }
                        Thread.sleep(forTimeInterval: 0.2)
                    }
                }
                if index % 5 == 0, let first = id {
                    let again = try? apis[(index + 1) % 2].request("POST", "/api/v1/jobs", json: body, headers: ["Idempotency-Key": key], timeout: 10)
                    if let again, again.status == 202 { XCTAssertEqual(again.json["id"] as? String, first, "a resent request made a new job") }
                }
                lock.withLock {
                    accepted[index] = id
                    submitted += 1
                    if submitted == 40 { apis[0].kill(SIGKILL) }
                }
            }
        }
        XCTAssertEqual(accepted.count, 100)
        XCTAssertEqual(Set(accepted.values).count, 100, "one job per key")
        let survivor = cluster.apis[1]
        var succeeded: Set<String> = []
        let deadline = Date().addingTimeInterval(600)
        while succeeded.count < 100 && Date() < deadline {
            Thread.sleep(forTimeInterval: 1)
            succeeded = []
            var cursor: String?
            repeat {
                let page = try survivor.request("GET", "/api/v1/jobs?status=succeeded&limit=100" + (cursor.map { "&cursor=\($0)" } ?? "")).json
                succeeded.formUnion((page["jobs"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String })
                cursor = page["next_cursor"] as? String
            } while cursor != nil
        }
        let seconds = Date().timeIntervalSince(started)
        XCTAssertEqual(succeeded, Set(accepted.values), "exactly the 100 accepted jobs succeeded")
        let total = try TestPostgres.psql(cluster.store, "SELECT count(*) FROM kinema_jobs")
        XCTAssertEqual(total, "100", "no job was made twice")
        let completions = accepted.values.map { cluster.successes(of: $0) }
        XCTAssertEqual(completions.filter { $0 != 1 }.count, 0, "each job completed exactly once")
        print(String(format: "FIGURE 100 jobs through 2 API nodes (one killed after 40 submissions) with client retries: %d accepted, %d succeeded, %d completed twice, %d client retries, %.0f s in all with 3 CPU workers",
                     Set(accepted.values).count, succeeded.count, completions.filter { $0 > 1 }.count, retries, seconds))
    }
}
