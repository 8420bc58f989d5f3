import ArgumentParser
import Foundation
import KinemaCore
import KinemaCPU
import KinemaCUDA
import KinemaPipeline
import KinemaPlanner

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Predict a generation's peak memory before running it.",
        discussion: """
            Runs the whole generation on the meta device — the same model code and the same \
            allocations as the real device, with shapes only and no arithmetic — and prints the \
            peak bytes by phase (encode, denoise, decode) and the resident weights. A CPU run of the \
            same settings allocates exactly these bytes (the test suite holds them equal). \
            Weight files are not needed: --model-config DIR takes a folder with the configs, \
            tokenizer and scheduler config alone (e.g. the released I2VGen-XL configs).

            With --memory-budget it picks the fastest lossless plan that fits (guidance batched or \
            serial; all weights resident, only the running phase's, or the UNet's blocks streamed; f16 \
            weight storage for f16 checkpoints; UNet activations in parts), ranked by predicted \
            seconds (kinema bench calibrate), and, with --allow-degrade, the least lossy plan \
            when none fits: VAE tiling with blended overlaps, then token merging on the spatial \
            self-attention, then lower resolution, then fewer frames. Without --allow-degrade it \
            refuses and names the smallest budget and the nearest settings that fit. A budget below \
            the weights of the UNet's largest block is an error.

            Examples:
              kinema plan --model-config ../shared/data/i2vgen-xl-configs --width 768 --height 768 --frames 24
              kinema plan --model Models/kinema-tiny --json
            """
    )

    @Option(help: "A diffusers model folder.")
    var model: String?

    @Option(help: "A folder with the model's configs but no weights.")
    var modelConfig: String?

    @OptionGroup var settings: GenerationOptions

    @Option(help: "The device to plan for: cpu or cuda (no GPU needed: the CUDA backend's workspaces and storage type are known ahead).")
    var device = "cpu"

    @Option(help: "With --device cuda, the storage type planned for: f16, bf16 or f32.")
    var precision: DeviceOptions.Precision = .f16

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        guard device == "cpu" || device == "cuda" else { throw CLIError("--device must be cpu or cuda, got \(device)") }
        if model != nil && modelConfig != nil { throw CLIError("give --model or --model-config, not both") }
        let folder = try modelConfig ?? ModelLocator.resolve(model)
        let request = try settings.request(prompt: "", negativePrompt: nil, seed: 0, modelFolder: folder)
        let cpuPolicy = CPUWorkspacePolicy(threads: settings.threads ?? ProcessInfo.processInfo.activeProcessorCount)
        let computeType = device == "cuda" ? precision.computeType : .f32
        let policy: WorkspacePolicy = device == "cuda" ? CUDAWorkspacePolicy(computeType: computeType) : cpuPolicy
        let threads = device == "cuda" ? 0 : cpuPolicy.threads
        let budget = try settings.budgetBytes()
        let chosen = try settings.choosePlan(folder: folder, request: request, workspacePolicy: policy, threads: cpuPolicy.threads,
                                             computeType: computeType, onCUDA: device == "cuda")
        let cost = chosen.costModel
        let prediction = chosen.prediction
        let final = chosen.request
        if json {
            let object: [String: Any] = [
                "predicted_peak_bytes": prediction.peakBytes, "weight_bytes": prediction.weightBytes,
                "phase_peak_bytes": prediction.phasePeakBytes,
                "plan": PlanDescription.json(chosen.plan, request: final, threads: threads, device: device, computeType: computeType),
                "device": device, "compute_type": computeType.rawValue,
                "degradations": chosen.degradations, "memory_budget_bytes": budget as Any,
                "request": ["width": final.width, "height": final.height, "frames": final.frames, "guidance": final.guidanceScale],
                "predicted_seconds": chosen.predictedSeconds, "predicted_phase_seconds": chosen.predictedPhaseSeconds,
                "cost_model": cost.source,
                "alternatives": chosen.alternatives.map { ["plan": PlanDescription.json($0.plan, request: request, threads: threads, device: device, computeType: computeType),
                                                           "predicted_peak_bytes": $0.prediction.peakBytes,
                                                           "predicted_seconds": cost.seconds($0.prediction)] },
            ]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
            return
        }
        func gib(_ bytes: Int) -> String { String(format: "%.3f GiB", Double(bytes) / Double(1 << 30)) }
        print("\(folder): \(final.width)x\(final.height), \(final.frames) frames, guidance \(final.usesGuidance ? "on" : "off")"
              + (budget.map { ", budget \(gib($0))" } ?? ""))
        for note in chosen.degradations { print("DEGRADED to fit: \(note)") }
        print("plan: \(PlanDescription.text(chosen.plan, request: final)), "
              + (device == "cuda" ? "cuda, \(computeType) storage" : "\(threads) threads"))
        print("  all weights \(gib(prediction.weightBytes))")
        for phase in ["encode", "denoise", "decode"] {
            if let bytes = prediction.phasePeakBytes[phase] { print("  " + phase.padding(toLength: 11, withPad: " ", startingAt: 0) + " \(gib(bytes)) peak") }
        }
        if chosen.alternatives.count > 1 {
            print("considered (lossless plans):")
            for alternative in chosen.alternatives {
                print("  \(PlanDescription.text(alternative.plan, request: request)): \(gib(alternative.prediction.peakBytes)), "
                      + String(format: "%.1f s", cost.seconds(alternative.prediction)))
            }
        }
        print("predicted peak: \(gib(prediction.peakBytes)) (\(prediction.peakBytes) bytes)")
        print(String(format: "predicted time: %.1f s (cost model: %@)", chosen.predictedSeconds, cost.source))
    }
}
