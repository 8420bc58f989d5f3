import Foundation
import KinemaCore
import KinemaPipeline
import KinemaPlanner

/// What the planner says about one job's parameters.
struct PlanOutcome: Sendable {
    var fits: Bool
    /// The planner's answer for these sizes (shared by every job with the same sizes: only its plan,
    /// prediction and degradations are used, never its request).
    var report: PlanReport?
    /// The job's own request, with the degraded sizes when the plan degraded them.
    var request: GenerationRequest?
    /// Why nothing fits, when `fits` is false.
    var reason: String?
    var budgetBytes: Int?
    var threads: Int

    /// The smallest memory budget a worker needs to run the job: the leanest lossless plan's peak, or the
    /// chosen plan's when it only fits by degrading. Jobs are placed on workers by this figure.
    var requiredBytes: Int? {
        guard let report else { return nil }
        guard report.degradations.isEmpty else { return report.prediction.peakBytes }
        return report.alternatives.map(\.prediction.peakBytes).min() ?? report.prediction.peakBytes
    }

    /// The plan's knobs as the API shows them.
    var planJSON: [String: Any]? {
        guard let report, let request else { return nil }
        return PlanDescription.json(report.plan, request: request, threads: threads)
    }

    /// The parameters as they will run: degraded sizes replace the asked ones.
    func effective(_ parameters: JobParameters) -> JobParameters {
        var effective = parameters
        if let request {
            effective.width = request.width
            effective.height = request.height
            effective.frames = request.frames
        }
        return effective
    }

    func json(parameters: JobParameters, predictedSeconds: Double?) -> [String: Any] {
        let params = effective(parameters).json
        return [
            "fits": fits, "plan": planJSON as Any? ?? NSNull(),
            "predicted_peak_bytes": report?.prediction.peakBytes as Any? ?? NSNull(),
            "required_memory_bytes": requiredBytes as Any? ?? NSNull(),
            "phase_peak_bytes": report?.prediction.phasePeakBytes ?? [:],
            "weight_bytes": report?.prediction.weightBytes as Any? ?? NSNull(),
            "predicted_seconds": predictedSeconds as Any? ?? NSNull(),
            "memory_budget_bytes": budgetBytes as Any? ?? NSNull(),
            "lossy": !(report?.degradations.isEmpty ?? true), "degradations": report?.degradations ?? [],
            "reason": reason as Any? ?? NSNull(), "params": params,
        ]
    }
}

/// Runs the memory planner for jobs, off the event loop, remembering answers: the peak depends only on the
/// model, the size, the frame count, whether guidance is on, and the budget.
final class PlanService: @unchecked Sendable {
    let catalog: ModelCatalog
    let serverBudget: String?
    let headroom: String
    let workspacePolicy: WorkspacePolicy
    let threads: Int
    private let lock = NSLock()
    private var cache: [String: PlanOutcome] = [:]

    init(catalog: ModelCatalog, serverBudget: String?, headroom: String, workspacePolicy: WorkspacePolicy, threads: Int) throws {
        self.catalog = catalog
        self.serverBudget = serverBudget
        self.headroom = headroom
        self.workspacePolicy = workspacePolicy
        self.threads = threads
        if let serverBudget { _ = try Self.resolve(serverBudget, headroom: headroom) }
    }

    /// The budget for a job: the smallest of the server's, the job's own and `workerBudget`.
    func budgetBytes(for parameters: JobParameters, workerBudget: Int? = nil) throws -> Int? {
        let own = try parameters.memoryBudget.map { try Self.resolve($0, headroom: headroom) }
        let server = try serverBudget.map { try Self.resolve($0, headroom: headroom) }
        return [own, server, workerBudget].compactMap { $0 }.min()
    }

