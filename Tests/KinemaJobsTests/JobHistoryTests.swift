import Foundation
import XCTest
@testable import KinemaJobs

final class JobHistoryTests: JobStoreTestCase {
    func testListIsNewestFirstInPagesThatCoverEveryJobOnce() async throws {
        try await onEachBackend {
            let store = try await openStore()
            var submitted: [String] = []
            for _ in 0..<Int.random(in: 7...12) {
                submitted.append(try await submitJob(store).id)
            }
            let pageSize = Int.random(in: 2...4)
            var seen: [String] = []
            var cursor: String?
            repeat {
                let page = try await store.list(status: nil, cursor: cursor, limit: pageSize)
                XCTAssertLessThanOrEqual(page.jobs.count, pageSize)
                seen += page.jobs.map(\.id)
                cursor = page.nextCursor
            } while cursor != nil
            XCTAssertEqual(seen, submitted.reversed())
        }
    }

    func testCursorIsStableWhenJobsArriveBetweenPages() async throws {
        try await onEachBackend {
            let store = try await openStore()
            var submitted: [String] = []
            for _ in 0..<6 {
                submitted.append(try await submitJob(store).id)
            }
            let first = try await store.list(status: nil, cursor: nil, limit: 3)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<5 {
                    group.addTask { _ = try await self.submitJob(store) }
                }
                try await group.waitForAll()
            }
            let second = try await store.list(status: nil, cursor: first.nextCursor, limit: 3)
            XCTAssertEqual(first.jobs.map(\.id) + second.jobs.map(\.id), submitted.reversed())
            XCTAssertNil(second.nextCursor)
        }
    }

    func testListFiltersByStatus() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let jobs = [try await submitJob(store), try await submitJob(store), try await submitJob(store)]
            _ = try await store.cancel(id: jobs[1].id)
            let cancelled = try await store.list(status: .cancelled, cursor: nil, limit: 10)
            let queued = try await store.list(status: .queued, cursor: nil, limit: 10)
            XCTAssertEqual(cancelled.jobs.map(\.id), [jobs[1].id])
            XCTAssertEqual(queued.jobs.map(\.id), [jobs[2].id, jobs[0].id])
        }
    }

    func testCursorNotHandedOutByTheStoreIsRefused() async throws {
        try await onEachBackend {
            let store = try await openStore()
            do {
                _ = try await store.list(status: nil, cursor: "not-a-cursor", limit: 10)
                XCTFail("a foreign cursor was accepted")
            } catch let error as JobStoreError {
                XCTAssertEqual(error, .invalidCursor("not-a-cursor"))
            }
        }
    }

    func testPageSizeOutsideTheAllowedRangeIsRefused() async throws {
        try await onEachBackend {
            let store = try await openStore()
            for limit in [0, SQLiteJobStore.allowedPageSizes.upperBound + 1] {
                do {
                    _ = try await store.list(status: nil, cursor: nil, limit: limit)
                    XCTFail("limit \(limit) was accepted")
                } catch let error as JobStoreError {
                    XCTAssertEqual(error, .invalidLimit(limit, allowed: SQLiteJobStore.allowedPageSizes))
                }
            }
        }
    }
}
