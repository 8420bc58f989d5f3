import ArgumentParser
import Foundation
import KinemaCore
import KinemaCPU
import KinemaCUDA
import KinemaPipeline
import KinemaPlanner

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a video from one image and a prompt.",
        discussion: """
            Loads a diffusers-format I2VGen-XL model folder and runs the image-to-video pipeline \
            exactly as diffusers' I2VGenXLPipeline does: the same seed gives the same video.

            The model: --model DIR, else $KINEMA_MODEL, else ./Models/kinema-tiny, else the \
            Models/kinema-tiny installed beside the kinema executable. Unset generation settings \
            come from the model's kinema.json when it has one, else from diffusers' defaults \
            (1280x704, 16 frames, 16 fps, 50 steps, guidance 9).

            The output format follows the extension: .mp4 (H.264, plays in browsers), .gif, \
            .webp, .npy (float32 [frames, height, width, 3] in [0, 1]) or, for a path ending in \
            "/", a folder of PNG frames. The file appears only when complete.

            Examples:
              kinema generate --image boat.jpg --prompt "the boat sails away, camera slowly zooms in" --output boat.mp4
              kinema generate --model ~/i2vgen-xl --variant fp16 --image cat.png --prompt "my cat" \\
                  --width 512 --height 512 --steps 30 --seed 7 --output cat.gif
            """
    )

    @Option(help: "A diffusers model folder (with model_index.json).")
    var model: String?

    @Option(help: "Weight files variant, e.g. fp16 for model.fp16.safetensors.")
    var variant: String?

    @Flag(help: "Benchmarks: ignore the model folder's weight files (it may have none, e.g. configs only) and use random weights of the configs' shapes; the video is noise.")
    var randomWeights = false

    @Option(help: "The input picture (PNG, JPEG, WebP, …).")
    var image: String

    @Option(help: "What should happen in the video.")
    var prompt: String

    @Option(help: "What the video should not look like (default: empty, as diffusers).")
    var negativePrompt: String?

    @Option(parsing: .unconditional, help: "Random seed (default: a random one, printed).")
    var seed: UInt64?

    @OptionGroup var settings: GenerationOptions

    @OptionGroup var deviceOptions: DeviceOptions

    @Option(name: .shortAndLong, help: "Where to write the video (.mp4, .gif, .webp, .npy, or a folder/ of PNGs).")
    var output: String

    @Option(help: "Also write a JSON report: time by phase, UNet seconds per step, peak allocator bytes and peak RSS.")
    var report: String?

    @Flag(help: "No progress bar.")
    var quiet = false

    @Flag(help: "Print the time spent in each kind of op when done.")
    var profile = false

    func run() throws {
        guard VideoFormat(path: output) != nil else {
            throw CLIError("cannot tell the format of \(output): use .mp4, .gif, .webp, .npy, or end the path with / for PNG frames")
        }
        let modelFolder = try ModelLocator.resolve(model)
        var request = try settings.request(prompt: prompt, negativePrompt: negativePrompt,
                                           seed: seed ?? UInt64.random(in: 0...UInt64(Int64.max)), modelFolder: modelFolder)

        let picture = try ImageLoader.load(path: image)
        let backend = try deviceOptions.makeBackend(threads: settings.threads)
        // Plan before any work: the fastest plan within the budget, or a refusal.
        let deviceFree = (backend as? CUDABackend)?.device.memoryInfo().free
        let budget = try settings.budgetBytes(deviceFreeBytes: deviceFree)
        let chosen = try settings.choosePlan(folder: modelFolder, request: request, workspacePolicy: backend.workspacePolicy,
                                             threads: backend.cpuThreads, computeType: backend.computeType,
                                             deviceFreeBytes: deviceFree, onCUDA: backend is CUDABackend)
        for note in chosen.degradations { FileHandle.standardError.write(Data("degraded to fit the memory budget: \(note)\n".utf8)) }
        request = chosen.request
        if seed == nil { FileHandle.standardError.write(Data("seed: \(request.seed)\n".utf8)) }
        OpProfile.shared.isEnabled = profile
        let bar = ProgressBar(enabled: !quiet)
        let clock = PhaseClock()
        let recorder = PhasePeakRecorder(meter: backend.allocator.meter)
        // What the process holds before any model memory (code, libraries, the decoded picture): the
        // fixed part of its peak RSS, which the report states beside the predicted peak.
        let baselineRSS = ProcessMemory.residentBytes
        if backend is CUDABackend { bar.write("device: \(backend.deviceDescription)") }
        bar.phase("loading \(modelFolder)")
        let folder = try ModelFolder(folder: modelFolder, backend: backend,
                                     weights: randomWeights ? .random(seed: request.seed) : .files(variant: variant))
        clock.finish("load")
        let video = try ImageToVideoPipeline(folder: folder).generate(image: picture, request: request, plan: chosen.plan) {
            clock.record($0)
            recorder.record($0)
            bar.update($0)
        }
        recorder.close()
        let cuda = backend as? CUDABackend
        let poolStatistics = cuda?.device.poolStatistics()
        let deviceMemory = cuda?.device.memoryInfo()
        let encoding = GenerationProgress(phase: .encodeVideo, step: 0, totalSteps: 1)
        clock.record(encoding)
        bar.update(encoding)
        try VideoWriter.write(frames: video.frames, count: video.count, width: video.width, height: video.height, fps: request.fps, to: output)
        clock.finish(GenerationPhase.encodeVideo.rawValue)
        bar.update(GenerationProgress(phase: .encodeVideo, step: 1, totalSteps: 1))
        bar.finish("wrote \(output) (\(video.count) frames, \(video.width)x\(video.height), seed \(request.seed))")
        if profile {
            var lines = ["op                     seconds    calls"]
            for entry in OpProfile.shared.table {
                lines.append(entry.op.padding(toLength: 20, withPad: " ", startingAt: 0) + String(format: "%10.3f %8d", entry.seconds, entry.calls))
            }
            FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        }
        if let report {
            let object: [String: Any] = [
                "seed": request.seed, "width": request.width, "height": request.height, "frames": request.frames,
                "steps": request.steps, "guidance": request.guidanceScale, "model": modelFolder, "device": backend.name,
                "device_description": backend.deviceDescription, "compute_type": backend.computeType.rawValue,
                "phase_seconds": clock.phases, "measured_seconds": clock.total,
                "unet_seconds_per_step": clock.medianStepSeconds,
                "measured_peak_bytes": recorder.peaks.values.max() ?? 0, "measured_phase_peak_bytes": recorder.peaks,
                "predicted_peak_bytes": chosen.prediction.peakBytes, "predicted_phase_peak_bytes": chosen.prediction.phasePeakBytes,
                "weight_bytes": chosen.prediction.weightBytes, "peak_rss_bytes": ProcessMemory.peakResidentBytes,
                "baseline_rss_bytes": baselineRSS,
                "plan": PlanDescription.json(chosen.plan, request: request, threads: backend.cpuThreads,
                                             device: backend is CUDABackend ? "cuda" : "cpu", computeType: backend.computeType),
                "degradations": chosen.degradations, "memory_budget_bytes": budget as Any,
                "predicted_seconds": chosen.predictedSeconds, "predicted_phase_seconds": chosen.predictedPhaseSeconds,
                "cost_model": chosen.costModel.source,
            ].merging(cuda.map { cuda -> [String: Any] in [
                // The allocator's peak is measured_peak_bytes; these are the CUDA pool's and driver's views.
                "cuda_fixed_overhead_bytes": cuda.device.fixedOverheadBytes,
                "cuda_used_after_context_bytes": cuda.device.usedAfterContextBytes,
                "cuda_pool_reserved_peak_bytes": poolStatistics!.reservedPeak, "cuda_pool_used_peak_bytes": poolStatistics!.usedPeak,
                "cuda_free_bytes_at_end": deviceMemory!.free, "cuda_total_bytes": deviceMemory!.total,
            ] } ?? [:]) { first, _ in first }
            try AtomicFile.write(try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]), to: report)
        }
    }
}

