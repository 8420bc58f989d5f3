import KinemaCore
import KinemaPipeline

/// How plans are shown to users, in text and JSON.
public enum PlanDescription {
    /// `device` is "cpu" or "cuda"; `computeType` is the dtype weights kept in compute precision have.
    public static func json(_ plan: ExecutionPlan, request: GenerationRequest, threads: Int,
                            device: String = "cpu", computeType: DType = .f32) -> [String: Any] {
        ["device": device, "weights": plan.weights == .f16 ? "f16" : computeType.rawValue, "residency": plan.residency.rawValue,
         "guidance": request.usesGuidance ? plan.guidance.rawValue : "off", "decode_chunk": request.decodeChunk,
         "splits": plan.splits, "threads": threads,
         "vae_tile": plan.vaeTile as Any, "token_merge": plan.tokenMerge as Any, "lossy": plan.isLossy]
    }

    public static func text(_ plan: ExecutionPlan, request: GenerationRequest) -> String {
        let guidance = request.usesGuidance ? "guidance \(plan.guidance.rawValue)" : "no guidance"
        let residency = ["all": "all weights resident", "per_phase": "weights loaded per phase",
                         "streamed": "weights loaded per phase, UNet blocks streamed"][plan.residency.rawValue]!
        let frames = plan.splits > 1 ? ", UNet activations in \(plan.splits) parts" : ""
        let weights = plan.weights == .f16 ? "f32 compute, f16 weights" : "f32"
        let tile = plan.vaeTile.map { ", LOSSY VAE tiles of \($0) latent px" } ?? ""
        let merge = plan.tokenMerge.map { ", LOSSY token merging \(Int(($0 * 100).rounded()))%" } ?? ""
        return "cpu, \(weights), \(residency), \(guidance)\(frames), decode chunk \(request.decodeChunk)\(tile)\(merge)"
    }
}
