import Foundation
import XCTest
@testable import KinemaJobs

final class JobCancelRetryDeleteTests: JobStoreTestCase {
    func testCancelOfAQueuedJobIsImmediate() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let job = try await submitJob(store)
            let outcome = try await store.cancel(id: job.id)
            guard case .cancelledAtOnce(let cancelled) = outcome else { return XCTFail("got \(outcome)") }
            XCTAssertEqual(cancelled.status, .cancelled)
            XCTAssertEqual(cancelled.finishedAt, clock.now)
            let claimed = try await store.claim(workerID: "gpu0", leaseSeconds: 30)
            XCTAssertNil(claimed)
        }
    }

    func testCancelOfARunningJobAsksItsWorkerToStopAtTheNextStep() async throws {
        try await onEachBackend {
            let store = try await openStore()
            _ = try await submitJob(store)
            let job = try await claimJob(store, workerID: "gpu0")
            let before = try await store.isCancelRequested(id: job.id)
            XCTAssertFalse(before)

            let outcome = try await store.cancel(id: job.id)
            guard case .willStopAtNextStep(let flagged) = outcome else { return XCTFail("got \(outcome)") }
            XCTAssertEqual(flagged.status, .running)
            XCTAssertTrue(flagged.cancelRequested)
            let seen = try await store.isCancelRequested(id: job.id)
            XCTAssertTrue(seen)

            let stopped = try await store.complete(id: job.id, attempt: job.attempt, outcome: .cancelled)
            XCTAssertTrue(stopped)
            let final = try await store.get(id: job.id)
            XCTAssertEqual(final?.status, .cancelled)
        }
    }

    func testRunningJobCancelledWhileItsWorkerVanishedIsNotRunAgain() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let job = try await submitJob(store)
            _ = try await claimJob(store, workerID: "gpu0", leaseSeconds: 5)
            _ = try await store.cancel(id: job.id)
            clock.advance(bySeconds: 6)
            let claimed = try await store.claim(workerID: "gpu1", leaseSeconds: 5)
            XCTAssertNil(claimed)
            let final = try await store.get(id: job.id)
            XCTAssertEqual(final?.status, .cancelled)
        }
    }

    func testCancelOfAFinishedJobChangesNothing() async throws {
        try await onEachBackend {
            let store = try await openStore()
            _ = try await submitJob(store)
            let job = try await claimJob(store, workerID: "gpu0")
            _ = try await store.complete(id: job.id, attempt: job.attempt, outcome: .succeeded)
            let finished = try await store.get(id: job.id)
            let outcome = try await store.cancel(id: job.id)
            XCTAssertEqual(outcome, .alreadyFinished(try XCTUnwrap(finished)))
            let unknown = try await store.cancel(id: UUID().uuidString.lowercased())
            XCTAssertEqual(unknown, .notFound)
        }
    }

    func testRetryQueuesANewJobWithTheSameParamsAndSeed() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let original = try await submitJob(store)
            let job = try await claimJob(store, workerID: "gpu0")
            _ = try await store.complete(id: job.id, attempt: job.attempt, outcome: .failed(error: "disk full"))

            let outcome = try await store.retry(id: original.id)
            guard case .created(let retried) = outcome else { return XCTFail("got \(outcome)") }
            XCTAssertNotEqual(retried.id, original.id)
            XCTAssertEqual(retried.status, .queued)
            XCTAssertEqual(retried.params, original.params)
            XCTAssertEqual(retried.seed, original.seed)
            XCTAssertEqual(retried.attempt, 0)
            XCTAssertEqual(retried.retryOf, original.id)
            XCTAssertNil(retried.error)
        }
    }

    func testRetryOfAnUnfinishedOrUnknownJobIsRefused() async throws {
        try await onEachBackend {
            let store = try await openStore()
            _ = try await submitJob(store)
            let running = try await claimJob(store, workerID: "gpu0")
            let queued = try await submitJob(store)

            let retryOfRunning = try await store.retry(id: running.id)
            XCTAssertEqual(retryOfRunning, .notFinished(running))
            let retryOfQueued = try await store.retry(id: queued.id)
            XCTAssertEqual(retryOfQueued, .notFinished(queued))
            let unknown = try await store.retry(id: UUID().uuidString.lowercased())
            XCTAssertEqual(unknown, .notFound)
            let depth = try await store.queueDepth()
            XCTAssertEqual(depth, 1)
        }
    }

    func testRetryIsRefusedWhenTheQueueIsFull() async throws {
        try await onEachBackend {
            let store = try await openStore(queueLimit: 1)
            let first = try await submitJob(store)
            _ = try await store.cancel(id: first.id)
            _ = try await submitJob(store)
            let outcome = try await store.retry(id: first.id)
            XCTAssertEqual(outcome, .queueFull(limit: 1))
        }
    }

    func testDeleteRemovesTheJobAndFencesOutItsWorker() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let submitted = try await submitJob(store)
            let job = try await claimJob(store, workerID: "gpu0")

            let removed = try await store.delete(id: submitted.id)
            XCTAssertEqual(removed?.id, submitted.id)
            XCTAssertEqual(removed?.status, .running)
            let gone = try await store.get(id: submitted.id)
            XCTAssertNil(gone)
            let shouldStop = try await store.isCancelRequested(id: job.id)
            XCTAssertTrue(shouldStop)
            let heartbeat = try await store.heartbeat(id: job.id, attempt: job.attempt, workerID: "gpu0",
                                                      leaseSeconds: 30, progress: nil)
            XCTAssertFalse(heartbeat)
            let again = try await store.delete(id: submitted.id)
            XCTAssertNil(again)
        }
    }
}
