import Foundation
import KinemaCore
import KinemaPipeline

/// Peak device bytes of one generation, by phase, as the allocator counts them: every tensor,
/// workspace and resident weight. Host-side buffers (the decoded image, random draws, the
/// scheduler's arrays) are not device memory and not counted.
public struct MemoryPrediction: Sendable, Equatable, Codable {
    /// Bytes of the weights, resident for the whole run.
    public var weightBytes: Int
    /// The largest allocated total during each phase: "encode", "denoise", "decode".
    public var phasePeakBytes: [String: Int]
    /// The largest of the phase peaks: the bytes the device must hold.
    public var peakBytes: Int { phasePeakBytes.values.max() ?? weightBytes }

    public init(weightBytes: Int, phasePeakBytes: [String: Int]) {
        self.weightBytes = weightBytes
        self.phasePeakBytes = phasePeakBytes
    }
}

/// Records the meter's peak for each phase of a generation, from its progress reports.
public final class PhasePeakRecorder {
    private let meter: MemoryMeter
    private var phase: String?
    public private(set) var peaks: [String: Int] = [:]

    public init(meter: MemoryMeter) { self.meter = meter }

    /// Call with every progress report of the run.
    public func record(_ progress: GenerationProgress) {
        let name = progress.phase.rawValue
        guard name != phase else { return }
        close()
        phase = name
        meter.resetPeak()
    }

    /// Ends the current phase (call once the run returns).
    public func close() {
        if let phase { peaks[phase] = max(peaks[phase] ?? 0, meter.peak) }
        phase = nil
    }
}

/// Predicts a generation's memory by running it on the meta backend: the same model code and
/// allocation sequence as the real device, with shapes only. The prediction for a CPU run equals
/// the CPU allocator's measured peaks exactly.
public enum MemoryPredictor {
    /// Dry-runs `request` for the model in `folder` (configs, tokenizer and scheduler config
    /// are read; weight files are not needed) on a meta device emulating `workspacePolicy`.
    public static func predict(folder: String, request: GenerationRequest, workspacePolicy: WorkspacePolicy,
                               computeType: DType = .f32) throws -> MemoryPrediction {
        let meta = MetaBackend(emulating: workspacePolicy, computeType: computeType)
        let model = try I2VGenXLModel.load(folder: folder, backend: meta, weights: .shapesOnly)
        return try predict(model: model, on: meta, request: request)
    }

    /// Dry-runs `request` with a model already built on the meta backend `meta` (with its
    /// weights, and nothing else, allocated).
    public static func predict(model: I2VGenXLModel, on meta: MetaBackend, request: GenerationRequest) throws -> MemoryPrediction {
        let weightBytes = meta.allocator.meter.current
        // The image's content does not matter to a dry run; its size does not either (it is
        // cropped and resized to the request's size first).
        let image = try RGBImage(width: request.width, height: request.height,
                                 pixels: [UInt8](repeating: 128, count: request.width * request.height * 3))
        let recorder = PhasePeakRecorder(meter: meta.allocator.meter)
        _ = try ImageToVideoPipeline(model: model, backend: meta).generate(image: image, request: request) { recorder.record($0) }
        recorder.close()
        return MemoryPrediction(weightBytes: weightBytes, phasePeakBytes: recorder.peaks)
    }
}
