import Foundation
import KinemaCPU
import KinemaCore
import KinemaJobs
import KinemaPipeline
import Logging
import ServiceLifecycle

/// Shared between a running generation's thread and the task that heartbeats for it: the latest
/// progress, and whether the generation should stop (cancelled, fenced out, or the server stopping).
final class RunControl: @unchecked Sendable {
    enum Stop: Equatable { case cancelled, fenced, shutdown }

    private let lock = NSLock()
    private var stop: Stop?
    private var latest = JobProgress()
    private var phaseStarts: [String: Date] = [:]
    private var phaseSeconds: [String: Double] = [:]
    private var currentPhase: String?
    private let expected: [String: Double]
    let start = Date()

    /// `expected`: predicted seconds by phase (from earlier runs), for the ETA before a phase has a rate of its own.
    init(expected: [String: Double]) { self.expected = expected }

    var stopReason: Stop? { lock.withLock { stop } }
    func request(_ reason: Stop) { lock.withLock { if stop == nil { stop = reason } } }
    var progress: JobProgress { lock.withLock { latest } }
    var secondsByPhase: [String: Double] { lock.withLock { phaseSeconds } }

    /// Overall progress: encode 0–5 %, denoise 5–85 %, decode 85–97 %, video encoding 97–100 %.
    static let spans: [String: (Double, Double)] = [
        "encode": (0, 0.05), "denoise": (0.05, 0.85), "decode": (0.85, 0.97), "encode_video": (0.97, 1),
    ]

    func record(_ p: GenerationProgress) {
        lock.withLock {
            let now = Date()
            let phase = p.phase.rawValue
            if currentPhase != phase {
                if let currentPhase, let started = phaseStarts[currentPhase] { phaseSeconds[currentPhase] = now.timeIntervalSince(started) }
                currentPhase = phase
                phaseStarts[phase] = now
            }
            let fraction = p.totalSteps > 0 ? Double(p.step) / Double(p.totalSteps) : 0
            let span = Self.spans[phase] ?? (0, 1)
            let elapsed = now.timeIntervalSince(phaseStarts[phase] ?? now)
            // This phase's remainder from its own rate once a step is done; later phases as predicted.
            var eta = fraction > 0 ? elapsed / fraction * (1 - fraction) : (expected[phase] ?? 0)
            let order = ["encode", "denoise", "decode", "encode_video"]
            if let index = order.firstIndex(of: phase) {
                for later in order[(index + 1)...] { eta += expected[later] ?? 0 }
            }
            let known = fraction > 0 || !expected.isEmpty
            latest = JobProgress(phase: JobPhase(rawValue: phase), step: p.step, totalSteps: p.totalSteps,
                                 progress: span.0 + (span.1 - span.0) * fraction, etaSeconds: known ? eta : nil)
        }
    }

    func finishPhases() {
        lock.withLock {
            if let currentPhase, let started = phaseStarts[currentPhase] { phaseSeconds[currentPhase] = Date().timeIntervalSince(started) }
            currentPhase = nil
        }
    }
}

/// The one worker of a device: claims jobs from the store one at a time and runs each on its own thread,
/// heartbeating its lease and progress meanwhile. It advertises its device and memory budget to the store
/// while it runs and claims only jobs whose smallest plan fits that budget. On graceful shutdown the running
/// job stops at the next step boundary and goes back to the queue.
final class JobWorker: Service, @unchecked Sendable {
    let parts: ServerParts
    let logger: Logger
    let backend: CPUBackend
    /// This worker's name in leases.
    let workerID: String
    private let lock = NSLock()
    private var current: RunControl?
    private var stopping = false
    private var folders: [String: ModelFolder] = [:]
    /// The budget last advertised (and claimed with), in bytes.
    private var budget: Int?

    init(parts: ServerParts, backend: CPUBackend, logger: Logger) {
        self.parts = parts
        self.backend = backend
        self.logger = logger
        workerID = parts.configuration.resolvedWorkerID
    }

    /// How often the lease is renewed when nothing else is written.
    var heartbeatSeconds: Double { max(0.2, min(2, parts.configuration.leaseSeconds / 4)) }
    /// The shortest time between two progress writes.
    static let progressInterval = 0.4

    /// The memory this worker offers one generation, read again while it is idle (nothing of ours allocated).
    func offeredBudget() -> Int? {
        let (idle, known) = lock.withLock { (current == nil, budget) }
        guard idle || known == nil else { return known }
        do {
            let offered = try parts.planner.workerBudgetBytes()
            lock.withLock { budget = offered }
            return offered
        } catch {
            if known == nil { logger.error("this worker cannot tell how much memory it has (\(error)); pass --memory-budget") }
            return known
        }
    }

    /// Tells the store this worker is alive, with its device and memory.
    func advertise() async {
        guard let offered = offeredBudget() else { return }
        let advert = WorkerAdvert(id: workerID, host: ProcessInfo.processInfo.hostName,
                                  device: parts.configuration.device.description, freeMemoryBytes: offered)
        do {
            try await parts.store.advertise(advert, aliveSeconds: parts.configuration.leaseSeconds)
        } catch {
            logger.warning("advertising this worker failed: \(error)")
        }
    }

