/// The SQLite job schema as numbered steps. A database records the steps it has had in `schema_migrations`;
/// opening it applies the missing ones in order. Steps are never edited once released: a change is a new step.
enum JobStoreMigrations {
    /// One schema step: its version number and the statements that make it.
    struct Step {
        let version: Int
        let statements: [String]
    }

    static let steps: [Step] = [
        Step(version: 1, statements: [
            // `seq` orders jobs (submission order) and backs history cursors; `id` is the public name.
            """
            CREATE TABLE jobs (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
                params TEXT NOT NULL,
                seed INTEGER NOT NULL,
                idempotency_key TEXT UNIQUE,
                request_hash TEXT,
                attempt INTEGER NOT NULL DEFAULT 0,
                lease_owner TEXT,
                lease_expires_at INTEGER,
                cancel_requested INTEGER NOT NULL DEFAULT 0,
                phase TEXT,
                step INTEGER,
                total_steps INTEGER,
                progress REAL,
                eta_s REAL,
                error TEXT,
                retry_of TEXT,
                created_at INTEGER NOT NULL,
                started_at INTEGER,
                finished_at INTEGER
            )
            """,
            "CREATE INDEX jobs_by_status ON jobs (status, seq)",
        ]),
        Step(version: 2, statements: [
            // Placement by memory: a job's smallest budget, and the workers' adverts (times in milliseconds).
            "ALTER TABLE jobs ADD COLUMN required_memory_bytes INTEGER",
            """
            CREATE TABLE workers (
                id TEXT PRIMARY KEY,
                host TEXT NOT NULL,
                device TEXT NOT NULL,
                free_memory_bytes INTEGER NOT NULL,
                last_heartbeat INTEGER NOT NULL,
                alive_until INTEGER NOT NULL
            )
            """,
        ]),
    ]

    /// The newest schema version this build knows.
    static var latestVersion: Int { steps.last?.version ?? 0 }
}