/// Finds the model folder: the option, $KINEMA_MODEL, ./Models/kinema-tiny, then the one installed beside the executable.
enum ModelLocator {
    static func resolve(_ option: String?) throws -> String {
        if let option { return option }
        let environment = ProcessInfo.processInfo.environment["KINEMA_MODEL"]
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("Models/kinema-tiny").path
        let candidates = [environment, "Models/kinema-tiny", beside].compactMap { $0 }
        for candidate in candidates where FileManager.default.fileExists(atPath: (candidate as NSString).appendingPathComponent("model_index.json")) {
            return candidate
        }
        throw CLIError("no model found: pass --model DIR (a diffusers folder with model_index.json) or set KINEMA_MODEL; looked in "
                       + candidates.joined(separator: ", "))
    }
}

/// One line on stderr, redrawn in place: phase, step k/N, elapsed and ETA.
final class ProgressBar {
    let enabled: Bool
    let start = Date()
    var phaseStart = Date()
    var currentPhase = ""
    let interactive = isatty(STDERR_FILENO) != 0

    init(enabled: Bool) { self.enabled = enabled }

    func write(_ line: String, final: Bool = false) {
        guard enabled else { return }
        let text = interactive ? "\r\u{1B}[2K" + line + (final ? "\n" : "") : line + "\n"
        FileHandle.standardError.write(Data(text.utf8))
    }

