import Foundation
import Logging
import PostgresNIO

/// The `JobStore` for several machines sharing one queue: a PostgreSQL database reached through a
/// postgres-nio connection pool, which reconnects by itself when the server restarts.
///
/// Same contract as `SQLiteJobStore`, kept the PostgreSQL way: `claim` picks its row with
/// `FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on or take each other's job; submissions take a
/// transaction-scoped advisory lock, so the queue limit and idempotency keys hold across API nodes; every
/// change is announced with `NOTIFY kinema_jobs`, which wakes idle workers and the event streams of every
/// API node. Times come from the database's clock (or the injected one in tests).
public final class PostgresJobStore: JobStore, @unchecked Sendable {
    /// Page sizes `list` accepts (the same as SQLite's).
    public static let allowedPageSizes = SQLiteJobStore.allowedPageSizes
    /// The channel every change is announced on; the payload is the job id, followed by ` queued` when the
    /// job has become claimable.
    static let channel = "kinema_jobs"
    /// The advisory lock key that serialises submissions (queue limit, idempotency keys).
    static let submitLockKey: Int64 = 0x6B_69_6E_65_6D_62

    /// The server, without its password.
    public let url: PostgresURL
    public let queueLimit: Int
    public let maxAttempts: Int

    let client: PostgresClient
    private let logger: Logger
    private let clock: (@Sendable () -> Date)?
    private let hub = NotificationHub()
    private let lock = NSLock()
    private var tasks: [Task<Void, Never>] = []
    private var listening = false
    private var hasListened = false

    /// Whether the LISTEN connection is up now.
    var isListening: Bool { lock.withLock { listening } }

    private init(url: PostgresURL, client: PostgresClient, queueLimit: Int, maxAttempts: Int,
                 clock: (@Sendable () -> Date)?, logger: Logger) {
        self.url = url
        self.client = client
        self.queueLimit = queueLimit
        self.maxAttempts = maxAttempts
        self.clock = clock
        self.logger = logger
    }

    /// Connects to the database at `url`, brings its schema up to date and starts listening for changes.
    /// - Parameters:
    ///   - queueLimit: queued jobs allowed before submissions are refused with `queueFull`.
    ///   - maxAttempts: claims allowed before a job whose lease keeps lapsing is failed.
    ///   - clock: the time source for leases and timestamps; nil (the default) uses the database's clock,
    ///     which every node shares.
    ///   - connectSeconds: how long to wait for the server at start-up before giving up with an error (later
    ///     outages are waited out: the pool reconnects).
    ///   - logger: where postgres-nio reports connection trouble (nil: warnings and worse to standard error).
    public static func open(url: PostgresURL, queueLimit: Int = 100, maxAttempts: Int = 3,
                            clock: (@Sendable () -> Date)? = nil, connectSeconds: Double = 15,
                            logger: Logger? = nil) async throws -> PostgresJobStore {
        let logger = logger ?? {
            var quiet = Logger(label: "kinema.postgres")
            quiet.logLevel = .warning
            return quiet
        }()
        let client = PostgresClient(configuration: url.clientConfiguration, backgroundLogger: logger)
        let store = PostgresJobStore(url: url, client: client, queueLimit: queueLimit, maxAttempts: maxAttempts,
                                     clock: clock, logger: logger)
        store.start(Task { await client.run() })
        do {
            // The pool retries a server it cannot reach forever; at start-up a wrong URL should fail instead.
            try await store.withDeadline(seconds: connectSeconds, what: "connecting") { _ = try await store.query("SELECT 1") }
            try await store.migrate()
        } catch {
            try? await store.close()
            throw error
        }
        store.start(Task { await store.listen() })
        // Notifications sent before LISTEN took effect would be missed: be listening before handing the store out.
        let deadline = Date().addingTimeInterval(10)
        while !store.isListening && Date() < deadline { try? await Task.sleep(nanoseconds: 10_000_000) }
        return store
    }

