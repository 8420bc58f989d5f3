import ArgumentParser
import Foundation
import KinemaCore
import KinemaPipeline
import KinemaPlanner

/// The generation settings and memory budget shared by `generate` and `plan`. Numbers are parsed
/// unconditionally so that "--height -8" reaches validation instead of reading as an option.
struct GenerationOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Video width in pixels, a multiple of 8 (default: the model's kinema.json, else 1280).")
    var width: Int?

    @Option(parsing: .unconditional, help: "Video height in pixels, a multiple of 8 (default: the model's kinema.json, else 704).")
    var height: Int?

    @Option(parsing: .unconditional, help: "Number of frames.")
    var frames: Int?

    @Option(parsing: .unconditional, help: "Frames per second: the model's fps conditioning and the output's frame rate.")
    var fps: Int?

    @Option(parsing: .unconditional, help: "Denoising steps (DDIM); time only, memory does not depend on them.")
    var steps: Int?

    @Option(parsing: .unconditional, help: "Classifier-free guidance scale; above 1 it is on (and doubles the UNet's batch), 1 or less turns it off.")
    var guidance: Float?

    @Option(parsing: .unconditional, help: "Frames per VAE decode call (same result, more memory for more speed).")
    var decodeChunk = 1

    @Option(parsing: .unconditional, help: "CPU worker threads (default: one per core).")
    var threads: Int?

    @Option(parsing: .unconditional, help: "Most memory the run may use, e.g. 6GiB, 512MiB, or auto (free memory, the GPU's on CUDA, minus --memory-headroom). The fastest plan that fits is chosen before any work; without --allow-degrade a run that cannot fit is refused.")
    var memoryBudget: String?

    @Option(help: "Memory kept free when --memory-budget is auto.")
    var memoryHeadroom = "1GiB"

    @Flag(help: "When no lossless plan fits the budget, take the least lossy plan that does, in this order: VAE tiling, token merging, lower resolution, fewer frames; each change is said on stderr and in the report.")
    var allowDegrade = false

    @Option(help: "Where kinema bench calibrate keeps this machine's op timings, read to predict seconds (default: $KINEMA_DATA, else ~/.local/share/kinema).")
    var dataDir: String?

    /// The cost model for `threads` worker threads: this machine's calibration, else the default.
    func costModel(threads: Int) throws -> CostModel {
        do { return try CostModel.load(dataDirectory: DataDirectory.resolve(dataDir), threads: threads) ?? .defaultCPU } catch let error as PlanError {
            throw CLIError("\(error)")
        }
    }

    /// The request these options describe, unset values from the model's `kinema.json`, then diffusers' defaults.
    func request(prompt: String, negativePrompt: String?, seed: UInt64, modelFolder: String) throws -> GenerationRequest {
        var request = GenerationRequest(prompt: prompt, negativePrompt: negativePrompt, seed: seed)
        do { try ModelSettings.load(modelFolder: modelFolder).apply(to: &request) } catch { throw CLIError("\(error)") }
        ModelSettings(width: width, height: height, frames: frames, fps: fps, steps: steps, guidance: guidance).apply(to: &request)
        request.decodeChunk = decodeChunk
        do { try request.validate() } catch { throw CLIError("\(error)") }
        if let threads, threads < 1 { throw CLIError("--threads must be at least 1") }
        return request
    }

    /// The budget in bytes, nil for none. `auto` is the device's free memory minus the headroom:
    /// `deviceFreeBytes` for a GPU (cuMemGetInfo), else the host's MemAvailable.
    func budgetBytes(deviceFreeBytes: Int? = nil) throws -> Int? {
        do {
            let headroom = try MemoryBudget.bytes(parsing: memoryHeadroom)
            return try memoryBudget.map { text in
                let budget = try MemoryBudget(parsing: text)
                if case .auto = budget, let deviceFreeBytes { return max(0, deviceFreeBytes - headroom) }
                return try budget.resolve(headroom: headroom)
            }
        } catch let error as PlanError { throw CLIError("\(error)") }
    }

    /// The planner's choice for `request` within the budget.
    /// The cost model ranks the plans that fit: this machine's calibration on the CPU, the default
    /// CUDA estimate on a GPU (`kinema bench calibrate` measures the CPU only).
    func choosePlan(folder: String, request: GenerationRequest, workspacePolicy: WorkspacePolicy, threads: Int,
                    computeType: DType = .f32, deviceFreeBytes: Int? = nil, onCUDA: Bool = false) throws -> PlanReport {
        let costModel = onCUDA ? CostModel.defaultCUDA : try costModel(threads: threads)
        do {
            return try Planner.choose(folder: folder, request: request, budget: try budgetBytes(deviceFreeBytes: deviceFreeBytes),
                                      allowDegrade: allowDegrade, workspacePolicy: workspacePolicy, computeType: computeType,
                                      costModel: costModel)
        } catch let error as PlanError { throw CLIError("\(error)") }
    }
}

/// Where kinema keeps its data (jobs, outputs, calibration): the option, $KINEMA_DATA, else ~/.local/share/kinema.
enum DataDirectory {
    static func resolve(_ option: String?) -> String {
        option ?? ProcessInfo.processInfo.environment["KINEMA_DATA"]
            ?? (FileManager.default.homeDirectoryForCurrentUser.path + "/.local/share/kinema")
    }
}
