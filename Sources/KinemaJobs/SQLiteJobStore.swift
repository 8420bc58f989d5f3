import Foundation
import SQLiteNIO

/// The default `JobStore`: one SQLite file under the data directory, in WAL mode so readers never wait for
/// the writer. Several instances (several processes) may open the same file; every change runs in a
/// `BEGIN IMMEDIATE` transaction, which SQLite serialises across connections, and the busy timeout makes a
/// writer wait its turn instead of failing.
public final class SQLiteJobStore: JobStore {
    /// Page sizes `list` accepts.
    public static let allowedPageSizes = 1...1000

    /// The database file.
    public let path: String
    /// How many queued jobs the store holds before `submit` answers `queueFull`.
    public let queueLimit: Int
    /// Claims after which a job whose worker keeps vanishing (lease lapsing) is failed instead of re-run.
    public let maxAttempts: Int

    private let connection: SQLiteConnection
    private let gate = SerialGate()
    private let clock: @Sendable () -> Date

    private init(path: String, connection: SQLiteConnection, queueLimit: Int, maxAttempts: Int,
                 clock: @escaping @Sendable () -> Date) {
        self.path = path
        self.connection = connection
        self.queueLimit = queueLimit
        self.maxAttempts = maxAttempts
        self.clock = clock
    }

    /// Opens (creating if needed) the job database at `path` and brings its schema up to date.
    /// - Parameters:
    ///   - queueLimit: queued jobs allowed before submissions are refused with `queueFull`.
    ///   - maxAttempts: claims allowed before a job whose lease keeps lapsing is failed.
    ///   - busyTimeoutMilliseconds: how long a write waits for another connection's transaction.
    ///   - clock: the time source for leases and timestamps (tests pass a manual clock).
    public static func open(path: String, queueLimit: Int = 100, maxAttempts: Int = 3,
                            busyTimeoutMilliseconds: Int = 10_000,
                            clock: @escaping @Sendable () -> Date = { Date() }) async throws -> SQLiteJobStore {
        let connection: SQLiteConnection
        do {
            connection = try await SQLiteConnection.open(storage: .file(path: path))
        } catch {
            throw JobStoreError.database(path: path, message: "cannot open it (\(error)); check that its folder exists and is writable")
        }
        let store = SQLiteJobStore(path: path, connection: connection, queueLimit: queueLimit,
                                   maxAttempts: maxAttempts, clock: clock)
        do {
            // `busy_timeout` replaces sqlite-nio's default busy handler, which retries without sleeping.
            _ = try await store.query("PRAGMA busy_timeout = \(busyTimeoutMilliseconds)")
            _ = try await store.query("PRAGMA journal_mode = WAL")
            // FULL syncs each commit, so a job answered with 202 survives a power cut as well as kill -9.
            _ = try await store.query("PRAGMA synchronous = FULL")
            try await store.migrate()
        } catch {
            try? await connection.close()
            throw error
        }
        return store
    }