    public func migrate() async throws {
        try await transaction { connection in
            _ = try await self.query("SELECT pg_advisory_xact_lock(\(PostgresMigrations.lockKey))", on: connection)
            _ = try await self.query("CREATE TABLE IF NOT EXISTS kinema_schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)", on: connection)
            let applied = try await self.query("SELECT COALESCE(MAX(version), 0) AS version FROM kinema_schema_migrations", on: connection)
            let current = try applied.first?.decode(Int.self) ?? 0
            guard current <= PostgresMigrations.latestVersion else {
                throw JobStoreError.newerSchema(path: self.url.description, found: current, supported: PostgresMigrations.latestVersion)
            }
            let now = try await self.now(on: connection)
            for step in PostgresMigrations.steps where step.version > current {
                for statement in step.statements {
                    _ = try await self.query(PostgresQuery(unsafeSQL: statement), on: connection)
                }
                _ = try await self.query("INSERT INTO kinema_schema_migrations (version, applied_at) VALUES (\(step.version), \(now))", on: connection)
            }
        }
    }

    public func submit(params: String, seed: UInt64, idempotencyKey: String?, requestHash: String?,
                       requiredMemoryBytes: Int?) async throws -> SubmitOutcome {
        try await transaction { connection in
            _ = try await self.query("SELECT pg_advisory_xact_lock(\(Self.submitLockKey))", on: connection)
            if let idempotencyKey {
                let earlier = try await self.query("SELECT \(unescaped: Self.jobColumns) FROM kinema_jobs WHERE idempotency_key = \(idempotencyKey)", on: connection)
                if let row = earlier.first {
                    let job = try Self.job(from: row)
                    return job.requestHash == requestHash ? .replayed(job) : .conflict(existing: job)
                }
            }
            guard try await self.countQueued(on: connection) < self.queueLimit else { return .queueFull(limit: self.queueLimit) }
            let id = try await self.insertJob(params: params, seed: seed, idempotencyKey: idempotencyKey, requestHash: requestHash,
                                              requiredMemoryBytes: requiredMemoryBytes, retryOf: nil, on: connection)
            return .created(try await self.fetch(id: id, on: connection))
        }
    }

    public func get(id: String) async throws -> Job? {
        try await connection { try await self.fetchIfPresent(id: id, on: $0) }
    }

    public func list(status: JobStatus?, cursor: String?, limit: Int) async throws -> JobPage {
        guard Self.allowedPageSizes.contains(limit) else {
            throw JobStoreError.invalidLimit(limit, allowed: Self.allowedPageSizes)
        }
        let before = try cursor.map(JobCursor.sequence(fromCursor:))
        return try await connection { connection in
            // One row more than asked tells whether another page follows.
            let rows = try await self.query("""
                SELECT \(unescaped: Self.jobColumns) FROM kinema_jobs
                WHERE (\(status?.rawValue)::text IS NULL OR status = \(status?.rawValue)::text)
                  AND (\(before)::bigint IS NULL OR seq < \(before)::bigint)
                ORDER BY seq DESC LIMIT \(limit + 1)
                """, on: connection)
            let jobs = try rows.prefix(limit).map(Self.job(from:))
            let last = rows.count > limit ? try rows[limit - 1].makeRandomAccess()["seq"].decode(Int.self) : nil
            return JobPage(jobs: jobs, nextCursor: last.map(JobCursor.cursor(forSequence:)))
        }
    }

    public func claim(workerID: String, leaseSeconds: Double, memoryBudgetBytes: Int?) async throws -> Job? {
        let budget = memoryBudgetBytes.map(Int64.init)
        return try await transaction { connection in
            let now = try await self.now(on: connection)
            // A job whose worker vanished after a cancel was asked for is cancelled, not run again; one that has
            // lost its worker `maxAttempts` times probably kills workers, so it fails. Rows another claim holds are
            // skipped: that claim does the same.
            _ = try await self.query("""
                UPDATE kinema_jobs SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END,
                    error = CASE WHEN cancel_requested THEN error ELSE
                        'its worker stopped reporting on each of ' || attempt || ' attempts; the job may be crashing the worker: see the server log' END,
                    finished_at = \(now), lease_owner = NULL, lease_expires_at = NULL
                WHERE seq IN (SELECT seq FROM kinema_jobs
                              WHERE status = 'running' AND lease_expires_at <= \(now) AND (cancel_requested OR attempt >= \(self.maxAttempts))
                              FOR UPDATE SKIP LOCKED)
                """, on: connection)
            let claimed = try await self.query("""
                UPDATE kinema_jobs SET status = 'running', attempt = attempt + 1, lease_owner = \(workerID),
                    lease_expires_at = \(now + Self.milliseconds(leaseSeconds)), started_at = COALESCE(started_at, \(now))
                WHERE seq = (SELECT seq FROM kinema_jobs
                             WHERE (status = 'queued' OR (status = 'running' AND lease_expires_at <= \(now)))
                               AND (\(budget)::bigint IS NULL OR required_memory_bytes IS NULL OR required_memory_bytes <= \(budget)::bigint)
                             ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
                RETURNING id
                """, on: connection)
            guard let id = try claimed.first?.decode(String.self) else { return nil }
            try await self.notify(id, on: connection)
            return try await self.fetch(id: id, on: connection)
        }
    }

