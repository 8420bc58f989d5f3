import Foundation

/// Persistent storage of the job queue, shared by the HTTP server and the device workers.
///
/// The contract is written so that SQLite (one machine) and PostgreSQL (several machines sharing a queue)
/// can both keep it: every method is one transaction, `claim` hands each job to exactly one worker
/// (PostgreSQL: `FOR UPDATE SKIP LOCKED`), and the attempt counter returned by `claim` fences the
/// claiming worker's later writes, so a worker frozen past its lease cannot overwrite the job once another
/// worker has re-claimed it. The store never interprets `params`; it imports nothing of the engine.
public protocol JobStore: Sendable {
    /// Creates or upgrades the schema; safe to call again. Throws `JobStoreError.newerSchema` for a database
    /// written by a newer Kinema.
    func migrate() async throws

    /// Accepts a job unless the idempotency key was seen before or the queue is full.
    /// - Parameters:
    ///   - params: the request's parameters as JSON text, stored as given.
    ///   - seed: the generator seed, already resolved by the caller.
    ///   - idempotencyKey: the client's `Idempotency-Key`, or nil.
    ///   - requestHash: a hash of the request body; with the same key, an equal hash is a replay and another
    ///     hash a conflict.
    ///   - requiredMemoryBytes: the smallest memory budget any plan of the job needs (nil: any worker will do);
    ///     `claim` hands the job only to workers whose budget is at least this.
    func submit(params: String, seed: UInt64, idempotencyKey: String?, requestHash: String?,
                requiredMemoryBytes: Int?) async throws -> SubmitOutcome

    /// The job with this id, or nil when there is none.
    func get(id: String) async throws -> Job?

    /// Jobs newest first, optionally of one status, `limit` at a time. Pass the previous page's `nextCursor`
    /// to continue; jobs submitted meanwhile do not shift later pages.
    func list(status: JobStatus?, cursor: String?, limit: Int) async throws -> JobPage

    /// Hands the oldest claimable job to `workerID` with a lease of `leaseSeconds`, incrementing its attempt.
    /// Claimable: queued, or running under a lease that lapsed (its worker is presumed dead). Returns nil
    /// when there is nothing to do.
    /// With `memoryBudgetBytes`, jobs that need more memory are skipped (left for a worker where they fit).
    func claim(workerID: String, leaseSeconds: Double, memoryBudgetBytes: Int?) async throws -> Job?

    /// Renews the lease and records progress (nil fields keep their stored values). Returns false when the
    /// worker is fenced out (another worker claimed the job since, or it was deleted or finished): the worker
    /// must stop without writing outputs. The attempt counter fences, not the clock: a worker whose lease
    /// lapsed may still renew it as long as no other worker has claimed the job.
    func heartbeat(id: String, attempt: Int, workerID: String, leaseSeconds: Double,
                   progress: JobProgress?) async throws -> Bool

    /// Records how the run of `attempt` ended. Returns false when that attempt is fenced out; the job
    /// is then left as the current holder has it.
    func complete(id: String, attempt: Int, outcome: JobCompletion) async throws -> Bool

    /// Hands a running job back to the queue (a worker shutting down gracefully): it becomes queued again,
    /// keeps its place in submission order and is taken up by the next claim. Returns false when `attempt`
    /// is fenced out, leaving the job as it is.
    func release(id: String, attempt: Int) async throws -> Bool

    /// Cancels a queued job at once, or asks its worker to stop at the next step boundary.
    func cancel(id: String) async throws -> CancelOutcome

    /// Whether the worker running this job should stop: a cancel was requested, or the job was deleted.
    func isCancelRequested(id: String) async throws -> Bool

    /// Queues a new job with the same parameters and seed as a finished one.
    func retry(id: String) async throws -> RetryOutcome

    /// Removes the job and returns it as it was (so the caller can remove its files), or nil when unknown.
    /// A worker still running it is fenced out at its next heartbeat.
    func delete(id: String) async throws -> Job?

    /// The number of queued jobs, the figure the queue limit applies to.
    func queueDepth() async throws -> Int

    /// Records a worker's advert and that it is alive for `aliveSeconds` more; workers call it on every heartbeat.
    func advertise(_ worker: WorkerAdvert, aliveSeconds: Double) async throws

    /// Forgets a worker that is stopping, so that it no longer counts for placement.
    func retire(workerID: String) async throws

    /// The workers alive now (advertised within their `aliveSeconds`), by id.
    func workers() async throws -> [WorkerRecord]