    public func migrate() async throws {
        try await transaction {
            _ = try await query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            let applied = try await query("SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations")
            let current = applied.first?.column("version")?.integer ?? 0
            guard current <= JobStoreMigrations.latestVersion else {
                throw JobStoreError.newerSchema(path: path, found: current, supported: JobStoreMigrations.latestVersion)
            }
            for step in JobStoreMigrations.steps where step.version > current {
                for statement in step.statements {
                    _ = try await query(statement)
                }
                _ = try await query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                                    [.integer(step.version), .integer(now())])
            }
        }
    }

    public func submit(params: String, seed: UInt64, idempotencyKey: String?,
                       requestHash: String?, requiredMemoryBytes: Int?) async throws -> SubmitOutcome {
        try await transaction {
            if let idempotencyKey {
                let earlier = try await query("SELECT \(Self.jobColumns) FROM jobs WHERE idempotency_key = ?",
                                              [.text(idempotencyKey)])
                if let row = earlier.first {
                    let job = try Self.job(from: row)
                    return job.requestHash == requestHash ? .replayed(job) : .conflict(existing: job)
                }
            }
            guard try await countQueued() < queueLimit else { return .queueFull(limit: queueLimit) }
            let id = try await insertJob(params: params, seed: seed, idempotencyKey: idempotencyKey,
                                         requestHash: requestHash, requiredMemoryBytes: requiredMemoryBytes, retryOf: nil)
            return .created(try await fetch(id: id))
        }
    }

    public func get(id: String) async throws -> Job? {
        try await serialized { try await fetchIfPresent(id: id) }
    }

    public func list(status: JobStatus?, cursor: String?, limit: Int) async throws -> JobPage {
        guard Self.allowedPageSizes.contains(limit) else {
            throw JobStoreError.invalidLimit(limit, allowed: Self.allowedPageSizes)
        }
        let before = try cursor.map(JobCursor.sequence(fromCursor:))
        return try await serialized {
            // One row more than asked tells whether another page follows.
            let rows = try await query(
                """
                SELECT \(Self.jobColumns) FROM jobs
                WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR seq < ?2)
                ORDER BY seq DESC LIMIT ?3
                """,
                [status.map { .text($0.rawValue) } ?? .null, before.map { .integer($0) } ?? .null, .integer(limit + 1)])
            let jobs = try rows.prefix(limit).map(Self.job(from:))
            let last = rows.count > limit ? rows[limit - 1].column("seq")?.integer : nil
            return JobPage(jobs: jobs, nextCursor: last.map(JobCursor.cursor(forSequence:)))
        }
    }

    public func claim(workerID: String, leaseSeconds: Double, memoryBudgetBytes: Int?) async throws -> Job? {
        try await transaction {
            let now = now()
            // A job whose worker vanished after a cancel was asked for is cancelled, not run again.
            _ = try await query(
                """
                UPDATE jobs SET status = 'cancelled', finished_at = ?1, lease_owner = NULL, lease_expires_at = NULL
                WHERE status = 'running' AND lease_expires_at <= ?1 AND cancel_requested = 1
                """, [.integer(now)])
            // A job that has lost its worker `maxAttempts` times probably kills workers: stop re-running it.
            _ = try await query(
                """
                UPDATE jobs SET status = 'failed', finished_at = ?1, lease_owner = NULL, lease_expires_at = NULL,
                    error = 'its worker stopped reporting on each of ' || attempt || ' attempts; the job may be crashing the worker: see the server log'
                WHERE status = 'running' AND lease_expires_at <= ?1 AND attempt >= ?2
                """, [.integer(now), .integer(maxAttempts)])
            let next = try await query(
                """
                SELECT id FROM jobs
                WHERE (status = 'queued' OR (status = 'running' AND lease_expires_at <= ?1))
                  AND (?2 IS NULL OR required_memory_bytes IS NULL OR required_memory_bytes <= ?2)
                ORDER BY seq LIMIT 1
                """, [.integer(now), memoryBudgetBytes.map { .integer($0) } ?? .null])
            guard let id = next.first?.column("id")?.string else { return nil }
            _ = try await query(
                """
                UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_owner = ?1, lease_expires_at = ?2,
                    started_at = COALESCE(started_at, ?3)
                WHERE id = ?4
                """,
                [.text(workerID), .integer(now + Self.milliseconds(leaseSeconds)), .integer(now), .text(id)])
            return try await fetch(id: id)
        }
    }

    public func heartbeat(id: String, attempt: Int, workerID: String, leaseSeconds: Double,
                          progress: JobProgress?) async throws -> Bool {
        try await serialized {
            let renewed = try await query(
                """
                UPDATE jobs SET lease_expires_at = ?1,
                    phase = COALESCE(?2, phase), step = COALESCE(?3, step), total_steps = COALESCE(?4, total_steps),
                    progress = COALESCE(?5, progress), eta_s = COALESCE(?6, eta_s)
                WHERE id = ?7 AND attempt = ?8 AND lease_owner = ?9 AND status = 'running'
                RETURNING id
                """,
                [.integer(now() + Self.milliseconds(leaseSeconds)),
                 progress?.phase.map { .text($0.rawValue) } ?? .null,
                 progress?.step.map { .integer($0) } ?? .null,
                 progress?.totalSteps.map { .integer($0) } ?? .null,
                 progress?.progress.map { .float($0) } ?? .null,
                 progress?.etaSeconds.map { .float($0) } ?? .null,
                 .text(id), .integer(attempt), .text(workerID)])
            return !renewed.isEmpty
        }
    }

    public func complete(id: String, attempt: Int, outcome: JobCompletion) async throws -> Bool {
        let status: JobStatus
        var error: String?
        switch outcome {
        case .succeeded: status = .succeeded
        case .failed(let message): status = .failed; error = message
        case .cancelled: status = .cancelled
        }
        return try await serialized {
            let finished = try await query(
                """
                UPDATE jobs SET status = ?1, error = ?2, finished_at = ?3, lease_owner = NULL, lease_expires_at = NULL,
                    progress = CASE WHEN ?1 = 'succeeded' THEN 1.0 ELSE progress END
                WHERE id = ?4 AND attempt = ?5 AND status = 'running'
                RETURNING id
                """,
                [.text(status.rawValue), error.map { .text($0) } ?? .null, .integer(now()), .text(id), .integer(attempt)])
            return !finished.isEmpty
        }
    }

    public func release(id: String, attempt: Int) async throws -> Bool {
        try await serialized {
            let released = try await query(
                """
                UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                    phase = NULL, step = NULL, total_steps = NULL, progress = NULL, eta_s = NULL
                WHERE id = ?1 AND attempt = ?2 AND status = 'running'
                RETURNING id
                """, [.text(id), .integer(attempt)])
            return !released.isEmpty
        }
    }

    public func cancel(id: String) async throws -> CancelOutcome {
        try await transaction {
            guard let job = try await fetchIfPresent(id: id) else { return .notFound }
            switch job.status {
            case .queued:
                _ = try await query("UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?",
                                    [.integer(now()), .text(id)])
                return .cancelledAtOnce(try await fetch(id: id))
            case .running:
                _ = try await query("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", [.text(id)])
                return .willStopAtNextStep(try await fetch(id: id))
            case .succeeded, .failed, .cancelled:
                return .alreadyFinished(job)
            }
        }
    }

    public func isCancelRequested(id: String) async throws -> Bool {
        try await serialized {
            let rows = try await query("SELECT cancel_requested FROM jobs WHERE id = ?", [.text(id)])
            guard let flag = rows.first?.column("cancel_requested")?.integer else { return true }
            return flag != 0
        }
    }

    public func retry(id: String) async throws -> RetryOutcome {
        try await transaction {
            guard let job = try await fetchIfPresent(id: id) else { return .notFound }
            guard job.status.isFinished else { return .notFinished(job) }
            guard try await countQueued() < queueLimit else { return .queueFull(limit: queueLimit) }
            let newID = try await insertJob(params: job.params, seed: job.seed, idempotencyKey: nil,
                                            requestHash: nil, requiredMemoryBytes: job.requiredMemoryBytes, retryOf: job.id)
            return .created(try await fetch(id: newID))
        }
    }

    public func delete(id: String) async throws -> Job? {
        try await transaction {
            guard let job = try await fetchIfPresent(id: id) else { return nil }
            _ = try await query("DELETE FROM jobs WHERE id = ?", [.text(id)])
            return job
        }
    }

    public func queueDepth() async throws -> Int {
        try await serialized { try await countQueued() }
    }

    public func close() async throws {
        try await serialized { try await connection.close() }
    }

    public func advertise(_ worker: WorkerAdvert, aliveSeconds: Double) async throws {
        try await serialized {
            let now = now()
            _ = try await query(
                """
                INSERT INTO workers (id, host, device, free_memory_bytes, last_heartbeat, alive_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                ON CONFLICT (id) DO UPDATE SET host = ?2, device = ?3, free_memory_bytes = ?4, last_heartbeat = ?5, alive_until = ?6
                """,
                [.text(worker.id), .text(worker.host), .text(worker.device), .integer(worker.freeMemoryBytes),
                 .integer(now), .integer(now + Self.milliseconds(aliveSeconds))])
            // Workers that vanished without retiring are forgotten after a day.
            _ = try await query("DELETE FROM workers WHERE alive_until < ?", [.integer(now - 86_400_000)])
        }
    }

    public func retire(workerID: String) async throws {
        try await serialized { _ = try await query("DELETE FROM workers WHERE id = ?", [.text(workerID)]) }
    }

    public func workers() async throws -> [WorkerRecord] {
        try await serialized {
            let rows = try await query(
                """
                SELECT id, host, device, free_memory_bytes, last_heartbeat, alive_until,
                    (SELECT jobs.id FROM jobs WHERE jobs.status = 'running' AND jobs.lease_owner = workers.id ORDER BY seq LIMIT 1) AS current_job
                FROM workers WHERE alive_until > ? ORDER BY id
                """, [.integer(now())])
            return rows.compactMap { row in
                guard let id = row.column("id")?.string, let host = row.column("host")?.string, let device = row.column("device")?.string,
                      let free = row.column("free_memory_bytes")?.integer, let last = Self.date(row, "last_heartbeat"),
                      let alive = Self.date(row, "alive_until") else { return nil }
                let current = row.column("current_job").flatMap { $0.isNull ? nil : $0.string }
                return WorkerRecord(advert: WorkerAdvert(id: id, host: host, device: device, freeMemoryBytes: free),
                                    lastHeartbeat: last, aliveUntil: alive, currentJob: current)
            }
        }
    }

    /// Runs one raw statement on the store's connection, outside any transaction (tests use it to
    /// fabricate databases the public API cannot produce).
    func execute(_ sql: String) async throws {
        try await serialized { _ = try await query(sql) }
    }

    // MARK: - Statements

    /// The columns a `Job` is read from; `queue_position` counts queued jobs submitted no later than this one.
    private static let jobColumns = """
        seq, id, status, params, seed, idempotency_key, request_hash, attempt, lease_owner, lease_expires_at,
        cancel_requested, phase, step, total_steps, progress, eta_s, error, retry_of, created_at, started_at,
        finished_at, required_memory_bytes,
        CASE WHEN status = 'queued'
            THEN (SELECT COUNT(*) FROM jobs AS ahead WHERE ahead.status = 'queued' AND ahead.seq <= jobs.seq)
        END AS queue_position
        """

    private func insertJob(params: String, seed: UInt64, idempotencyKey: String?, requestHash: String?,
                           requiredMemoryBytes: Int?, retryOf: String?) async throws -> String {
        let id = UUID().uuidString.lowercased()
        _ = try await query(
            """
            INSERT INTO jobs (id, status, params, seed, idempotency_key, request_hash, retry_of, created_at, required_memory_bytes)
            VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)
            """,
            [.text(id), .text(params), .integer(Int(Int64(bitPattern: seed))),
             idempotencyKey.map { .text($0) } ?? .null, requestHash.map { .text($0) } ?? .null,
             retryOf.map { .text($0) } ?? .null, .integer(now()), requiredMemoryBytes.map { .integer($0) } ?? .null])
        return id
    }

    private func countQueued() async throws -> Int {
        let rows = try await query("SELECT COUNT(*) AS depth FROM jobs WHERE status = 'queued'")
        return rows.first?.column("depth")?.integer ?? 0
    }

    private func fetchIfPresent(id: String) async throws -> Job? {
        let rows = try await query("SELECT \(Self.jobColumns) FROM jobs WHERE id = ?", [.text(id)])
        return try rows.first.map(Self.job(from:))
    }

    /// Reads back a job this transaction has just written, so it is known to exist.
    private func fetch(id: String) async throws -> Job {
        guard let job = try await fetchIfPresent(id: id) else {
            throw JobStoreError.corruptRow(jobID: id, column: "id")
        }
        return job
    }

    // MARK: - Connection discipline

    private func serialized<T>(_ body: () async throws -> T) async throws -> T {
        await gate.enter()
        do {
            let result = try await body()
            await gate.leave()
            return result
        } catch {
            await gate.leave()
            throw error
        }
    }

    /// Runs `body` as one write transaction; `BEGIN IMMEDIATE` takes the write lock up front, so two
    /// connections never both read a state and then both act on it.
    private func transaction<T>(_ body: () async throws -> T) async throws -> T {
        try await serialized {
            _ = try await query("BEGIN IMMEDIATE")
            do {
                let result = try await body()
                _ = try await query("COMMIT")
                return result
            } catch {
                _ = try? await query("ROLLBACK")
                throw error
            }
        }
    }

    private func query(_ sql: String, _ binds: [SQLiteData] = []) async throws -> [SQLiteRow] {
        do {
            return try await connection.query(sql, binds)
        } catch let error as SQLiteError {
            throw JobStoreError.database(path: path, message: "\(error)")
        }
    }

    // MARK: - Encoding

    private func now() -> Int {
        Self.milliseconds(clock().timeIntervalSince1970)
    }

    private static func milliseconds(_ seconds: Double) -> Int {
        Int((seconds * 1000).rounded())
    }

    private static func date(_ row: SQLiteRow, _ column: String) -> Date? {
        row.column(column)?.integer.map { Date(timeIntervalSince1970: Double($0) / 1000) }
    }

    private static func job(from row: SQLiteRow) throws -> Job {
        let id = row.column("id")?.string ?? "?"
        func required<T>(_ column: String, _ read: (SQLiteData) -> T?) throws -> T {
            guard let data = row.column(column), let value = read(data) else {
                throw JobStoreError.corruptRow(jobID: id, column: column)
            }
            return value
        }
        func optional<T>(_ column: String, _ read: (SQLiteData) -> T?) -> T? {
            guard let data = row.column(column), !data.isNull else { return nil }
            return read(data)
        }
        let phase: JobPhase? = try optional("phase", \.string).map {
            guard let phase = JobPhase(rawValue: $0) else { throw JobStoreError.corruptRow(jobID: id, column: "phase") }
            return phase
        }
        return Job(
            id: id,
            status: try required("status") { $0.string.flatMap(JobStatus.init(rawValue:)) },
            params: try required("params", \.string),
            seed: UInt64(bitPattern: Int64(try required("seed", \.integer))),
            idempotencyKey: optional("idempotency_key", \.string),
            requestHash: optional("request_hash", \.string),
            attempt: try required("attempt", \.integer),
            leaseOwner: optional("lease_owner", \.string),
            leaseExpiresAt: date(row, "lease_expires_at"),
            cancelRequested: try required("cancel_requested", \.integer) != 0,
            progress: JobProgress(phase: phase, step: optional("step", \.integer),
                                  totalSteps: optional("total_steps", \.integer),
                                  progress: optional("progress", \.double), etaSeconds: optional("eta_s", \.double)),
            error: optional("error", \.string),
            requiredMemoryBytes: optional("required_memory_bytes", \.integer),
            retryOf: optional("retry_of", \.string),
            createdAt: try required("created_at") { $0.integer.map { Date(timeIntervalSince1970: Double($0) / 1000) } },
            startedAt: date(row, "started_at"),
            finishedAt: date(row, "finished_at"),
            queuePosition: optional("queue_position", \.integer))
    }
}
