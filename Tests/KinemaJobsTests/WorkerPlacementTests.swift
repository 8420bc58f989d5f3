import Foundation
import XCTest
@testable import KinemaJobs

final class WorkerPlacementTests: JobStoreTestCase {
    private let gib = 1 << 30

    private func submit(_ store: any JobStore, needing bytes: Int?) async throws -> Job {
        let outcome = try await store.submit(params: randomParams(), seed: 1, idempotencyKey: nil, requestHash: nil,
                                             requiredMemoryBytes: bytes)
        guard case .created(let job) = outcome else { throw JobStoreError.invalidCursor("expected a created job, got \(outcome)") }
        return job
    }

    func testAJobIsLeftForAWorkerWhoseBudgetItFits() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let large = try await submit(store, needing: 20 * gib)
            let small = try await submit(store, needing: 4 * gib)
            XCTAssertEqual(large.requiredMemoryBytes, 20 * gib)

            // The 8 GiB worker skips the older 20 GiB job and takes the one that fits it.
            let onSmallWorker = try await store.claim(workerID: "small", leaseSeconds: 30, memoryBudgetBytes: 8 * gib)
            XCTAssertEqual(onSmallWorker?.id, small.id)
            let nothingElse = try await store.claim(workerID: "small-2", leaseSeconds: 30, memoryBudgetBytes: 8 * gib)
            XCTAssertNil(nothingElse, "the 20 GiB job must wait for a worker with the memory")
            let onLargeWorker = try await store.claim(workerID: "large", leaseSeconds: 30, memoryBudgetBytes: 24 * gib)
            XCTAssertEqual(onLargeWorker?.id, large.id)
        }
    }

    func testAJobWithoutAFigureOrAWorkerWithoutABudgetMatchesAnything() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let anywhere = try await submit(store, needing: nil)
            let big = try await submit(store, needing: 20 * gib)
            let first = try await store.claim(workerID: "tiny", leaseSeconds: 30, memoryBudgetBytes: 1)
            XCTAssertEqual(first?.id, anywhere.id)
            let second = try await store.claim(workerID: "unbounded", leaseSeconds: 30)
            XCTAssertEqual(second?.id, big.id)
        }
    }

    func testARetryNeedsTheSameMemoryAsItsJob() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let job = try await submit(store, needing: 12 * gib)
            let claimed = try await store.claim(workerID: "large", leaseSeconds: 30, memoryBudgetBytes: 16 * gib)
            _ = try await store.complete(id: job.id, attempt: try XCTUnwrap(claimed).attempt, outcome: .failed(error: "test"))
            guard case .created(let retry) = try await store.retry(id: job.id) else { return XCTFail("expected a retry") }
            XCTAssertEqual(retry.requiredMemoryBytes, 12 * gib)
            let onSmall = try await store.claim(workerID: "small", leaseSeconds: 30, memoryBudgetBytes: 8 * gib)
            XCTAssertNil(onSmall)
        }
    }

    func testWorkersAreListedWhileTheirAdvertsLastWithTheJobTheyHold() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let otherNode = try await openStore()
            try await store.advertise(WorkerAdvert(id: "gpu-a", host: "a", device: "cuda:0", freeMemoryBytes: 20 * gib), aliveSeconds: 10)
            clock.advance(bySeconds: 5)
            try await store.advertise(WorkerAdvert(id: "gpu-b", host: "b", device: "cpu", freeMemoryBytes: 6 * gib), aliveSeconds: 10)
            let job = try await submit(store, needing: gib)
            _ = try await store.claim(workerID: "gpu-b", leaseSeconds: 30, memoryBudgetBytes: 6 * gib)

            let listed = try await otherNode.workers()
            XCTAssertEqual(listed.map(\.advert.id), ["gpu-a", "gpu-b"])
            XCTAssertEqual(listed[0].advert, WorkerAdvert(id: "gpu-a", host: "a", device: "cuda:0", freeMemoryBytes: 20 * gib))
            XCTAssertEqual(listed[0].lastHeartbeat, clock.now - 5)
            XCTAssertNil(listed[0].currentJob)
            XCTAssertEqual(listed[1].currentJob, job.id)

            // gpu-a's advert lapses; gpu-b renews its own and then retires.
            clock.advance(bySeconds: 6)
            try await store.advertise(WorkerAdvert(id: "gpu-b", host: "b", device: "cpu", freeMemoryBytes: 5 * gib), aliveSeconds: 10)
            let later = try await otherNode.workers()
            XCTAssertEqual(later.map(\.advert.id), ["gpu-b"])
            XCTAssertEqual(later.first?.advert.freeMemoryBytes, 5 * gib)
            try await store.retire(workerID: "gpu-b")
            let none = try await otherNode.workers()
            XCTAssertTrue(none.isEmpty)
        }
    }
}