    /// The plan for a job; `workerBudget` is the memory of the worker that will run it, when known.
    func plan(_ parameters: JobParameters, workerBudget: Int? = nil) async throws -> PlanOutcome {
        guard let model = catalog.model(named: parameters.model) else { throw APIError.notFound("model named \(parameters.model)") }
        let budget: Int?
        do { budget = try budgetBytes(for: parameters, workerBudget: workerBudget) } catch {
            throw APIError(.unprocessableContent, "invalid_value", "memory_budget: \(error)", field: "memory_budget")
        }
        let request = parameters.request
        let key = [model.name, "\(request.width)x\(request.height)x\(request.frames)", "\(request.usesGuidance)",
                   "\(budget ?? -1)", "\(parameters.allowDegrade)"].joined(separator: "|")
        var outcome: PlanOutcome
        if let cached = lock.withLock({ cache[key] }) {
            outcome = cached
        } else {
            let policy = workspacePolicy, threads = threads
            outcome = try await BlockingWork.run {
                do {
                    let report = try Planner.choose(folder: model.folder, request: request, budget: budget,
                                                    allowDegrade: parameters.allowDegrade, workspacePolicy: policy)
                    return PlanOutcome(fits: true, report: report, reason: nil, budgetBytes: budget, threads: threads)
                } catch let error as PlanError {
                    return PlanOutcome(fits: false, report: nil, reason: error.description, budgetBytes: budget, threads: threads)
                }
            }
            lock.withLock { cache[key] = outcome }
        }
        // The cached answer is for the sizes; the request is always this job's own.
        if let planned = outcome.report?.request {
            var own = request
            own.width = planned.width
            own.height = planned.height
            own.frames = planned.frames
            outcome.request = own
        }
        return outcome
    }

    /// Free memory is offered in whole multiples of this, so that it moving by a few pages does not make
    /// every job a new plan.
    static let freeMemoryGranule = 64 << 20

    /// What a worker with this configuration offers for one generation now: its budget as given, or the
    /// free memory less the headroom (`auto`, or no budget), rounded down to `freeMemoryGranule`.
    func workerBudgetBytes() throws -> Int {
        if let serverBudget, case .bytes(let bytes) = try MemoryBudget(parsing: serverBudget) { return bytes }
        return try Self.resolve("auto", headroom: headroom) / Self.freeMemoryGranule * Self.freeMemoryGranule
    }

    static func resolve(_ text: String, headroom: String) throws -> Int {
        let headroomBytes: Int
        guard case .bytes(let bytes) = try MemoryBudget(parsing: headroom) else { throw PlanError("the headroom must be a size such as 512MiB") }
        headroomBytes = bytes
        return try MemoryBudget(parsing: text).resolve(headroom: headroomBytes)
    }
}

/// Runs blocking work (model loading, generation, ffmpeg, dry runs) on its own thread, never on the
/// event loop or Swift's cooperative pool.
enum BlockingWork {
    static func run<T>(_ body: @escaping () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                continuation.resume(with: Result { try body() })
            }
            thread.stackSize = 16 << 20
            thread.start()
        }
    }
}

/// Predicts a job's seconds from the jobs this server ran: per model, seconds per unit of work in each
/// phase (denoising: steps x UNet batch x frames x pixels; the rest: frames x pixels), kept in
/// `timings.json` under the data directory. Nil until the model has run once.
final class TimingModel: @unchecked Sendable {
    private let path: URL
    private let lock = NSLock()
    /// model name -> phase -> seconds per unit.
    private var rates: [String: [String: Double]]

    init(dataDirectory: URL) {
        path = dataDirectory.appendingPathComponent("timings.json")
        rates = (try? JSONDecoder().decode([String: [String: Double]].self, from: Data(contentsOf: path))) ?? [:]
    }

    static func units(_ phase: String, _ p: JobParameters) -> Double {
        let pixels = Double(p.width * p.height * p.frames)
        return phase == GenerationPhase.denoise.rawValue ? pixels * Double(p.steps) * (p.guidance > 1 ? 2 : 1) : pixels
    }

    func predict(_ p: JobParameters) -> Double? {
        lock.withLock {
            guard let model = rates[p.model], !model.isEmpty else { return nil }
            return model.reduce(0) { $0 + $1.value * Self.units($1.key, p) }
        }
    }

    /// Predicted seconds by phase, empty until the model has run once.
    func expectedPhases(_ p: JobParameters) -> [String: Double] {
        lock.withLock { (rates[p.model] ?? [:]).reduce(into: [:]) { $0[$1.key] = $1.value * Self.units($1.key, p) } }
    }

    /// Records a finished job's seconds by phase (a moving average of the rates).
    func record(_ p: JobParameters, phaseSeconds: [String: Double]) {
        let data: Data? = lock.withLock {
            var model = rates[p.model] ?? [:]
            for (phase, seconds) in phaseSeconds where seconds > 0 {
                let rate = seconds / Self.units(phase, p)
                model[phase] = model[phase].map { 0.5 * $0 + 0.5 * rate } ?? rate
            }
            rates[p.model] = model
            return try? JSONEncoder().encode(rates)
        }
        try? data?.write(to: path, options: .atomic)
    }
}
