import Foundation

/// Where a job is in its life. `queued` and `running` are live; the other three are final.
public enum JobStatus: String, Sendable, Codable, CaseIterable {
    /// Accepted and waiting for a worker.
    case queued
    /// Claimed by a worker that holds a lease on it.
    case running
    /// Finished with its outputs written.
    case succeeded
    /// Finished with an error message.
    case failed
    /// Stopped on request, before or during its run.
    case cancelled

    /// Whether the job can no longer change status (a retry makes a new job instead).
    public var isFinished: Bool {
        switch self {
        case .queued, .running: return false
        case .succeeded, .failed, .cancelled: return true
        }
    }
}

/// The stage of the image-to-video pipeline a running job is in, as reported by its worker.
public enum JobPhase: String, Sendable, Codable, CaseIterable {
    /// Encoding the image and the prompts.
    case encode
    /// The denoising loop; `step` counts its steps.
    case denoise
    /// Decoding latents to frames with the VAE.
    case decode
    /// Writing the video and previews.
    case encodeVideo = "encode_video"
}

/// A worker's report of how far its job has come, stored with each heartbeat.
public struct JobProgress: Sendable, Equatable, Codable {
    /// The pipeline stage, or nil before the first report.
    public var phase: JobPhase?
    /// Steps done in the denoising loop.
    public var step: Int?
    /// Steps the denoising loop will take in all.
    public var totalSteps: Int?
    /// Fraction of the whole job done, 0...1.
    public var progress: Double?
    /// Predicted seconds until the job finishes.
    public var etaSeconds: Double?

    /// A progress report; every field is optional so a worker can report only what it knows.
    public init(phase: JobPhase? = nil, step: Int? = nil, totalSteps: Int? = nil,
                progress: Double? = nil, etaSeconds: Double? = nil) {
        self.phase = phase
        self.step = step
        self.totalSteps = totalSteps
        self.progress = progress
        self.etaSeconds = etaSeconds
    }
}

/// One job as stored: what was asked, who runs it, how far it came and how it ended.
public struct Job: Sendable, Equatable {
    /// A lowercase UUID string, the job's public identifier.
    public var id: String
    /// Where the job is in its life.
    public var status: JobStatus
    /// The request's parameters as JSON text; the store never looks inside.
    public var params: String
    /// The generator seed, resolved at submission so a retry reproduces the video.
    public var seed: UInt64
    /// The client's `Idempotency-Key`, if it sent one.
    public var idempotencyKey: String?
    /// A hash of the request body sent with `idempotencyKey`, to tell a replay from a conflicting reuse of the key.
    public var requestHash: String?
    /// How many times a worker has claimed the job; a worker's writes count only while this still equals
    /// the attempt it claimed (the fencing token).
    public var attempt: Int
    /// The worker holding the lease, while running.
    public var leaseOwner: String?
    /// When the current lease lapses unless renewed by a heartbeat.
    public var leaseExpiresAt: Date?
    /// Whether a cancel arrived while the job was running; the worker stops at its next step boundary.
    public var cancelRequested: Bool
    /// The last progress the worker reported.
    public var progress: JobProgress
    /// Why the job failed, when it did.
    public var error: String?
    /// The smallest memory budget any plan of the job needs; only workers with at least this much claim it.
    public var requiredMemoryBytes: Int?
    /// The job this one retries, if it was made by `retry`.
    public var retryOf: String?
    /// When the job was accepted.
    public var createdAt: Date
    /// When a worker first claimed it.
    public var startedAt: Date?
    /// When it reached a final status.
    public var finishedAt: Date?
    /// 1 for the next job a worker will claim, counted over queued jobs only; nil when not queued.
    public var queuePosition: Int?
}
