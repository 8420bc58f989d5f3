import Foundation
import XCTest
@testable import KinemaJobs

final class JobSubmissionTests: JobStoreTestCase {
    func testSubmittedJobIsQueuedWithItsParamsSeedAndQueuePosition() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let params = randomParams()
            let seed = UInt64.random(in: (UInt64(Int64.max) + 1)...UInt64.max)  // above Int64.max: stored by bit pattern
            let first = try await submitJob(store, params: params, seed: seed)
            let second = try await submitJob(store)

            let stored = try await store.get(id: first.id)
            XCTAssertEqual(stored, first)
            XCTAssertEqual(stored?.status, .queued)
            XCTAssertEqual(stored?.params, params)
            XCTAssertEqual(stored?.seed, seed)
            XCTAssertEqual(stored?.attempt, 0)
            XCTAssertEqual(stored?.createdAt, clock.now)
            XCTAssertEqual(first.queuePosition, 1)
            XCTAssertEqual(second.queuePosition, 2)
            XCTAssertNotNil(UUID(uuidString: first.id))
        }
    }

    func testGetOfUnknownIdIsNil() async throws {
        try await onEachBackend {
            let store = try await openStore()
            _ = try await submitJob(store)
            let missing = try await store.get(id: UUID().uuidString.lowercased())
            XCTAssertNil(missing)
        }
    }

    func testSameKeyAndSameBodyReplaysTheFirstJob() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let key = UUID().uuidString, hash = UUID().uuidString
            guard case .created(let job) = try await store.submit(params: randomParams(), seed: 7, idempotencyKey: key,
                                                                  requestHash: hash) else { return XCTFail("not created") }
            let again = try await store.submit(params: randomParams(), seed: 8, idempotencyKey: key, requestHash: hash)
            XCTAssertEqual(again, .replayed(job))
            let depth = try await store.queueDepth()
            XCTAssertEqual(depth, 1)
        }
    }

    func testSameKeyWithAnotherBodyIsAConflict() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let key = UUID().uuidString
            guard case .created(let job) = try await store.submit(params: randomParams(), seed: 7, idempotencyKey: key,
                                                                  requestHash: "a") else { return XCTFail("not created") }
            let other = try await store.submit(params: randomParams(), seed: 7, idempotencyKey: key, requestHash: "b")
            XCTAssertEqual(other, .conflict(existing: job))
            let depth = try await store.queueDepth()
            XCTAssertEqual(depth, 1)
        }
    }

    func testTwentyConcurrentSubmissionsWithRepeatedKeysMakeOneJobPerKey() async throws {
        try await onEachBackend {
            let store = try await openStore()
            try await assertOneJobPerKey(submittingThrough: [store], listingWith: store)
        }
    }

    func testConcurrentSubmissionsThroughTwoStoresOnOneFileMakeOneJobPerKey() async throws {
        try await onEachBackend {
            let first = try await openStore()
            let second = try await openStore()
            try await assertOneJobPerKey(submittingThrough: [first, second], listingWith: first)
        }
    }

    func testSubmissionBeyondQueueLimitIsRefusedUntilAJobLeavesTheQueue() async throws {
        try await onEachBackend {
            let store = try await openStore(queueLimit: 3)
            let key = UUID().uuidString
            _ = try await store.submit(params: randomParams(), seed: 1, idempotencyKey: key, requestHash: "h")
            for _ in 0..<2 { _ = try await submitJob(store) }

            let refused = try await store.submit(params: randomParams(), seed: 2, idempotencyKey: nil, requestHash: nil)
            XCTAssertEqual(refused, .queueFull(limit: 3))
            let replay = try await store.submit(params: randomParams(), seed: 1, idempotencyKey: key, requestHash: "h")
            guard case .replayed = replay else { return XCTFail("a replay must not be refused, got \(replay)") }

            _ = try await store.claim(workerID: "gpu0", leaseSeconds: 30)
            let accepted = try await store.submit(params: randomParams(), seed: 3, idempotencyKey: nil, requestHash: nil)
            guard case .created = accepted else { return XCTFail("expected room after a claim, got \(accepted)") }
            let depth = try await store.queueDepth()
            XCTAssertEqual(depth, 3)
        }
    }

    /// 20 submissions from separate tasks: 5 keys sent 3 times each (with the same body) and 5 without a key.
    private func assertOneJobPerKey(submittingThrough stores: [any JobStore], listingWith reader: any JobStore) async throws {
        let keys = (0..<5).map { _ in UUID().uuidString }
        let requests = (keys + keys + keys).map { Optional($0) } + Array(repeating: nil, count: 5)
        let outcomes = try await withThrowingTaskGroup(of: (String?, SubmitOutcome).self) { group in
            for (index, key) in requests.shuffled().enumerated() {
                let store = stores[index % stores.count]
                group.addTask {
                    (key, try await store.submit(params: #"{"key":"\#(key ?? "none")"}"#, seed: 42,
                                                 idempotencyKey: key, requestHash: key.map { "hash-\($0)" }))
                }
            }
            var all: [(String?, SubmitOutcome)] = []
            for try await outcome in group { all.append(outcome) }
            return all
        }

        var idsByKey: [String: Set<String>] = [:]
        var created = 0
        for (key, outcome) in outcomes {
            switch outcome {
            case .created(let job):
                created += 1
                if let key { idsByKey[key, default: []].insert(job.id) }
            case .replayed(let job):
                XCTAssertNotNil(key)
                if let key { idsByKey[key, default: []].insert(job.id) }
            case .conflict, .queueFull:
                XCTFail("unexpected \(outcome)")
            }
        }
        XCTAssertEqual(created, 10)
        XCTAssertEqual(idsByKey.count, 5)
        XCTAssertTrue(idsByKey.values.allSatisfy { $0.count == 1 }, "a key mapped to several jobs: \(idsByKey)")
        let stored = try await reader.list(status: nil, cursor: nil, limit: 100)
        XCTAssertEqual(stored.jobs.count, 10)
        XCTAssertEqual(Set(stored.jobs.map(\.id)).count, 10)
        XCTAssertEqual(Set(stored.jobs.compactMap(\.idempotencyKey)), Set(keys))
    }
}
