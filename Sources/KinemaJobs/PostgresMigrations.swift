/// The PostgreSQL schema as numbered steps, the counterpart of `JobStoreMigrations`. Every table is prefixed
/// `kinema_` so the queue can live in a database that holds other things. Steps are applied under an advisory
/// lock, one node at a time, since several nodes may start together on an empty database.
enum PostgresMigrations {
    /// The advisory lock key that serialises migrations ("kinema" in ASCII, as a number).
    static let lockKey: Int64 = 0x6B_69_6E_65_6D_61

    static let steps: [JobStoreMigrations.Step] = [
        .init(version: 1, statements: [
            // Times are milliseconds since 1970, as in the SQLite store, taken from the database's clock so
            // that workers on several machines agree on when a lease lapses.
            """
            CREATE TABLE kinema_jobs (
                seq BIGSERIAL PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
                params TEXT NOT NULL,
                seed BIGINT NOT NULL,
                idempotency_key TEXT UNIQUE,
                request_hash TEXT,
                attempt BIGINT NOT NULL DEFAULT 0,
                lease_owner TEXT,
                lease_expires_at BIGINT,
                cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
                phase TEXT,
                step BIGINT,
                total_steps BIGINT,
                progress DOUBLE PRECISION,
                eta_s DOUBLE PRECISION,
                error TEXT,
                retry_of TEXT,
                created_at BIGINT NOT NULL,
                started_at BIGINT,
                finished_at BIGINT
            )
            """,
            "CREATE INDEX kinema_jobs_by_status ON kinema_jobs (status, seq)",
        ]),
        .init(version: 2, statements: [
            // Uploads and outputs, for nodes that share no file system; `key` is a path such as
            // `uploads/<sha256>` or `outputs/<job id>/video.mp4`.
            """
            CREATE TABLE kinema_blobs (
                key TEXT PRIMARY KEY,
                content_type TEXT NOT NULL,
                bytes BYTEA NOT NULL,
                created_at BIGINT NOT NULL
            )
            """,
        ]),
        .init(version: 3, statements: [
            // Placement by memory: a job's smallest budget, and the workers' adverts (times in milliseconds,
            // from the database's clock).
            "ALTER TABLE kinema_jobs ADD COLUMN required_memory_bytes BIGINT",
            """
            CREATE TABLE kinema_workers (
                id TEXT PRIMARY KEY,
                host TEXT NOT NULL,
                device TEXT NOT NULL,
                free_memory_bytes BIGINT NOT NULL,
                last_heartbeat BIGINT NOT NULL,
                alive_until BIGINT NOT NULL
            )
            """,
        ]),
    ]

    static var latestVersion: Int { steps.last?.version ?? 0 }
}
