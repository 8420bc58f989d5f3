import Foundation
import KinemaCore
import KinemaModels
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
    /// The cost model that ranked the plans.
    public let costModel: CostModel

    /// The chosen plan's predicted seconds (the cost model's; see `CostModel.source`).
    public var predictedSeconds: Double { costModel.seconds(prediction) }
    /// The chosen plan's predicted seconds by phase, plus "load_weights".
    public var predictedPhaseSeconds: [String: Double] { costModel.phaseSeconds(prediction) }

    static func gib(_ bytes: Int) -> String { String(format: "%.2f GiB", Double(bytes) / Double(1 << 30)) }
}

/// Chooses how to run a generation within a memory budget: the fastest lossless plan that fits;
/// if none does, with `allowDegrade`, the least lossy plan that fits — VAE tiling first, then
/// token merging, then lower resolution, then fewer frames (the order users are told to degrade
/// in) — said out loud; without it, a refusal that names the smallest budget that would fit and
/// the nearest settings that fit this budget. Every figure is a meta dry run.
public enum Planner {
    /// Lossless plans, fastest first: batched guidance and resident weights avoid repeated work;
    /// f16 weight storage (offered when it changes no value: an f16 checkpoint) costs one widening
    /// per op; UNet activations in more parts make its products smaller, so slower; streaming the
    /// UNet's blocks reads their weights again at every UNet call.
    public static func losslessPlans(halfWeights: Bool) -> [ExecutionPlan] {
        let storages: [ExecutionPlan.Weights] = halfWeights ? [.compute, .f16] : [.compute]
        let base: [(ExecutionPlan.Guidance, ExecutionPlan.Residency)] = [(.batched, .all), (.serial, .all), (.batched, .perPhase), (.serial, .perPhase)]
        return base.flatMap { guidance, residency in storages.map { ExecutionPlan(guidance: guidance, residency: residency, weights: $0) } }
            + [2, 4, 8, 16].map { ExecutionPlan(guidance: .serial, residency: .perPhase, splits: $0, weights: storages.last!) }
            + [8, 16].map { ExecutionPlan(guidance: .serial, residency: .streamed, splits: $0, weights: storages.last!) }
    }

    /// The lossless plans of a checkpoint whose weights are not f16.
    public static let losslessPlans = losslessPlans(halfWeights: false)

    /// Token merge ratios tried, mildest first (tomesd's range; above 0.75 images fall apart).
    public static let tokenMergeRatios = [0.25, 0.5, 0.75]

    /// VAE tile sizes (latent pixels) tried, largest (mildest) first: diffusers' default tile (the
    /// VAE config's `sample_size` in latent pixels) and about ¾ of the previous one down to 8, each
    /// a multiple of 4 and smaller than the latents (a tile as large as the frame is no tiling).
    public static func vaeTiles(folder: String, request: GenerationRequest) -> [Int] {
        let path = (folder as NSString).appendingPathComponent("vae/config.json")
        guard let config = try? AutoencoderKLConfig(contentsOf: path) else { return [] }
        let factor = config.downscaleFactor
        let latentSide = max(request.width, request.height) / factor
        var tiles: [Int] = []
        var tile = max(8, config.sampleSize / factor / 4 * 4)
        while tile >= 8 {
            if tile < latentSide { tiles.append(tile) }
            let next = tile * 3 / 4 / 4 * 4
            tile = next < tile ? next : tile - 4
        }
        return tiles
    }

    /// The lossy knob settings in the order they are tried at one resolution and frame count,
    /// least lossy first: none, VAE tiling alone (larger tiles first), then token merging (milder
    /// ratios first), alone and with each tile size.
    static func lossyKnobs(tiles: [Int]) -> [(vaeTile: Int?, tokenMerge: Double?)] {
        var knobs: [(vaeTile: Int?, tokenMerge: Double?)] = [(nil, nil)]
        knobs += tiles.map { ($0, nil) }
        for ratio in tokenMergeRatios { knobs += [(nil, ratio)] + tiles.map { ($0, ratio) } }
        return knobs
    }