    /// Releases the store's connection; call it before dropping the store, which cannot be used afterwards.
    func close() async throws

    /// Whether `waitForWork` and `waitForChange` return as soon as another node writes (PostgreSQL's NOTIFY),
    /// rather than only at their timeout.
    var announcesChanges: Bool { get }

    /// Returns when a job may have become claimable (submitted, released or retried, by any node) or after
    /// `timeout` seconds, whichever comes first. Idle workers wait here between claims. A lapsed lease wakes
    /// nobody, so callers still claim at least every `timeout`.
    func waitForWork(timeout: Double) async

    /// Returns when the job `id` may have changed (any node's write) or after `timeout` seconds; true when a
    /// change was announced (a cached copy of the job is then stale). Event streams wait here between reads.
    @discardableResult
    func waitForChange(of id: String, timeout: Double) async -> Bool
}

extension JobStore {
    /// Submits a job that any worker can run.
    public func submit(params: String, seed: UInt64, idempotencyKey: String?, requestHash: String?) async throws -> SubmitOutcome {
        try await submit(params: params, seed: seed, idempotencyKey: idempotencyKey, requestHash: requestHash, requiredMemoryBytes: nil)
    }

    /// Claims the oldest claimable job whatever memory it needs.
    public func claim(workerID: String, leaseSeconds: Double) async throws -> Job? {
        try await claim(workerID: workerID, leaseSeconds: leaseSeconds, memoryBudgetBytes: nil)
    }

    /// Without notifications, waiting is sleeping: callers poll.
    public var announcesChanges: Bool { false }

    public func waitForWork(timeout: Double) async {
        try? await Task.sleep(nanoseconds: UInt64(max(0, timeout) * 1e9))
    }

    @discardableResult
    public func waitForChange(of id: String, timeout: Double) async -> Bool {
        try? await Task.sleep(nanoseconds: UInt64(max(0, timeout) * 1e9))
        return false
    }
}

/// What `submit` did with a request.
public enum SubmitOutcome: Sendable, Equatable {
    /// A new job was queued (answer 202).
    case created(Job)
    /// The idempotency key and body match an earlier submission: this is its job (answer as the first time).
    case replayed(Job)
    /// The idempotency key was used before with another body (answer 422); the earlier job is given.
    case conflict(existing: Job)
    /// The queue already holds `limit` jobs (answer 429).
    case queueFull(limit: Int)
}

/// How a worker's run of a job ended.
public enum JobCompletion: Sendable, Equatable {
    /// Outputs are written.
    case succeeded
    /// The run failed; `error` is the message shown to the user.
    case failed(error: String)
    /// The worker stopped at a step boundary because a cancel was requested.
    case cancelled
}

/// What `cancel` did.
public enum CancelOutcome: Sendable, Equatable {
    /// The job was queued and is now cancelled.
    case cancelledAtOnce(Job)
    /// The job is running; its worker will stop at the next step boundary.
    case willStopAtNextStep(Job)
    /// The job had already finished; nothing changed.
    case alreadyFinished(Job)
    /// No job has this id.
    case notFound
}

/// What `retry` did.
public enum RetryOutcome: Sendable, Equatable {
    /// A new job with the same parameters and seed was queued.
    case created(Job)
    /// The job is still queued or running, so there is nothing to retry yet (answer 409).
    case notFinished(Job)
    /// The queue already holds `limit` jobs (answer 429).
    case queueFull(limit: Int)
    /// No job has this id.
    case notFound
}

/// One page of job history.
public struct JobPage: Sendable, Equatable {
    /// The jobs on this page, newest first.
    public var jobs: [Job]
    /// An opaque cursor for the next page, or nil when this is the last one.
    public var nextCursor: String?

    /// A page of `jobs` followed by the page `nextCursor` points to.
    public init(jobs: [Job], nextCursor: String?) {
        self.jobs = jobs
        self.nextCursor = nextCursor
    }
}

/// The paging cursor both stores hand out: a job's submission sequence number, opaque to clients.
enum JobCursor {
    static func cursor(forSequence sequence: Int) -> String {
        Data("seq:\(sequence)".utf8).base64EncodedString()
    }

    static func sequence(fromCursor cursor: String) throws -> Int {
        guard let data = Data(base64Encoded: cursor), let text = String(data: data, encoding: .utf8),
              text.hasPrefix("seq:"), let sequence = Int(text.dropFirst(4)), sequence > 0 else {
            throw JobStoreError.invalidCursor(cursor)
        }
        return sequence
    }
}
