import Foundation
import XCTest
@testable import KinemaJobs

final class JobLeaseTests: JobStoreTestCase {
    func testClaimTakesTheOldestQueuedJobAndCountsTheAttempt() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let first = try await submitJob(store)
            let second = try await submitJob(store)

            let claimed = try await store.claim(workerID: "gpu0", leaseSeconds: 30)
            XCTAssertEqual(claimed?.id, first.id)
            XCTAssertEqual(claimed?.status, .running)
            XCTAssertEqual(claimed?.attempt, 1)
            XCTAssertEqual(claimed?.leaseOwner, "gpu0")
            XCTAssertEqual(claimed?.leaseExpiresAt, clock.now + 30)
            XCTAssertEqual(claimed?.startedAt, clock.now)
            XCTAssertNil(claimed?.queuePosition)
            let remaining = try await store.get(id: second.id)
            XCTAssertEqual(remaining?.queuePosition, 1)
            let next = try await store.claim(workerID: "gpu1", leaseSeconds: 30)
            XCTAssertEqual(next?.id, second.id)
        }
    }

    func testReleasedJobIsQueuedAgainInItsPlaceAndTheReleasingAttemptIsFencedOut() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let first = try await submitJob(store)
            let second = try await submitJob(store)
            let job = try await claimJob(store, workerID: "gpu0", leaseSeconds: 30)
            XCTAssertEqual(job.id, first.id)
            let progress = JobProgress(phase: .denoise, step: Int.random(in: 1...9), totalSteps: 10, progress: 0.5, etaSeconds: 3)
            _ = try await store.heartbeat(id: job.id, attempt: job.attempt, workerID: "gpu0", leaseSeconds: 30, progress: progress)

            let released = try await store.release(id: job.id, attempt: job.attempt)
            XCTAssertTrue(released)
            let queued = try await store.get(id: job.id)
            XCTAssertEqual(queued?.status, .queued)
            XCTAssertNil(queued?.leaseOwner)
            XCTAssertEqual(queued?.progress, JobProgress())
            XCTAssertEqual(queued?.queuePosition, 1)
            // The released attempt can neither complete nor release the job again.
            let completed = try await store.complete(id: job.id, attempt: job.attempt, outcome: .succeeded)
            XCTAssertFalse(completed)
            let releasedAgain = try await store.release(id: job.id, attempt: job.attempt)
            XCTAssertFalse(releasedAgain)
            // The next claim takes the released job before the later one.
            let next = try await claimJob(store, workerID: "gpu1", leaseSeconds: 30)
            XCTAssertEqual(next.id, first.id)
            XCTAssertEqual(next.attempt, job.attempt + 1)
            let after = try await store.get(id: second.id)
            XCTAssertEqual(after?.status, .queued)
        }
    }

    func testClaimWithNothingQueuedIsNil() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let claimed = try await store.claim(workerID: "gpu0", leaseSeconds: 30)
            XCTAssertNil(claimed)
        }
    }

    func testHeartbeatRenewsTheLeaseAndRecordsProgress() async throws {
        try await onEachBackend {
            let store = try await openStore()
            _ = try await submitJob(store)
            let job = try await claimJob(store, workerID: "gpu0", leaseSeconds: 10)
            let progress = JobProgress(phase: .denoise, step: Int.random(in: 1...49), totalSteps: 50,
                                       progress: Double.random(in: 0.1...0.9), etaSeconds: Double.random(in: 1...100))
            clock.advance(bySeconds: 8)
            let renewed = try await store.heartbeat(id: job.id, attempt: job.attempt, workerID: "gpu0", leaseSeconds: 10,
                                                    progress: progress)
            XCTAssertTrue(renewed)
            clock.advance(bySeconds: 8)  // past the first lease, within the renewed one
            let stolen = try await store.claim(workerID: "gpu1", leaseSeconds: 10)
            XCTAssertNil(stolen)
            let stored = try await store.get(id: job.id)
            XCTAssertEqual(stored?.progress, progress)
            XCTAssertEqual(stored?.leaseExpiresAt, clock.now + 2)
        }
    }

    func testLapsedLeaseIsReclaimedAndTheFrozenWorkerIsFencedOut() async throws {
        try await onEachBackend {
            let store = try await openStore()
            _ = try await submitJob(store)
            let frozen = try await claimJob(store, workerID: "gpu0", leaseSeconds: 10)
            clock.advance(bySeconds: 11)

            let rescued = try await claimJob(store, workerID: "gpu1", leaseSeconds: 10)
            XCTAssertEqual(rescued.id, frozen.id)
            XCTAssertEqual(rescued.attempt, frozen.attempt + 1)
            XCTAssertEqual(rescued.leaseOwner, "gpu1")

            let heartbeat = try await store.heartbeat(id: frozen.id, attempt: frozen.attempt, workerID: "gpu0",
                                                      leaseSeconds: 10, progress: JobProgress(step: 3))
            let completion = try await store.complete(id: frozen.id, attempt: frozen.attempt,
                                                      outcome: .failed(error: "late"))
            XCTAssertFalse(heartbeat)
            XCTAssertFalse(completion)
            let stillRunning = try await store.get(id: frozen.id)
            XCTAssertEqual(stillRunning?.status, .running)
            XCTAssertNil(stillRunning?.error)

            let finished = try await store.complete(id: rescued.id, attempt: rescued.attempt, outcome: .succeeded)
            XCTAssertTrue(finished)
            let done = try await store.get(id: rescued.id)
            XCTAssertEqual(done?.status, .succeeded)
            XCTAssertEqual(done?.finishedAt, clock.now)
            XCTAssertNil(done?.leaseOwner)
        }
    }

    func testFailedCompletionRecordsTheError() async throws {
        try await onEachBackend {
            let store = try await openStore()
            _ = try await submitJob(store)
            let job = try await claimJob(store, workerID: "gpu0", leaseSeconds: 30)
            let message = "out of memory in decode: \(UUID().uuidString)"
            let recorded = try await store.complete(id: job.id, attempt: job.attempt, outcome: .failed(error: message))
            XCTAssertTrue(recorded)
            let failed = try await store.get(id: job.id)
            XCTAssertEqual(failed?.status, .failed)
            XCTAssertEqual(failed?.error, message)
            let again = try await store.complete(id: job.id, attempt: job.attempt, outcome: .succeeded)
            XCTAssertFalse(again, "a finished job must not be completed twice")
        }
    }

    func testJobThatLosesItsWorkerOnEveryAttemptFails() async throws {
        try await onEachBackend {
            let store = try await openStore(maxAttempts: 2)
            let job = try await submitJob(store)
            for attempt in 1...2 {
                let claimed = try await store.claim(workerID: "gpu\(attempt)", leaseSeconds: 5)
                XCTAssertEqual(claimed?.attempt, attempt)
                clock.advance(bySeconds: 6)
            }
            let none = try await store.claim(workerID: "gpu3", leaseSeconds: 5)
            XCTAssertNil(none)
            let failed = try await store.get(id: job.id)
            XCTAssertEqual(failed?.status, .failed)
            XCTAssertEqual(failed?.error, "its worker stopped reporting on each of 2 attempts; the job may be crashing the worker: see the server log")
        }
    }

    func testWorkerWhoseLeaseLapsedMayStillFinishWhileNoOtherWorkerClaimedTheJob() async throws {
        try await onEachBackend {
            let store = try await openStore()
            _ = try await submitJob(store)
            let job = try await claimJob(store, workerID: "gpu0", leaseSeconds: 10)
            clock.advance(bySeconds: 60)

            let impostor = try await store.heartbeat(id: job.id, attempt: job.attempt, workerID: "gpu1",
                                                     leaseSeconds: 10, progress: nil)
            XCTAssertFalse(impostor, "only the lease holder may renew it")
            let renewed = try await store.heartbeat(id: job.id, attempt: job.attempt, workerID: "gpu0",
                                                    leaseSeconds: 10, progress: nil)
            XCTAssertTrue(renewed, "the attempt counter fences, not the clock: nobody else holds the job")
            let finished = try await store.complete(id: job.id, attempt: job.attempt, outcome: .succeeded)
            XCTAssertTrue(finished)
        }
    }

    func testConcurrentWorkersOnTwoStoresClaimEachJobExactlyOnce() async throws {
        try await onEachBackend {
            let stores = [try await openStore(), try await openStore()]
            var submitted: Set<String> = []
            for _ in 0..<Int.random(in: 8...14) {
                submitted.insert(try await submitJob(stores[0]).id)
            }
            let claims = try await withThrowingTaskGroup(of: [Job].self) { group in
                for worker in 0..<6 {
                    let store = stores[worker % 2]
                    group.addTask {
                        var mine: [Job] = []
                        while let job = try await store.claim(workerID: "gpu\(worker)", leaseSeconds: 30) {
                            mine.append(job)
                        }
                        return mine
                    }
                }
                var all: [Job] = []
                for try await claimed in group { all += claimed }
                return all
            }
            XCTAssertEqual(claims.count, submitted.count)
            XCTAssertEqual(Set(claims.map(\.id)), submitted)
            XCTAssertTrue(claims.allSatisfy { $0.attempt == 1 })
        }
    }
}
