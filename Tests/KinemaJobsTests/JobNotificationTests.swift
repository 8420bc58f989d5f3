import Foundation
import XCTest
@testable import KinemaJobs

/// PostgreSQL announces changes with NOTIFY, so a node waiting on the queue or on one job hears of another
/// node's write at once instead of at its next poll. (SQLite has no notifications: waiting is sleeping.)
final class JobNotificationTests: JobStoreTestCase {
    func testAnIdleWorkerIsWokenBySubmissionThroughAnotherNode() async throws {
        try await onEachBackend {
            guard backend == .postgres else { return }
            let worker = try await openStore(), api = try await openStore()
            let started = Date()
            async let woken: Void = worker.waitForWork(timeout: 20)
            try await Task.sleep(nanoseconds: 300_000_000)
            _ = try await submitJob(api)
            await woken
            let waited = Date().timeIntervalSince(started)
            XCTAssertLessThan(waited, 5, "the worker slept through the submission")
            let claimed = try await worker.claim(workerID: "gpu0", leaseSeconds: 30)
            XCTAssertNotNil(claimed)
        }
    }

    func testAnEventStreamOnAnotherNodeIsWokenByItsJobsProgress() async throws {
        try await onEachBackend {
            guard backend == .postgres else { return }
            let workerNode = try await openStore(), apiNode = try await openStore()
            _ = try await submitJob(apiNode)
            let job = try await claimJob(workerNode, workerID: "gpu0")
            let other = try await submitJob(apiNode)
            let started = Date()
            async let woken: Bool = apiNode.waitForChange(of: job.id, timeout: 20)
            try await Task.sleep(nanoseconds: 300_000_000)
            _ = try await workerNode.heartbeat(id: other.id, attempt: 0, workerID: "gpu0", leaseSeconds: 30, progress: nil)  // another job: no wake-up
            let progress = JobProgress(phase: .denoise, step: 3, totalSteps: 10, progress: 0.3, etaSeconds: 7)
            _ = try await workerNode.heartbeat(id: job.id, attempt: job.attempt, workerID: "gpu0", leaseSeconds: 30, progress: progress)
            let notified = await woken
            XCTAssertTrue(notified)
            XCTAssertLessThan(Date().timeIntervalSince(started), 5, "the stream slept through the progress")
            let seen = try await apiNode.get(id: job.id)
            XCTAssertEqual(seen?.progress, progress)
        }
    }

    func testWaitingEndsAtTheTimeoutWhenNothingHappens() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let started = Date()
            await store.waitForWork(timeout: 0.3)
            let waited = Date().timeIntervalSince(started)
            XCTAssertGreaterThanOrEqual(waited, 0.25)
            XCTAssertLessThan(waited, 3)
        }
    }
}