    /// Plain-language notes on what a plan and settings change against the request.
    static func degradationNotes(plan: ExecutionPlan, settings: GenerationRequest, request: GenerationRequest, vaeFactor: Int) -> [String] {
        var notes: [String] = []
        if let tile = plan.vaeTile {
            notes.append("VAE tiling: frames decoded in \(tile * vaeFactor)x\(tile * vaeFactor) px tiles that overlap by a quarter and are "
                         + "blended (diffusers' tiled decode); seams may show")
        }
        if let ratio = plan.tokenMerge {
            notes.append("token merging: \(Int((ratio * 100).rounded()))% of each frame's tokens merged in the UNet's full-resolution "
                         + "spatial self-attention (ToMe); fine detail may soften")
        }
        if settings.width != request.width || settings.height != request.height {
            notes.append("lower resolution: \(settings.width)x\(settings.height) instead of \(request.width)x\(request.height)")
        }
        if settings.frames != request.frames {
            notes.append("fewer frames: \(settings.frames) instead of \(request.frames)")
        }
        return notes
    }

    /// Refuses a budget below what any plan must hold at once: the largest UNet block's weights
    /// (in the leanest storage offered).
    static func checkFloor(budget: Int, models: ModelFolder, halfWeights: Bool) throws {
        let blocks = try models.storingMatrices(as: halfWeights ? .f16 : nil).unetBlockWeightBytes()
        guard let largest = blocks.max(by: { $0.value < $1.value }), budget < largest.value else { return }
        throw PlanError("memory budget \(PlanReport.gib(budget)) (\(budget) bytes) is below the weights of the UNet's largest block, "
                        + "\(largest.key) (\(PlanReport.gib(largest.value)), \(largest.value) bytes): no plan can run in it")
    }

