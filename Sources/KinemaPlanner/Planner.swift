import Foundation
import KinemaCore
import KinemaPipeline

/// A memory budget as users write it: "6GiB", "512 MiB", "1.5GB", a byte count, or "auto"
/// (the device's free memory minus a headroom).
public enum MemoryBudget: Equatable, Sendable {
    case bytes(Int)
    case auto

    /// Parses `text`; throws a `PlanError` that says what is wrong.
    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.lowercased() == "auto" { self = .auto; return }
        let units: [(String, Double)] = [("tib", 1_099_511_627_776), ("gib", 1_073_741_824), ("mib", 1_048_576), ("kib", 1024),
                                         ("tb", 1e12), ("gb", 1e9), ("mb", 1e6), ("kb", 1e3), ("b", 1)]
        let lower = trimmed.lowercased()
        var number = lower, scale = 1.0
        for (suffix, factor) in units where lower.hasSuffix(suffix) {
            number = String(lower.dropLast(suffix.count)).trimmingCharacters(in: .whitespaces)
            scale = factor
            break
        }
        guard let value = Double(number), value.isFinite else {
            throw PlanError("memory budget \"\(text)\" does not parse: write it like 6GiB, 512MiB, 1.5GB, 1000000 or auto")
        }
        guard value > 0 else { throw PlanError("memory budget \"\(text)\" must be positive") }
        let bytes = value * scale
        guard bytes >= 1 else { throw PlanError("memory budget \"\(text)\" must be at least one byte") }
        guard bytes < 1e18 else { throw PlanError("memory budget \"\(text)\" is larger than any machine's memory") }
        self = .bytes(Int(bytes))
    }

    /// The bytes this budget allows on the CPU: `auto` is MemAvailable minus `headroom`.
    public func resolve(headroom: Int) throws -> Int {
        switch self {
        case .bytes(let bytes): return bytes
        case .auto:
            guard let available = Self.availableHostBytes() else { throw PlanError("cannot read the free memory of this machine (/proc/meminfo)") }
            guard available > headroom else {
                throw PlanError("only \(PlanReport.gib(available)) free, less than the \(PlanReport.gib(headroom)) headroom")
            }
            return available - headroom
        }
    }

    static func availableHostBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
              let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
        return kilobytes * 1024
    }
}

/// Why no plan was chosen, or a budget that makes no sense.
public struct PlanError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The planner's answer: the plan, the settings it runs (changed only when degrading was
/// allowed and needed), its prediction, what was lossy, and the alternatives it weighed.
public struct PlanReport: Sendable {
    public let plan: ExecutionPlan
    public let request: GenerationRequest
    public let prediction: MemoryPrediction
    /// Plain-language notes on every lossy change, empty when none was needed.
    public let degradations: [String]
    public let alternatives: [(plan: ExecutionPlan, prediction: MemoryPrediction)]

    static func gib(_ bytes: Int) -> String { String(format: "%.2f GiB", Double(bytes) / Double(1 << 30)) }
}

/// Chooses how to run a generation within a memory budget: the fastest lossless plan that fits;
/// if none does, with `allowDegrade`, the least lossy smaller settings (lower resolution first,
/// then fewer frames), said out loud; without it, a refusal that names the smallest budget that
/// would fit and the nearest settings that fit this budget. Every figure is a meta dry run.
public enum Planner {
    /// Lossless plans, fastest first: batched guidance and resident weights avoid repeated work;
    /// f16 weight storage (offered when it changes no value: an f16 checkpoint) costs one widening
    /// per op; UNet activations in more parts make its products smaller, so slower.
    public static func losslessPlans(halfWeights: Bool) -> [ExecutionPlan] {
        let storages: [ExecutionPlan.Weights] = halfWeights ? [.compute, .f16] : [.compute]
        let base: [(ExecutionPlan.Guidance, ExecutionPlan.Residency)] = [(.batched, .all), (.serial, .all), (.batched, .perPhase), (.serial, .perPhase)]
        return base.flatMap { guidance, residency in storages.map { ExecutionPlan(guidance: guidance, residency: residency, weights: $0) } }
            + [2, 4, 8, 16].map { ExecutionPlan(guidance: .serial, residency: .perPhase, splits: $0, weights: storages.last!) }
    }

    /// The lossless plans of a checkpoint whose weights are not f16.
    public static let losslessPlans = losslessPlans(halfWeights: false)

    public static func choose(folder: String, request: GenerationRequest, budget: Int?, allowDegrade: Bool = false,
                              workspacePolicy: WorkspacePolicy, computeType: DType = .f32) throws -> PlanReport {
        // Configs, tokenizer and scheduler are read once for every dry run below.
        let models = try ModelFolder(folder: folder, backend: MetaBackend(emulating: workspacePolicy, computeType: computeType),
                                     weights: .shapesOnly)
        func predict(_ plan: ExecutionPlan, _ request: GenerationRequest) throws -> MemoryPrediction {
            try MemoryPredictor.predict(models: models, request: request, plan: plan)
        }
        let losslessPlans = losslessPlans(halfWeights: ModelFolder.halfStorageIsLossless(folder: folder))
        var alternatives: [(plan: ExecutionPlan, prediction: MemoryPrediction)] = []
        for plan in losslessPlans {
            let prediction = try predict(plan, request)
            alternatives.append((plan, prediction))
            if budget == nil || prediction.peakBytes <= budget! {
                return PlanReport(plan: plan, request: request, prediction: prediction, degradations: [], alternatives: alternatives)
            }
        }
        let budget = budget!
        let leanest = losslessPlans.last!
        let smallest = alternatives.map(\.prediction.peakBytes).min()!
        // Lower resolution first (same aspect, multiples of 8), then fewer frames.
        var degraded: GenerationRequest?
        for eighths in stride(from: 7, through: 2, by: -1) where degraded == nil {
            var candidate = request
            candidate.width = max(8, request.width * eighths / 8 / 8 * 8)
            candidate.height = max(8, request.height * eighths / 8 / 8 * 8)
            if try predict(leanest, candidate).peakBytes <= budget { degraded = candidate }
        }
        var frames = request.frames - 1
        while degraded == nil && frames >= 1 {
            var candidate = request
            candidate.frames = frames
            if try predict(leanest, candidate).peakBytes <= budget { degraded = candidate }
            frames = frames > 8 ? frames - 4 : frames - 1
        }
        guard let settings = degraded else {
            throw PlanError("no plan fits \(PlanReport.gib(budget)): these settings need at least \(PlanReport.gib(smallest)) "
                            + "(\(smallest) bytes), and no smaller resolution or frame count fits either")
        }
        let note = settings.frames != request.frames
            ? "fewer frames: \(settings.frames) instead of \(request.frames)"
            : "lower resolution: \(settings.width)x\(settings.height) instead of \(request.width)x\(request.height)"
        guard allowDegrade else {
            throw PlanError("no lossless plan fits \(PlanReport.gib(budget)): these settings need at least \(PlanReport.gib(smallest)) "
                            + "(\(smallest) bytes). The nearest settings that fit: \(settings.width)x\(settings.height), \(settings.frames) frames "
                            + "(pass --allow-degrade to use them, or raise --memory-budget)")
        }
        for plan in losslessPlans {
            let prediction = try predict(plan, settings)
            if prediction.peakBytes <= budget {
                return PlanReport(plan: plan, request: settings, prediction: prediction, degradations: [note], alternatives: alternatives)
            }
        }
        throw PlanError("internal: degraded settings stopped fitting")
    }
}
