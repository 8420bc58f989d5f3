import Foundation
import XCTest
@testable import KinemaJobs

final class JobStoreSchemaTests: JobStoreTestCase {
    func testJobsSurviveReopeningAndALapsedRunningJobIsClaimableAgain() async throws {
        let before = try await openStore()
        let running = try await submitJob(before)
        let queued = try await submitJob(before)
        let claimed = try await claimJob(before, workerID: "gpu0", leaseSeconds: 10)
        try await before.close()  // as after kill -9: the worker never reports again

        let after = try await openStore()
        let survivors = try await after.list(status: nil, cursor: nil, limit: 10)
        XCTAssertEqual(survivors.jobs.map(\.id), [queued.id, running.id])
        XCTAssertEqual(survivors.jobs.last?.params, running.params)
        clock.advance(bySeconds: 11)
        let resumed = try await claimJob(after, workerID: "gpu0-restarted")
        XCTAssertEqual(resumed.id, running.id)
        XCTAssertEqual(resumed.attempt, claimed.attempt + 1)
        let next = try await claimJob(after, workerID: "gpu0-restarted")
        XCTAssertEqual(next.id, queued.id)
    }

    func testOpeningAnUpToDateDatabaseAgainIsHarmless() async throws {
        let first = try await openStore()
        let job = try await submitJob(first)
        let second = try await openStore()
        try await second.migrate()
        let seen = try await second.get(id: job.id)
        XCTAssertEqual(seen, job)
    }

    func testDatabaseIsInWriteAheadLogMode() async throws {
        let store = try await openStore()
        _ = try await submitJob(store)
        XCTAssertTrue(FileManager.default.fileExists(atPath: databasePath + "-wal"))
    }

    func testDatabaseFromANewerKinemaIsRefused() async throws {
        let store = try await openStore()
        let future = JobStoreMigrations.latestVersion + Int.random(in: 1...50)
        try await store.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (\(future), 0)")
        try await store.close()

        do {
            _ = try await openStore()
            XCTFail("a database of schema version \(future) was opened")
        } catch let error as JobStoreError {
            XCTAssertEqual(error, .newerSchema(path: databasePath, found: future,
                                               supported: JobStoreMigrations.latestVersion))
            XCTAssertTrue(error.description.contains("upgrade Kinema"))
        }
    }

    func testUnwritableLocationGivesAnErrorNamingThePath() async throws {
        let path = directory.appendingPathComponent("missing-folder/jobs.sqlite").path
        do {
            let store = try await SQLiteJobStore.open(path: path)
            try await store.close()
            XCTFail("a database was opened in a folder that does not exist")
        } catch let error as JobStoreError {
            guard case .database(let reported, _) = error else { return XCTFail("got \(error)") }
            XCTAssertEqual(reported, path)
        }
    }
}