    /// The plan for `request` within `budget` (nil: none): of the lossless plans that fit, the one
    /// `costModel` predicts fastest (ties: the earlier in `losslessPlans`).
    public static func choose(folder: String, request: GenerationRequest, budget: Int?, allowDegrade: Bool = false,
                              workspacePolicy: WorkspacePolicy, computeType: DType = .f32,
                              costModel: CostModel = .defaultCPU) throws -> PlanReport {
        // Configs, tokenizer and scheduler are read once for every dry run below.
        let models = try ModelFolder(folder: folder, backend: MetaBackend(emulating: workspacePolicy, computeType: computeType),
                                     weights: .shapesOnly)
        // Every denoising step allocates and computes the same: dry-run one step, count its work `steps` times.
        func predict(_ plan: ExecutionPlan, _ request: GenerationRequest) throws -> MemoryPrediction {
            var oneStep = request
            oneStep.steps = 1
            var prediction = try MemoryPredictor.predict(models: models, request: oneStep, plan: plan)
            prediction.phaseWork["denoise"] = prediction.phaseWork["denoise"]?.repeated(Double(request.steps))
            prediction.loadedWeightBytes += prediction.streamedBytesPerStep * (request.steps - 1)
            return prediction
        }
        let halfWeights = ModelFolder.halfStorageIsLossless(folder: folder)
        let losslessPlans = losslessPlans(halfWeights: halfWeights)
        if let budget { try checkFloor(budget: budget, models: models, halfWeights: halfWeights) }
        /// The fastest of `candidates` that fits, or nil.
        func fastest(_ candidates: [(plan: ExecutionPlan, prediction: MemoryPrediction)]) -> (plan: ExecutionPlan, prediction: MemoryPrediction)? {
            candidates.filter { budget == nil || $0.prediction.peakBytes <= budget! }
                .enumerated().min { a, b in
                    let (sa, sb) = (costModel.seconds(a.element.prediction), costModel.seconds(b.element.prediction))
                    return sa != sb ? sa < sb : a.offset < b.offset
                }?.element
        }
        let alternatives = try losslessPlans.map { (plan: $0, prediction: try predict($0, request)) }
        if let best = fastest(alternatives) {
            return PlanReport(plan: best.plan, request: request, prediction: best.prediction, degradations: [], alternatives: alternatives,
                              costModel: costModel)
        }
        let budget = budget!
        let leanest = losslessPlans.last!
        let smallest = alternatives.map(\.prediction.peakBytes).min()!
        let vaeFactor = (try? AutoencoderKLConfig(contentsOf: (folder as NSString).appendingPathComponent("vae/config.json")).downscaleFactor) ?? 8

        // The least lossy settings that fit, then the fastest lossless knobs with them.
        func fit(_ settings: GenerationRequest, skipLossless: Bool) throws -> (plan: ExecutionPlan, prediction: MemoryPrediction)? {
            for knobs in lossyKnobs(tiles: vaeTiles(folder: folder, request: settings)).dropFirst(skipLossless ? 1 : 0) {
                guard try predict(leanest.with(vaeTile: knobs.vaeTile, tokenMerge: knobs.tokenMerge), settings).peakBytes <= budget else { continue }
                let plans = losslessPlans.map { $0.with(vaeTile: knobs.vaeTile, tokenMerge: knobs.tokenMerge) }
                return fastest(try plans.map { (plan: $0, prediction: try predict($0, settings)) })
            }
            return nil
        }
        // The leanest plan at some settings: whether anything at all fits there.
        func anythingFits(_ settings: GenerationRequest) throws -> Bool {
            let tiles = vaeTiles(folder: folder, request: settings)
            let leanestKnobs = leanest.with(vaeTile: tiles.last, tokenMerge: tokenMergeRatios.last)
            return try predict(leanestKnobs, settings).peakBytes <= budget
        }
        var found: (plan: ExecutionPlan, prediction: MemoryPrediction, settings: GenerationRequest)?
        if let lossy = try fit(request, skipLossless: true) { found = (lossy.plan, lossy.prediction, request) }
        // Lower resolution next (same aspect, multiples of 8), then fewer frames.
        var candidates: [GenerationRequest] = []
        for eighths in stride(from: 7, through: 2, by: -1) {
            var candidate = request
            candidate.width = max(8, request.width * eighths / 8 / 8 * 8)
            candidate.height = max(8, request.height * eighths / 8 / 8 * 8)
            candidates.append(candidate)
        }
        // Fewer frames only once no resolution fits: each frame count at the largest resolution that fits.
        var frames = request.frames - 1
        while frames >= 1 {
            for eighths in stride(from: 8, through: 2, by: -1) {
                var candidate = request
                candidate.frames = frames
                candidate.width = max(8, request.width * eighths / 8 / 8 * 8)
                candidate.height = max(8, request.height * eighths / 8 / 8 * 8)
                candidates.append(candidate)
            }
            frames = frames > 8 ? frames - 4 : frames - 1
        }
        for candidate in candidates where found == nil {
            guard try anythingFits(candidate), let lossy = try fit(candidate, skipLossless: false) else { continue }
            found = (lossy.plan, lossy.prediction, candidate)
        }
        guard let found else {
            throw PlanError("no plan fits \(PlanReport.gib(budget)): these settings need at least \(PlanReport.gib(smallest)) "
                            + "(\(smallest) bytes) without lossy changes, and no VAE tiling, token merging, smaller resolution "
                            + "or frame count fits either")
        }
        let notes = degradationNotes(plan: found.plan, settings: found.settings, request: request, vaeFactor: vaeFactor)
        guard allowDegrade else {
            throw PlanError("no lossless plan fits \(PlanReport.gib(budget)): these settings need at least \(PlanReport.gib(smallest)) "
                            + "(\(smallest) bytes). The nearest settings that fit: \(notes.joined(separator: "; ")) "
                            + "(pass --allow-degrade to use them, or raise --memory-budget)")
        }
        return PlanReport(plan: found.plan, request: found.settings, prediction: found.prediction, degradations: notes, alternatives: alternatives,
                          costModel: costModel)
    }
}