    func phase(_ name: String) { write(name + " …") }

    func update(_ p: GenerationProgress) {
        if p.phase.rawValue != currentPhase { currentPhase = p.phase.rawValue; phaseStart = Date() }
        guard interactive || p.step == p.totalSteps || p.phase == .denoise else { return }
        let width = 24, done = p.totalSteps > 0 ? p.step * width / p.totalSteps : width
        let bar = String(repeating: "█", count: done) + String(repeating: "░", count: width - done)
        let elapsed = Date().timeIntervalSince(phaseStart)
        let eta = p.step > 0 ? elapsed / Double(p.step) * Double(p.totalSteps - p.step) : nil
        write("\(p.phase.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0)) \(bar) \(p.step)/\(p.totalSteps)"
              + String(format: "  %.1fs", elapsed) + (eta.map { String(format: "  ETA %.1fs", $0) } ?? ""))
    }

    func finish(_ message: String) {
        write(message + String(format: " in %.1fs", Date().timeIntervalSince(start)), final: true)
    }
}

extension MemoryBudget {
    /// A byte count for options that take no "auto".
    static func bytes(parsing text: String) throws -> Int {
        guard case .bytes(let bytes) = try MemoryBudget(parsing: text) else { throw CLIError("\(text): give a size such as 1GiB") }
        return bytes
    }
}

/// Wall time by phase, from the pipeline's progress events.
final class PhaseClock {
    let start = Date()
    private var phaseStart = Date()
    private var current: String?
    private var lastStep: Date?
    private var stepSeconds: [Double] = []
    private(set) var phases: [String: Double] = [:]

    func finish(_ phase: String) {
        phases[phase, default: 0] += Date().timeIntervalSince(phaseStart)
        phaseStart = Date()
        current = nil
    }

    func record(_ p: GenerationProgress) {
        if current != p.phase.rawValue {
            if let current { finish(current) }
            current = p.phase.rawValue
        }
        if p.phase == .denoise {
            if let lastStep, p.step > 0 { stepSeconds.append(Date().timeIntervalSince(lastStep)) }
            lastStep = Date()
        }
    }

    var total: Double { Date().timeIntervalSince(start) }

    /// The median seconds per denoising step (each step is one UNet call plus the scheduler).
    var medianStepSeconds: Double {
        let sorted = stepSeconds.sorted()
        return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
    }
}

/// The process's resident set size now (VmRSS) and at its peak (VmHWM), 0 where /proc is absent.
enum ProcessMemory {
    static var peakResidentBytes: Int { field("VmHWM:") }
    static var residentBytes: Int { field("VmRSS:") }

    private static func field(_ name: String) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name) }),
              let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kilobytes * 1024
    }
}

/// Writes a file under a temporary name and renames it into place, so no partial file is left.
enum AtomicFile {
    static func write(_ data: Data, to path: String) throws {
        let temporary = path + ".partial-\(getpid())"
        do {
            try data.write(to: URL(fileURLWithPath: temporary))
            guard rename(temporary, path) == 0 else { throw CLIError(String(cString: strerror(errno))) }
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw CLIError("could not write \(path): \(error.localizedDescription)")
        }
    }
}
