import Foundation
import PostgresNIO
import XCTest
@testable import KinemaJobs

/// A clock the test moves by hand, so lease expiry needs no sleeping.
final class ManualClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current = Date(timeIntervalSince1970: 1_800_000_000)

    var now: Date {
        lock.lock()
        defer { lock.unlock() }
        return current
    }

    func advance(bySeconds seconds: Double) {
        lock.lock()
        current += seconds
        lock.unlock()
    }

    var source: @Sendable () -> Date { { [self] in self.now } }
}

/// The two `JobStore`s every store test runs against.
enum StoreBackend: String, CaseIterable {
    case sqlite
    case postgres

    /// The PostgreSQL server for tests (`./test.sh` starts one and sets it); each test gets a database of its own.
    static var postgresURL: PostgresURL? {
        guard let text = ProcessInfo.processInfo.environment["KINEMA_TEST_POSTGRES_URL"], !text.isEmpty else { return nil }
        return try? PostgresURL(text)
    }

    /// SQLite always; PostgreSQL when a test server is configured.
    static var available: [StoreBackend] {
        if postgresURL == nil {
            reportSkipOnce()
            return [.sqlite]
        }
        return allCases
    }

    private static let skipReported = NSLock()
    nonisolated(unsafe) private static var skipWasReported = false
    private static func reportSkipOnce() {
        skipReported.withLock {
            guard !skipWasReported else { return }
            skipWasReported = true
            print("note: KINEMA_TEST_POSTGRES_URL is not set: the job store tests run on SQLite only, PostgreSQL is skipped (./test.sh sets it)")
        }
    }
}

/// Base for job store tests. A test states its behaviour once inside `onEachBackend`, which runs it against
/// SQLite (a fresh temporary folder) and PostgreSQL (a fresh database on the test server), each time with a
/// new manual clock; every store opened is closed and the storage dropped afterwards.
class JobStoreTestCase: XCTestCase {
    var directory: URL!
    var clock: ManualClock!
    private(set) var backend = StoreBackend.sqlite
    private var opened: [any JobStore] = []
    private let openedLock = NSLock()
    private var database: PostgresURL?

    /// Runs `body` once per available backend, each time on empty storage.
    func onEachBackend(_ body: () async throws -> Void) async throws {
        for backend in StoreBackend.available {
            try await prepare(backend)
            do {
                try await body()
            } catch {
                await cleanUp()
                XCTFail("[\(backend.rawValue)] \(error)")
                throw error
            }
            await cleanUp()
        }
    }

    /// Failures name the backend they happened on.
    override func recordFailure(withDescription description: String, inFile filePath: String, atLine lineNumber: Int, expected: Bool) {
        let tagged = description.hasPrefix("[") ? description : "[\(backend.rawValue)] \(description)"
        super.recordFailure(withDescription: tagged, inFile: filePath, atLine: lineNumber, expected: expected)
    }

    private func prepare(_ backend: StoreBackend) async throws {
        self.backend = backend
        clock = ManualClock()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-jobs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        if backend == .postgres, let server = StoreBackend.postgresURL {
            let name = "kinema_test_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased())"
            try await Self.administer(server, "CREATE DATABASE \(name)")
            database = server.with(database: name)
        }
    }

    private func cleanUp() async {
        let stores = openedLock.withLock {
            defer { opened = [] }
            return opened
        }
        for store in stores {
            try? await store.close()
        }
        try? FileManager.default.removeItem(at: directory)
        if let database, let server = StoreBackend.postgresURL {
            try? await Self.administer(server, "DROP DATABASE IF EXISTS \(database.database) WITH (FORCE)")
        }
        database = nil
    }

    /// Runs one statement on the test server's own database, outside any store.
    static func administer(_ server: PostgresURL, _ sql: String) async throws {
        let client = PostgresClient(configuration: server.clientConfiguration, backgroundLogger: Logger(label: "kinema.tests"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            try await client.query(PostgresQuery(unsafeSQL: sql))
        }
    }

    var databasePath: String { directory.appendingPathComponent("jobs.sqlite").path }

    /// Where the store of this backend lives, as its errors name it.
    var storeLocation: String {
        switch backend {
        case .sqlite: return databasePath
        case .postgres: return database!.description
        }
    }

    /// A store on this test's storage; several calls open several stores (as several processes would) on it.
    func openStore(queueLimit: Int = 100, maxAttempts: Int = 3) async throws -> any JobStore {
        let store: any JobStore
        switch backend {
        case .sqlite:
            store = try await SQLiteJobStore.open(path: databasePath, queueLimit: queueLimit, maxAttempts: maxAttempts, clock: clock.source)
        case .postgres:
            store = try await PostgresJobStore.open(url: database!, queueLimit: queueLimit, maxAttempts: maxAttempts, clock: clock.source)
        }
        openedLock.withLock { opened.append(store) }
        return store
    }

    /// Runs raw SQL on the store (to fabricate states the public API cannot produce).
    func execute(_ sql: String, on store: any JobStore) async throws {
        switch store {
        case let sqlite as SQLiteJobStore: try await sqlite.execute(sql)
        case let postgres as PostgresJobStore: try await postgres.execute(sql)
        default: XCTFail("no raw SQL for \(type(of: store))")
        }
    }

    /// The newest schema version of this backend.
    var latestSchemaVersion: Int {
        backend == .sqlite ? JobStoreMigrations.latestVersion : PostgresMigrations.latestVersion
    }

    /// The table that records applied schema steps.
    var migrationsTable: String {
        backend == .sqlite ? "schema_migrations" : "kinema_schema_migrations"
    }

    /// Request parameters as the server would store them, different on every call.
    func randomParams() -> String {
        #"{"prompt":"a \#(UUID().uuidString)","steps":\#(Int.random(in: 10...100)),"width":\#(8 * Int.random(in: 32...160))}"#
    }

    /// Submits a job without an idempotency key and returns it, failing the test if it was not created.
    func submitJob(_ store: any JobStore, params: String? = nil,
                   seed: UInt64 = .random(in: 0...UInt64.max)) async throws -> Job {
        let outcome = try await store.submit(params: params ?? randomParams(), seed: seed,
                                             idempotencyKey: nil, requestHash: nil)
        guard case .created(let job) = outcome else {
            XCTFail("expected a created job, got \(outcome)")
            throw JobStoreError.invalidCursor("test setup")
        }
        return job
    }

    /// Claims the next job and returns it, failing the test if there was none.
    func claimJob(_ store: any JobStore, workerID: String, leaseSeconds: Double = 30) async throws -> Job {
        let claimed = try await store.claim(workerID: workerID, leaseSeconds: leaseSeconds)
        return try XCTUnwrap(claimed, "expected a job to claim")
    }
}