    func run() async throws {
        // Adverts go on while a job runs, so API nodes keep counting this worker as alive.
        await advertise()
        let adverts = Task {
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(heartbeatSeconds * 1e9))
                if Task.isCancelled { break }
                await advertise()
            }
        }
        await withGracefulShutdownHandler {
            while !lock.withLock({ stopping }) {
                do {
                    let offered = offeredBudget()
                    if let job = try await parts.store.claim(workerID: workerID, leaseSeconds: parts.configuration.leaseSeconds,
                                                             memoryBudgetBytes: offered) {
                        await runJob(job, budget: offered)
                        continue
                    }
                } catch {
                    logger.error("the worker could not claim a job: \(error)")
                }
                // Woken early by a submission on any node where the store announces them; a lapsed lease
                // announces nothing, so claims are still tried at this pace.
                await parts.store.waitForWork(timeout: parts.store.announcesChanges ? 1 : 0.25)
            }
        } onGracefulShutdown: {
            self.lock.withLock {
                self.stopping = true
                self.current?.request(.shutdown)
            }
        }
        adverts.cancel()
        await adverts.value  // an advert in flight must not bring the worker back after it retired
        try? await parts.store.retire(workerID: workerID)
        logger.info("worker stopped")
    }

    private func runJob(_ job: Job, budget: Int?) async {
        let log = logger.with(job: job.id)
        guard let record = JobRecord.decode(job.params) else {
            _ = try? await parts.store.complete(id: job.id, attempt: job.attempt, outcome: .failed(error: "the job's stored parameters are unreadable"))
            return
        }
        let params = record.params
        let control = RunControl(expected: parts.timing.expectedPhases(params))
        lock.withLock {
            current = control
            if stopping { control.request(.shutdown) }
        }
        parts.metrics.running.set(Double(1))
        defer {
            parts.metrics.running.set(Double(0))
            lock.withLock { current = nil }
        }
        log.info("running job \(job.id) attempt \(job.attempt): \(params.width)x\(params.height), \(params.frames) frames, \(params.steps) steps")

        // While the generation runs: store progress when it changes (at most every `progressInterval`), renew
        // the lease at least every `heartbeatSeconds`, and notice cancels and fencing on each write.
        let heartbeat = Task {
            var written = JobProgress()
            var lastWrite = Date.distantPast
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: 100_000_000)
                if Task.isCancelled { break }
                let progress = control.progress
                let since = Date().timeIntervalSince(lastWrite)
                guard since >= heartbeatSeconds || (progress != written && since >= Self.progressInterval) else { continue }
                do {
                    let kept = try await parts.store.heartbeat(id: job.id, attempt: job.attempt, workerID: workerID,
                                                        leaseSeconds: parts.configuration.leaseSeconds, progress: progress)
                    (written, lastWrite) = (progress, Date())
                    if !kept { control.request(.fenced) }
                    else if try await parts.store.isCancelRequested(id: job.id) { control.request(.cancelled) }
                } catch {
                    log.warning("heartbeat failed: \(error)")
                }
            }
        }
        let partial: URL
        do {
            partial = try parts.outputs.prepare(job.id, attempt: job.attempt)
            try await generate(job: job, params: params, budget: budget, into: partial, control: control)
        } catch {
            heartbeat.cancel()
            await finish(job, error: error, control: control, log: log)
            return
        }
        heartbeat.cancel()
        // Outputs go into place only while this attempt still holds the job.
        do {
            let stillHeld = try await persist("the last heartbeat of job \(job.id)") {
                try await self.parts.store.heartbeat(id: job.id, attempt: job.attempt, workerID: self.workerID,
                                                     leaseSeconds: self.parts.configuration.leaseSeconds,
                                                     progress: JobProgress(phase: .encodeVideo, step: 1, totalSteps: 1, progress: 1, etaSeconds: 0))
            }
            guard stillHeld else { throw GenerationStop.fenced }
            try await persist("publishing the outputs of job \(job.id)") { try await self.parts.outputs.publish(partial, id: job.id) }
            if try await persist("completing job \(job.id)", { try await self.parts.store.complete(id: job.id, attempt: job.attempt, outcome: .succeeded) }) {
                parts.timing.record(params, phaseSeconds: control.secondsByPhase)
                parts.metrics.generationSeconds.record(Date().timeIntervalSince(control.start))
                parts.metrics.jobFinished("succeeded")
                log.info("job \(job.id) succeeded in \(String(format: "%.1f", Date().timeIntervalSince(control.start))) s")
            }
        } catch {
            await finish(job, error: error, control: control, log: log)
        }
    }

    /// Runs a store write that settles a job, again every half second while the database cannot be reached
    /// (a PostgreSQL restart), for at most twice the lease; the attempt counter keeps a late write harmless.
    private func persist<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        let deadline = Date().addingTimeInterval(max(30, 2 * parts.configuration.leaseSeconds))
        while true {
            do { return try await body() } catch let error as JobStoreError {
                guard case .database = error, Date() < deadline else { throw error }
                logger.warning("\(what) failed, trying again: \(error)")
                try? await Task.sleep(nanoseconds: 500_000_000)
            }
        }
    }

    /// Ends a run that did not succeed, by why it stopped.
    private func finish(_ job: Job, error: Error, control: RunControl, log: Logger) async {
        parts.outputs.removePartials(of: job.id, attempt: job.attempt)
        let reason: RunControl.Stop? = (error as? GenerationStop).map { $0.reason } ?? (error as? GenerationError == .cancelled ? control.stopReason : nil)
        switch reason {
        case .fenced?:
            log.warning("job \(job.id) attempt \(job.attempt): another worker holds the job now (or it was deleted); stopped without writing outputs")
        case .shutdown?:
            let released = (try? await persist("handing job \(job.id) back") { try await self.parts.store.release(id: job.id, attempt: job.attempt) }) ?? false
            log.info("job \(job.id) \(released ? "went back to the queue" : "was left as it is") at shutdown")
        case .cancelled?:
            if (try? await parts.store.complete(id: job.id, attempt: job.attempt, outcome: .cancelled)) == true { parts.metrics.jobFinished("cancelled") }
            log.info("job \(job.id) cancelled")
        case nil:
            let message = (error as? APIError)?.message ?? "\(error)"
            if (try? await persist("failing job \(job.id)") { try await self.parts.store.complete(id: job.id, attempt: job.attempt, outcome: .failed(error: message)) }) == true {
                parts.metrics.jobFinished("failed")
            }
            log.error("job \(job.id) failed: \(message)")
        }
    }

    /// Loads the image, plans within the budget, runs the pipeline and writes every output into `folder`.
    private func generate(job: Job, params: JobParameters, budget: Int?, into folder: URL, control: RunControl) async throws {
        try Self.writeParams(params, seed: job.seed, to: folder.appendingPathComponent("params.json"))
        guard let imageID = params.imageID, let upload = try await parts.uploads.find(imageID) else {
            throw APIError(.unprocessableContent, "unknown_image", "the job's image is no longer stored")
        }
        // The plan without this worker's memory is usually cached already; only one that does not fit here is
        // made again within it (free memory moves, so planning with it every time would miss the cache).
        var outcome = try await parts.planner.plan(params)
        if let budget, outcome.fits, let peak = outcome.report?.prediction.peakBytes, peak > budget {
            outcome = try await parts.planner.plan(params, workerBudget: budget)
        }
        guard outcome.fits, let report = outcome.report, let request = outcome.request else { throw APIError(.unprocessableContent, "does_not_fit", outcome.reason ?? "no plan fits") }
        guard let model = parts.catalog.model(named: params.model) else { throw APIError(.unprocessableContent, "unknown_model", "no model \(params.model)") }
        let folderForModel = try modelFolder(model)
        let imagePath = parts.uploads.fileURL(upload.imageID).path
        try await BlockingWork.run {
            if control.stopReason != nil { throw GenerationStop(reason: control.stopReason!) }
            let image = try ImageLoader.load(path: imagePath)
            let video = try ImageToVideoPipeline(folder: folderForModel).generate(
                image: image, request: request, plan: report.plan,
                progress: { control.record($0) }, isCancelled: { control.stopReason != nil })
            if let reason = control.stopReason { throw GenerationStop(reason: reason) }
            control.record(GenerationProgress(phase: .encodeVideo, step: 0, totalSteps: OutputStore.fileOrder.count - 1))
            for (index, name) in OutputStore.fileOrder.filter({ $0 != "params.json" }).enumerated() {
                try VideoWriter.write(frames: video.frames, count: video.count, width: video.width, height: video.height,
                                      fps: request.fps, to: folder.appendingPathComponent(name).path)
                control.record(GenerationProgress(phase: .encodeVideo, step: index + 1, totalSteps: OutputStore.fileOrder.count - 1))
            }
            control.finishPhases()
        }
    }

    private func modelFolder(_ model: CatalogModel) throws -> ModelFolder {
        try lock.withLock {
            if let folder = folders[model.name] { return folder }
            let folder = try ModelFolder(folder: model.folder, backend: backend, weights: .files(variant: nil))
            folders[model.name] = folder
            return folder
        }
    }

    static func writeParams(_ params: JobParameters, seed: UInt64, to url: URL) throws {
        var object = params.json
        object["seed"] = seed
        try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]).write(to: url)
    }
}

/// A generation stopped on purpose, and why.
struct GenerationStop: Error {
    let reason: RunControl.Stop
    static let fenced = GenerationStop(reason: .fenced)
}

extension Logger {
    func with(job id: String) -> Logger {
        var logger = self
        logger[metadataKey: "job"] = .string(id)
        return logger
    }
}
