import Foundation
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

/// Base for job store tests: a fresh temporary folder per test holding real SQLite files, a manual clock,
/// and every store opened by the test closed afterwards.
class JobStoreTestCase: XCTestCase {
    var directory: URL!
    var clock: ManualClock!
    private var opened: [SQLiteJobStore] = []

    override func setUp() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-jobs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        clock = ManualClock()
        opened = []
    }

    override func tearDown() async throws {
        for store in opened {
            try? await store.close()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    var databasePath: String { directory.appendingPathComponent("jobs.sqlite").path }

    func openStore(queueLimit: Int = 100, maxAttempts: Int = 3) async throws -> SQLiteJobStore {
        let store = try await SQLiteJobStore.open(path: databasePath, queueLimit: queueLimit,
                                                  maxAttempts: maxAttempts, clock: clock.source)
        opened.append(store)
        return store
    }

    /// Request parameters as the server would store them, different on every call.
    func randomParams() -> String {
        #"{"prompt":"a \#(UUID().uuidString)","steps":\#(Int.random(in: 10...100)),"width":\#(8 * Int.random(in: 32...160))}"#
    }

    /// Submits a job without an idempotency key and returns it, failing the test if it was not created.
    func submitJob(_ store: SQLiteJobStore, params: String? = nil,
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
    func claimJob(_ store: SQLiteJobStore, workerID: String, leaseSeconds: Double = 30) async throws -> Job {
        let claimed = try await store.claim(workerID: workerID, leaseSeconds: leaseSeconds)
        return try XCTUnwrap(claimed, "expected a job to claim")
    }
}
