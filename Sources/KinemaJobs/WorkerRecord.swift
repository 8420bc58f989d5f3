import Foundation

/// What a worker tells the store about itself on each of its heartbeats, so API nodes can place jobs by memory
/// and show operators which workers are alive.
public struct WorkerAdvert: Sendable, Equatable {
    /// The worker's name in leases (`Job.leaseOwner`).
    public var id: String
    /// The machine it runs on.
    public var host: String
    /// The device it generates on, as `--device` spells it (`cpu`, `cuda:0`).
    public var device: String
    /// The most memory one generation may plan for on this worker now: its budget, or the device's free
    /// memory less the headroom. Jobs whose smallest plan needs more are left for other workers.
    public var freeMemoryBytes: Int

    /// A worker's report of itself.
    public init(id: String, host: String, device: String, freeMemoryBytes: Int) {
        self.id = id
        self.host = host
        self.device = device
        self.freeMemoryBytes = freeMemoryBytes
    }
}

/// A worker as the store knows it: its last advert, when it came and the job it holds.
public struct WorkerRecord: Sendable, Equatable {
    /// The worker's last advert.
    public var advert: WorkerAdvert
    /// When the worker last advertised itself.
    public var lastHeartbeat: Date
    /// Until when the worker counts as alive without another advert.
    public var aliveUntil: Date
    /// The job the worker holds a lease on, if any.
    public var currentJob: String?

    /// A stored worker.
    public init(advert: WorkerAdvert, lastHeartbeat: Date, aliveUntil: Date, currentJob: String?) {
        self.advert = advert
        self.lastHeartbeat = lastHeartbeat
        self.aliveUntil = aliveUntil
        self.currentJob = currentJob
    }
}
