import Foundation
import KinemaCore
import KinemaModels
import KinemaPipeline

/// Peak device bytes of one generation, by phase, as the allocator counts them: every tensor,
/// workspace and resident weight. Host-side buffers (the decoded image, random draws, the
/// scheduler's arrays) are not device memory and not counted.
public struct MemoryPrediction: Sendable, Equatable, Codable {
    /// Bytes of all the model's weights (resident together only with `ExecutionPlan.Residency.all`).
    public var weightBytes: Int
    /// The largest allocated total during each phase: "encode", "denoise", "decode".
    public var phasePeakBytes: [String: Int]
    /// The largest of the phase peaks: the bytes the device must hold.
    public var peakBytes: Int { phasePeakBytes.values.max() ?? weightBytes }
    /// The ops' work in each phase (a dry run's count; empty for a measurement).
    public var phaseWork: [String: OpWork]
    /// Weight bytes read from the model files: every component once, the VAE twice when weights
    /// are loaded per phase (for encoding, then for decoding).
    public var loadedWeightBytes: Int
    /// Of those, the UNet block weights read again at every denoising step (streamed residency).
    public var streamedBytesPerStep: Int

    public init(weightBytes: Int, phasePeakBytes: [String: Int], phaseWork: [String: OpWork] = [:], loadedWeightBytes: Int = 0,
                streamedBytesPerStep: Int = 0) {
        self.weightBytes = weightBytes
        self.phasePeakBytes = phasePeakBytes
        self.phaseWork = phaseWork
        self.loadedWeightBytes = loadedWeightBytes
        self.streamedBytesPerStep = streamedBytesPerStep
    }
}

/// Adds up a meta device's op work per phase, from the run's progress reports.
final class PhaseWorkRecorder {
    private let meta: MetaBackend
    private var phase: String?
    private var start = OpWork()
    private(set) var work: [String: OpWork] = [:]

    init(meta: MetaBackend) { self.meta = meta }

    func record(_ progress: GenerationProgress) {
        let name = progress.phase.rawValue
        guard name != phase else { return }
        close()
        phase = name
        start = OpWork()
        meta.work = OpWork()
    }

    func close() {
        if let phase { work[phase] = (work[phase] ?? OpWork()) + (meta.work - start) }
        phase = nil
    }
}

/// Records the meter's peak for each phase of a generation, from its progress reports. The
/// first phase's peak includes whatever was allocated before it (the resident weights).
public final class PhasePeakRecorder {
    private let meter: MemoryMeter
    private var phase: String?
    public private(set) var peaks: [String: Int] = [:]

    public init(meter: MemoryMeter) { self.meter = meter }

    /// Call with every progress report of the run.
    public func record(_ progress: GenerationProgress) {
        let name = progress.phase.rawValue
        guard name != phase else { return }
        if phase != nil { close() } else { meter.resetPeak() }
        phase = name
    }

    /// Ends the current phase (call once the run returns); the next phase starts from the bytes in use now.
    public func close() {
        if let phase { peaks[phase] = max(peaks[phase] ?? 0, meter.peak) }
        meter.resetPeak()
        phase = nil
    }
}

/// Predicts a generation's memory by running it on the meta backend: the same model code and
/// allocation sequence as the real device, with shapes only. The prediction for a CPU run equals
/// the CPU allocator's measured peaks exactly.
public enum MemoryPredictor {
    /// Dry-runs `request` with `plan` for the model in `folder` (configs, tokenizer and scheduler
    /// config are read; weight files are not needed) on a meta device emulating `workspacePolicy`.
    public static func predict(folder: String, request: GenerationRequest, plan: ExecutionPlan = ExecutionPlan(),
                               workspacePolicy: WorkspacePolicy, computeType: DType = .f32) throws -> MemoryPrediction {
        let meta = MetaBackend(emulating: workspacePolicy, computeType: computeType)
        return try predict(models: try ModelFolder(folder: folder, backend: meta, weights: .shapesOnly), request: request, plan: plan)
    }

    /// Dry-runs `request` with `plan` for `models` (read once, for any number of predictions) on a
    /// fresh meta device like the one `models` is bound to.
    public static func predict(models: ModelFolder, request: GenerationRequest, plan: ExecutionPlan = ExecutionPlan()) throws -> MemoryPrediction {
        let meta = MetaBackend(emulating: models.backend.workspacePolicy, computeType: models.backend.computeType)
        let dry = models.on(meta, weights: .shapesOnly)
        let stored = dry.storingMatrices(as: plan.weights == .f16 ? .f16 : nil)
        let weightBytes = try weightBytes(stored)
        let recorder = PhasePeakRecorder(meter: meta.allocator.meter)
        let work = PhaseWorkRecorder(meta: meta)
        _ = try ImageToVideoPipeline(folder: dry).generate(image: try blankImage(request), request: request, plan: plan) {
            recorder.record($0)
            work.record($0)
        }
        recorder.close()
        work.close()
        var loaded = weightBytes + (plan.residency != .all ? try vaeWeightBytes(stored) : 0)
        var streamedPerStep = 0
        if plan.residency == .streamed {
            let blocks = try stored.unetBlockWeightBytes().filter { I2VGenXLUNet.isBlockKey($0.key + ".") }.values.reduce(0, +)
            streamedPerStep = blocks * (request.usesGuidance && plan.guidance == .serial ? 2 : 1)
            loaded += streamedPerStep * request.steps
        }
        return MemoryPrediction(weightBytes: weightBytes, phasePeakBytes: recorder.peaks, phaseWork: work.work, loadedWeightBytes: loaded,
                                streamedBytesPerStep: streamedPerStep)
    }

    static func vaeWeightBytes(_ models: ModelFolder) throws -> Int {
        let meta = MetaBackend(emulating: models.backend.workspacePolicy, computeType: models.backend.computeType)
        let vae = try models.on(meta, weights: .shapesOnly).vae()
        return withExtendedLifetime(vae) { meta.allocator.meter.current }
    }

    /// Dry-runs `request` with a model already built on the meta backend `meta` (with its
    /// weights, and nothing else, allocated): every weight resident.
    public static func predict(model: I2VGenXLModel, on meta: MetaBackend, request: GenerationRequest,
                               guidance: ExecutionPlan.Guidance = .batched) throws -> MemoryPrediction {
        let weightBytes = meta.allocator.meter.current
        let recorder = PhasePeakRecorder(meter: meta.allocator.meter)
        _ = try ImageToVideoPipeline(model: model, backend: meta).generate(
            image: try blankImage(request), request: request, plan: ExecutionPlan(guidance: guidance)) { recorder.record($0) }
        recorder.close()
        return MemoryPrediction(weightBytes: weightBytes, phasePeakBytes: recorder.peaks)
    }

    /// The bytes of every component's weights, counted on a separate meta device.
    static func weightBytes(_ models: ModelFolder) throws -> Int {
        let meta = MetaBackend(emulating: models.backend.workspacePolicy, computeType: models.backend.computeType)
        let copy = models.on(meta, weights: .shapesOnly)
        let held = (try copy.textEncoder(), try copy.imageEncoder(), try copy.vae(), try copy.unet())
        _ = held
        return meta.allocator.meter.current
    }

    /// The image's content does not matter to a dry run; its size does not either (it is cropped
    /// and resized to the request's size first).
    static func blankImage(_ request: GenerationRequest) throws -> RGBImage {
        try RGBImage(width: request.width, height: request.height, pixels: [UInt8](repeating: 128, count: request.width * request.height * 3))
    }
}
