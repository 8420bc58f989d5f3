import Foundation
import XCTest
@testable import KinemaJobs

final class JobStoreSchemaTests: JobStoreTestCase {
    func testJobsSurviveReopeningAndALapsedRunningJobIsClaimableAgain() async throws {
        try await onEachBackend {
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
    }

    func testOpeningAnUpToDateDatabaseAgainIsHarmless() async throws {
        try await onEachBackend {
            let first = try await openStore()
            let job = try await submitJob(first)
            let second = try await openStore()
            try await second.migrate()
            let seen = try await second.get(id: job.id)
            XCTAssertEqual(seen, job)
        }
    }

    func testSQLiteDatabaseIsInWriteAheadLogMode() async throws {
        try await onEachBackend {
            guard backend == .sqlite else { return }
            let store = try await openStore()
            _ = try await submitJob(store)
            XCTAssertTrue(FileManager.default.fileExists(atPath: databasePath + "-wal"))
        }
    }

    /// PostgreSQL only: migrations run under an advisory lock. (Six SQLite stores opened at the same instant
    /// on a new file can fail while switching it to WAL; SQLite nodes start one at a time.)
    func testNodesStartingTogetherOnAnEmptyDatabaseMigrateItOnce() async throws {
        try await onEachBackend {
            guard backend == .postgres else { return }
            let stores = try await withThrowingTaskGroup(of: (any JobStore).self) { group in
                for _ in 0..<6 { group.addTask { try await self.openStore() } }
                var all: [any JobStore] = []
                for try await store in group { all.append(store) }
                return all
            }
            let job = try await submitJob(stores[0])
            for store in stores {
                let seen = try await store.get(id: job.id)
                XCTAssertEqual(seen?.id, job.id)
            }
        }
    }

    func testDatabaseFromANewerKinemaIsRefused() async throws {
        try await onEachBackend {
            let store = try await openStore()
            let future = latestSchemaVersion + Int.random(in: 1...50)
            try await execute("INSERT INTO \(migrationsTable) (version, applied_at) VALUES (\(future), 0)", on: store)
            try await store.close()

            do {
                _ = try await openStore()
                XCTFail("a database of schema version \(future) was opened")
            } catch let error as JobStoreError {
                XCTAssertEqual(error, .newerSchema(path: storeLocation, found: future, supported: latestSchemaVersion))
                XCTAssertTrue(error.description.contains("upgrade Kinema"))
            }
        }
    }

    func testUnwritableLocationGivesAnErrorNamingThePath() async throws {
        try await onEachBackend {
            guard backend == .sqlite else { return }
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

    func testUnreachablePostgresServerGivesAnErrorNamingItWithoutThePassword() async throws {
        let url = try PostgresURL("postgres://kinema:secret@127.0.0.1:1/jobs?sslmode=disable")
        do {
            let store = try await PostgresJobStore.open(url: url, connectSeconds: 2)
            try await store.close()
            XCTFail("a store was opened on a port where no server listens")
        } catch let error as JobStoreError {
            guard case .database(let reported, _) = error else { return XCTFail("got \(error)") }
            XCTAssertEqual(reported, "postgres://kinema@127.0.0.1:1/jobs?sslmode=disable")
            XCTAssertFalse(error.description.contains("secret"))
        }
    }

    func testPostgresURLsAreReadAsLibpqWritesThem() throws {
        let full = try PostgresURL("postgresql://ann:p%40ss@db.example:6543/queue?sslmode=require")
        XCTAssertEqual([full.username, full.password, full.host, full.database], ["ann", "p@ss", "db.example", "queue"])
        XCTAssertEqual(full.port, 6543)
        XCTAssertEqual(full.tls, .require)
        let socket = try PostgresURL("postgres://kinema@/jobs?host=/var/run/postgresql")
        XCTAssertEqual(socket.socketFolder, "/var/run/postgresql")
        XCTAssertEqual(socket.tls, .prefer)
        XCTAssertThrowsError(try PostgresURL("postgres://kinema@localhost/jobs?sslmode=sometimes"))
        XCTAssertThrowsError(try PostgresURL("postgres://kinema@localhost/jobs?pool=3"))
        XCTAssertThrowsError(try PostgresURL("/var/lib/kinema/jobs.sqlite3"))
    }
}