    public func heartbeat(id: String, attempt: Int, workerID: String, leaseSeconds: Double, progress: JobProgress?) async throws -> Bool {
        try await connection { connection in
            let now = try await self.now(on: connection)
            let renewed = try await self.query("""
                UPDATE kinema_jobs SET lease_expires_at = \(now + Self.milliseconds(leaseSeconds)),
                    phase = COALESCE(\(progress?.phase?.rawValue)::text, phase),
                    step = COALESCE(\(progress?.step)::bigint, step),
                    total_steps = COALESCE(\(progress?.totalSteps)::bigint, total_steps),
                    progress = COALESCE(\(progress?.progress)::double precision, progress),
                    eta_s = COALESCE(\(progress?.etaSeconds)::double precision, eta_s)
                WHERE id = \(id) AND attempt = \(attempt) AND lease_owner = \(workerID) AND status = 'running'
                RETURNING pg_notify(\(Self.channel), id)
                """, on: connection)
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
        return try await connection { connection in
            let now = try await self.now(on: connection)
            let finished = try await self.query("""
                UPDATE kinema_jobs SET status = \(status.rawValue), error = \(error), finished_at = \(now),
                    lease_owner = NULL, lease_expires_at = NULL,
                    progress = CASE WHEN \(status.rawValue) = 'succeeded' THEN 1.0 ELSE progress END
                WHERE id = \(id) AND attempt = \(attempt) AND status = 'running'
                RETURNING pg_notify(\(Self.channel), id)
                """, on: connection)
            return !finished.isEmpty
        }
    }

    public func release(id: String, attempt: Int) async throws -> Bool {
        try await connection { connection in
            let released = try await self.query("""
                UPDATE kinema_jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                    phase = NULL, step = NULL, total_steps = NULL, progress = NULL, eta_s = NULL
                WHERE id = \(id) AND attempt = \(attempt) AND status = 'running'
                RETURNING pg_notify(\(Self.channel), id || ' queued')
                """, on: connection)
            return !released.isEmpty
        }
    }

    public func cancel(id: String) async throws -> CancelOutcome {
        try await transaction { connection in
            guard let job = try await self.fetchIfPresent(id: id, forUpdate: true, on: connection) else { return .notFound }
            switch job.status {
            case .queued:
                let now = try await self.now(on: connection)
                _ = try await self.query("UPDATE kinema_jobs SET status = 'cancelled', finished_at = \(now) WHERE id = \(id)", on: connection)
                try await self.notify(id, on: connection)
                return .cancelledAtOnce(try await self.fetch(id: id, on: connection))
            case .running:
                _ = try await self.query("UPDATE kinema_jobs SET cancel_requested = TRUE WHERE id = \(id)", on: connection)
                try await self.notify(id, on: connection)
                return .willStopAtNextStep(try await self.fetch(id: id, on: connection))
            case .succeeded, .failed, .cancelled:
                return .alreadyFinished(job)
            }
        }
    }

    public func isCancelRequested(id: String) async throws -> Bool {
        try await connection { connection in
            let rows = try await self.query("SELECT cancel_requested FROM kinema_jobs WHERE id = \(id)", on: connection)
            guard let flag = try rows.first?.decode(Bool.self) else { return true }
            return flag
        }
    }

    public func retry(id: String) async throws -> RetryOutcome {
        try await transaction { connection in
            _ = try await self.query("SELECT pg_advisory_xact_lock(\(Self.submitLockKey))", on: connection)
            guard let job = try await self.fetchIfPresent(id: id, on: connection) else { return .notFound }
            guard job.status.isFinished else { return .notFinished(job) }
            guard try await self.countQueued(on: connection) < self.queueLimit else { return .queueFull(limit: self.queueLimit) }
            let newID = try await self.insertJob(params: job.params, seed: job.seed, idempotencyKey: nil, requestHash: nil,
                                                 requiredMemoryBytes: job.requiredMemoryBytes, retryOf: job.id, on: connection)
            return .created(try await self.fetch(id: newID, on: connection))
        }
    }

    public func delete(id: String) async throws -> Job? {
        try await transaction { connection in
            guard let job = try await self.fetchIfPresent(id: id, forUpdate: true, on: connection) else { return nil }
            _ = try await self.query("DELETE FROM kinema_jobs WHERE id = \(id)", on: connection)
            try await self.notify(id, on: connection)
            return job
        }
    }

    public func queueDepth() async throws -> Int {
        try await connection { try await self.countQueued(on: $0) }
    }

    public func advertise(_ worker: WorkerAdvert, aliveSeconds: Double) async throws {
        try await connection { connection in
            let now = try await self.now(on: connection)
            _ = try await self.query("""
                INSERT INTO kinema_workers (id, host, device, free_memory_bytes, last_heartbeat, alive_until)
                VALUES (\(worker.id), \(worker.host), \(worker.device), \(Int64(worker.freeMemoryBytes)), \(now), \(now + Self.milliseconds(aliveSeconds)))
                ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, device = EXCLUDED.device,
                    free_memory_bytes = EXCLUDED.free_memory_bytes, last_heartbeat = EXCLUDED.last_heartbeat, alive_until = EXCLUDED.alive_until
                """, on: connection)
            // Workers that vanished without retiring are forgotten after a day.
            _ = try await self.query("DELETE FROM kinema_workers WHERE alive_until < \(now - 86_400_000)", on: connection)
        }
    }

    public func retire(workerID: String) async throws {
        try await connection { _ = try await self.query("DELETE FROM kinema_workers WHERE id = \(workerID)", on: $0) }
    }

    public func workers() async throws -> [WorkerRecord] {
        try await connection { connection in
            let now = try await self.now(on: connection)
            let rows = try await self.query("""
                SELECT id, host, device, free_memory_bytes, last_heartbeat, alive_until,
                    (SELECT j.id FROM kinema_jobs AS j WHERE j.status = 'running' AND j.lease_owner = kinema_workers.id ORDER BY j.seq LIMIT 1)
                        AS current_job
                FROM kinema_workers WHERE alive_until > \(now) ORDER BY id
                """, on: connection)
            return try rows.map { row in
                let (id, host, device, free, last, alive, current) = try row.decode((String, String, String, Int64, Int64, Int64, String?).self)
                return WorkerRecord(advert: WorkerAdvert(id: id, host: host, device: device, freeMemoryBytes: Int(free)),
                                    lastHeartbeat: Date(timeIntervalSince1970: Double(last) / 1000),
                                    aliveUntil: Date(timeIntervalSince1970: Double(alive) / 1000), currentJob: current)
            }
        }
    }

    public func close() async throws {
        let running = lock.withLock {
            defer { tasks.removeAll() }
            return tasks
        }
        running.forEach { $0.cancel() }
        hub.postAll()
    }

    public var announcesChanges: Bool { true }

    public func waitForWork(timeout: Double) async {
        await hub.wait(for: NotificationHub.work, timeout: timeout)
    }

    @discardableResult
    public func waitForChange(of id: String, timeout: Double) async -> Bool {
        await hub.wait(for: id, timeout: timeout)
    }

    /// Runs one raw statement (tests use it to fabricate databases the public API cannot produce).
    func execute(_ sql: String) async throws {
        try await connection { _ = try await self.query(PostgresQuery(unsafeSQL: sql), on: $0) }
    }

    // MARK: - Notifications

    /// Listens on `kinema_jobs` for the store's lifetime, reconnecting when the connection drops. Waiters are
    /// all woken after each reconnection, since notifications sent meanwhile were lost.
    private func listen() async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: Self.channel) { notifications in
                        let reconnected = self.lock.withLock {
                            defer { (self.listening, self.hasListened) = (true, true) }
                            return self.hasListened
                        }
                        if reconnected { self.hub.postAll() }
                        for try await notification in notifications {
                            let parts = notification.payload.split(separator: " ")
                            guard let id = parts.first else { continue }
                            self.hub.post(String(id))
                            if parts.count > 1 { self.hub.post(NotificationHub.work) }
                        }
                    }
                }
            } catch {
                lock.withLock { listening = false }
                if Task.isCancelled { break }
                logger.debug("listening for job changes stopped (\(Self.describe(error))); listening again")
            }
            try? await Task.sleep(nanoseconds: 500_000_000)
        }
    }

    private func notify(_ id: String, queued: Bool = false, on connection: PostgresConnection) async throws {
        let payload = queued ? "\(id) queued" : id
        _ = try await query("SELECT pg_notify(\(Self.channel), \(payload))", on: connection)
    }

    private func start(_ task: Task<Void, Never>) {
        lock.withLock { tasks.append(task) }
    }

    // MARK: - Statements

    /// The columns a `Job` is read from; `queue_position` counts queued jobs submitted no later than this one.
    private static let jobColumns = """
        seq, id, status, params, seed, idempotency_key, request_hash, attempt, lease_owner, lease_expires_at,
        cancel_requested, phase, step, total_steps, progress, eta_s, error, retry_of, created_at, started_at,
        finished_at, required_memory_bytes,
        CASE WHEN status = 'queued'
            THEN (SELECT COUNT(*) FROM kinema_jobs AS ahead WHERE ahead.status = 'queued' AND ahead.seq <= kinema_jobs.seq)
        END AS queue_position
        """

    private func insertJob(params: String, seed: UInt64, idempotencyKey: String?, requestHash: String?, requiredMemoryBytes: Int?,
                           retryOf: String?, on connection: PostgresConnection) async throws -> String {
        let id = UUID().uuidString.lowercased()
        let now = try await now(on: connection)
        _ = try await query("""
            INSERT INTO kinema_jobs (id, status, params, seed, idempotency_key, request_hash, retry_of, created_at, required_memory_bytes)
            VALUES (\(id), 'queued', \(params), \(Int64(bitPattern: seed)), \(idempotencyKey), \(requestHash), \(retryOf), \(now),
                    \(requiredMemoryBytes.map(Int64.init))::bigint)
            """, on: connection)
        try await notify(id, queued: true, on: connection)
        return id
    }

    private func countQueued(on connection: PostgresConnection) async throws -> Int {
        let rows = try await query("SELECT COUNT(*) FROM kinema_jobs WHERE status = 'queued'", on: connection)
        return try rows.first?.decode(Int.self) ?? 0
    }

    private func fetchIfPresent(id: String, forUpdate: Bool = false, on connection: PostgresConnection) async throws -> Job? {
        let rows = try await query("SELECT \(unescaped: Self.jobColumns) FROM kinema_jobs WHERE id = \(id)\(unescaped: forUpdate ? " FOR UPDATE" : "")",
                                   on: connection)
        return try rows.first.map(Self.job(from:))
    }

    /// Reads back a job this transaction has just written, so it is known to exist.
    private func fetch(id: String, on connection: PostgresConnection) async throws -> Job {
        guard let job = try await fetchIfPresent(id: id, on: connection) else { throw JobStoreError.corruptRow(jobID: id, column: "id") }
        return job
    }

    // MARK: - Connection discipline

    private func now(on connection: PostgresConnection) async throws -> Int64 {
        if let clock { return Self.milliseconds(clock().timeIntervalSince1970) }
        let rows = try await query("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint", on: connection)
        return try rows.first?.decode(Int64.self) ?? Self.milliseconds(Date().timeIntervalSince1970)
    }

    /// Runs `body` on one pooled connection inside `BEGIN ... COMMIT` (rolled back when it throws).
    func transaction<T: Sendable>(_ body: @escaping (PostgresConnection) async throws -> T) async throws -> T {
        try await mapErrors {
            try await self.client.withConnection { connection in
                _ = try await connection.query("BEGIN", logger: self.logger)
                do {
                    let result = try await body(connection)
                    _ = try await connection.query("COMMIT", logger: self.logger)
                    return result
                } catch {
                    _ = try? await connection.query("ROLLBACK", logger: self.logger)
                    throw error
                }
            }
        }
    }

    /// Runs `body` on one pooled connection, each statement its own transaction.
    func connection<T: Sendable>(_ body: @escaping (PostgresConnection) async throws -> T) async throws -> T {
        try await mapErrors { try await self.client.withConnection { try await body($0) } }
    }

    func query(_ query: PostgresQuery, on connection: PostgresConnection) async throws -> [PostgresRow] {
        var rows: [PostgresRow] = []
        for try await row in try await connection.query(query, logger: logger) { rows.append(row) }
        return rows
    }

    private func query(_ query: PostgresQuery) async throws -> [PostgresRow] {
        try await connection { try await self.query(query, on: $0) }
    }

    private func mapErrors<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as JobStoreError { throw error } catch {
            throw JobStoreError.database(path: url.description, message: Self.describe(error))
        }
    }

    /// Fails with a clear message when `body` takes longer than `seconds`.
    private func withDeadline(seconds: Double, what: String, _ body: @escaping @Sendable () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask { try await body(); return true }
            group.addTask { try await Task.sleep(nanoseconds: UInt64(seconds * 1e9)); return false }
            let finished = try await group.next() ?? false
            group.cancelAll()
            guard finished else {
                throw JobStoreError.database(path: url.description, message: "\(what) took more than \(Int(seconds)) s: is the server running, and does the URL name it?")
            }
        }
    }

    /// A PostgreSQL error as the server worded it (postgres-nio's own description hides it).
    static func describe(_ error: Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let message = error.serverInfo?[.message] {
            return "\(message) (SQLSTATE \(error.serverInfo?[.sqlState] ?? "?"))"
        }
        if let underlying = error.underlying { return "\(error.code): \(underlying)" }
        return "\(error.code)"
    }

    // MARK: - Encoding

    private static func milliseconds(_ seconds: Double) -> Int64 {
        Int64((seconds * 1000).rounded())
    }

    private static func job(from row: PostgresRow) throws -> Job {
        let columns = row.makeRandomAccess()
        let id = (try? columns["id"].decode(String.self)) ?? "?"
        func read<T: PostgresDecodable>(_ column: String, _ type: T.Type) throws -> T {
            do { return try columns[column].decode(T.self) } catch { throw JobStoreError.corruptRow(jobID: id, column: column) }
        }
        func date(_ column: String) throws -> Date? {
            try read(column, Int64?.self).map { Date(timeIntervalSince1970: Double($0) / 1000) }
        }
        let phase: JobPhase? = try read("phase", String?.self).map {
            guard let phase = JobPhase(rawValue: $0) else { throw JobStoreError.corruptRow(jobID: id, column: "phase") }
            return phase
        }
        guard let status = JobStatus(rawValue: try read("status", String.self)) else { throw JobStoreError.corruptRow(jobID: id, column: "status") }
        guard let createdAt = try date("created_at") else { throw JobStoreError.corruptRow(jobID: id, column: "created_at") }
        return Job(
            id: id,
            status: status,
            params: try read("params", String.self),
            seed: UInt64(bitPattern: try read("seed", Int64.self)),
            idempotencyKey: try read("idempotency_key", String?.self),
            requestHash: try read("request_hash", String?.self),
            attempt: try read("attempt", Int.self),
            leaseOwner: try read("lease_owner", String?.self),
            leaseExpiresAt: try date("lease_expires_at"),
            cancelRequested: try read("cancel_requested", Bool.self),
            progress: JobProgress(phase: phase, step: try read("step", Int?.self), totalSteps: try read("total_steps", Int?.self),
                                  progress: try read("progress", Double?.self), etaSeconds: try read("eta_s", Double?.self)),
            error: try read("error", String?.self),
            requiredMemoryBytes: try read("required_memory_bytes", Int?.self),
            retryOf: try read("retry_of", String?.self),
            createdAt: createdAt,
            startedAt: try date("started_at"),
            finishedAt: try date("finished_at"),
            queuePosition: try read("queue_position", Int?.self))
    }
}
