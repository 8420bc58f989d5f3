import ArgumentParser
import Foundation
import KinemaCore
import KinemaCPU
import KinemaPipeline
import KinemaPlanner

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks (measurements, not tests).",
        subcommands: [BenchOps.self, BenchCalibrate.self]
    )
}

struct BenchOps: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ops",
        abstract: "Time the core CPU ops; with --torch, time torch on the same shapes in the same run and print ratios.",
        discussion: """
            Each op runs twice to warm up, then --runs times; the median is reported. The shapes \
            are those of tools/bench_ops.py, which --torch runs with the same thread count right \
            after Kinema's runs. raw_sgemm_* times OpenBLAS's sgemm alone on preallocated \
            buffers, the floor for Kinema's matmul.

            Examples:
              kinema bench ops
              kinema bench ops --torch venv/bin/python --runs 9
              kinema bench ops --only attention_4096x320_h5 --json
            """
    )

    @Option(help: "Timed runs per op (the median is reported).")
    var runs = 7

    @Option(help: "Worker threads (default: one per core); torch gets the same number.")
    var threads: Int?

    @Option(help: "Comma-separated op names to run (default: all). Names: \(OpBenchmark.names.joined(separator: ", ")).")
    var only: String?

    @Option(help: "A Python interpreter with torch: also time torch and print Kinema/torch ratios.")
    var torch: String?

    @Option(help: "The torch side of the benchmark.")
    var torchScript = "tools/bench_ops.py"

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func validate() throws {
        if runs < 1 { throw ValidationError("--runs must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if let only {
            let unknown = only.split(separator: ",").map(String.init).filter { !OpBenchmark.names.contains($0) }
            if !unknown.isEmpty { throw ValidationError("unknown op \(unknown.joined(separator: ", ")); known: \(OpBenchmark.names.joined(separator: ", "))") }
        }
    }

    func run() throws {
        let backend = CPUBackend(threads: threads)
        let selected = Set(only.map { $0.split(separator: ",").map(String.init) } ?? [])
        if !json { print("Kinema \(kinemaVersion), cpu, \(backend.threads) threads, \(BLAS.configuration)") }
        let timings = OpBenchmark(backend: backend).run(runs: runs, only: selected) { t in
            if !json { print("  " + pad(t.name, 36) + String(format: "%9.2f ms", t.medianMilliseconds) + (t.gflops.map { String(format: "  %6.1f GFLOP/s", $0) } ?? "")) }
        }
        var torchTimes: [String: Double] = [:]
        if let torch {
            torchTimes = try runTorch(python: torch, threads: backend.threads, selected: selected)
        }
        let raw = Dictionary(uniqueKeysWithValues: timings.map { ($0.name, $0.medianMilliseconds) })
        if json {
            var ops: [String: Any] = [:]
            for t in timings {
                var entry: [String: Any] = ["median_ms": t.medianMilliseconds, "runs": t.runs]
                if let g = t.gflops { entry["gflops"] = g }
                if let tt = torchTimes[t.name] { entry["torch_median_ms"] = tt; entry["ratio_to_torch"] = t.medianMilliseconds / tt }
                if t.name.hasPrefix("matmul_"), let r = raw["raw_sgemm_" + t.name.dropFirst("matmul_".count)] { entry["ratio_to_raw_sgemm"] = t.medianMilliseconds / r }
                ops[t.name] = entry
            }
            let object: [String: Any] = ["kinema_version": kinemaVersion, "threads": backend.threads, "blas": BLAS.configuration, "ops": ops]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
            return
        }
        guard !torchTimes.isEmpty || timings.contains(where: { $0.name.hasPrefix("matmul_") }) else { return }
        print("")
        print("op                                    kinema ms   torch ms   kinema/torch   kinema/raw sgemm")
        for t in timings where !t.name.hasPrefix("raw_") {
            let tt = torchTimes[t.name]
            let rawRatio = t.name.hasPrefix("matmul_") ? raw["raw_sgemm_" + t.name.dropFirst("matmul_".count)].map { t.medianMilliseconds / $0 } : nil
            print(pad(t.name, 36) + pad(String(format: "%.2f", t.medianMilliseconds), 12, left: true)
                  + pad(tt.map { String(format: "%.2f", $0) } ?? "-", 11, left: true)
                  + pad(tt.map { String(format: "%.2f", t.medianMilliseconds / $0) } ?? "-", 15, left: true)
                  + pad(rawRatio.map { String(format: "%.2f", $0) } ?? "-", 19, left: true))
        }
    }

    func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - text.count))
        return left ? fill + text : text + fill
    }

    /// Runs the torch side and returns its medians by op name.
    func runTorch(python: String, threads: Int, selected: Set<String>) throws -> [String: Double] {
        guard FileManager.default.fileExists(atPath: torchScript) else {
            throw CLIError("\(torchScript) not found; run from the repository root or pass --torch-script PATH")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        var arguments = [torchScript, "--threads", String(threads), "--runs", String(runs)]
        let torchOps = selected.filter { !$0.hasPrefix("raw_") }
        if !torchOps.isEmpty { arguments += ["--only", torchOps.sorted().joined(separator: ",")] }
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        do { try process.run() } catch { throw CLIError("could not start \(python): \(error.localizedDescription)") }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let ops = object["ops"] as? [String: [String: Any]] else {
            throw CLIError("\(python) \(torchScript) failed (exit \(process.terminationStatus)); is torch installed for that interpreter?")
        }
        return ops.compactMapValues { $0["median_ms"] as? Double }
    }
}

struct BenchCalibrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Measure this machine's op rates and keep them in the data directory, for predicted seconds.",
        discussion: """
            Times matrix products, convolutions, attention, memory-bound ops and weight reading on \
            the CPU backend, with --threads worker threads; then denoises two steps of the model \
            (--model, else the one generate would use) with two plans — whole activations, and \
            serial guidance with activations in 8 parts — and fits a scale on the rates and a cost \
            per op call to those runs. Stores the result in DATA/calibration.json (one entry per \
            thread count). kinema plan, kinema generate and the planner's choice of the fastest \
            plan use it; without a calibration they use a documented default (docs/memory.md).

            Examples:
              kinema bench calibrate
              kinema bench calibrate --threads 4 --data-dir /srv/kinema
            """
    )

    @Option(help: "Worker threads (default: one per core).")
    var threads: Int?

    @Option(help: "Timed runs per op (the median is used).")
    var runs = 3

    @Option(help: "Where to keep the calibration (default: $KINEMA_DATA, else ~/.local/share/kinema).")
    var dataDir: String?

    @Flag(help: "Print the calibration as JSON.")
    var json = false

    @Option(help: "The model whose denoising steps the cost model is fitted to (default: the one generate would use).")
    var model: String?

    @Flag(help: "Measure op rates only, without fitting them to a model's run.")
    var opsOnly = false

    func validate() throws {
        if runs < 1 { throw ValidationError("--runs must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        let backend = CPUBackend(threads: threads)
        let host = ProcessInfo.processInfo.hostName
        let date = ISO8601DateFormatter().string(from: Date())
        var model = CostModel.calibrate(on: backend, threads: backend.threads, runs: runs, source: "calibrated \(date) on \(host)")
        var fitNote = "op rates only"
        if !opsOnly, let folder = try? ModelLocator.resolve(self.model) {
            let samples = try [ExecutionPlan(), ExecutionPlan(guidance: .serial, residency: .perPhase, splits: 8)].map { plan in
                try denoisingSample(folder: folder, plan: plan, backend: backend)
            }
            model = model.fitted(to: samples)
            model.source += ", fitted to \(folder)"
            fitNote = "fitted to 2 denoising steps of \(folder) with 2 plans: "
                + samples.map { String(format: "%.2f s measured, %.2f s fitted", $0.seconds, model.seconds($0.work)) }.joined(separator: "; ")
        }
        let directory = DataDirectory.resolve(dataDir)
        do { try model.save(dataDirectory: directory) } catch {
            throw CLIError("could not write \(CostModel.path(dataDirectory: directory)): \(error.localizedDescription)")
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(model), as: UTF8.self))
            return
        }
        print("\(backend.threads) threads, stored in \(CostModel.path(dataDirectory: directory))")
        print(String(format: "  matrix products  %8.1f GFLOP/s", model.matmulFlopsPerSecond / 1e9))
        print(String(format: "  convolutions     %8.1f GFLOP/s", model.convolutionFlopsPerSecond / 1e9))
        print(String(format: "  attention        %8.1f GFLOP/s", model.attentionFlopsPerSecond / 1e9))
        print(String(format: "  memory-bound ops %8.2f GB/s", model.memoryBytesPerSecond / 1e9))
        print(String(format: "  weight reading   %8.2f GB/s", model.weightBytesPerSecond / 1e9))
        print(String(format: "  per op call      %8.1f µs", model.secondsPerCall * 1e6))
        print(String(format: "  scale on rates   %8.2f", model.workScale))
        print("  " + fitNote)
    }

    /// Two denoising steps of `folder`'s model at its default settings with `plan`: the dry run's
    /// work of the denoising phase and its measured seconds.
    func denoisingSample(folder: String, plan: ExecutionPlan, backend: CPUBackend) throws -> (work: OpWork, seconds: Double) {
        var request = GenerationRequest(prompt: "the camera pans to the left", seed: 1)
        try ModelSettings.load(modelFolder: folder).apply(to: &request)
        request.steps = 2
        let predicted = try MemoryPredictor.predict(folder: folder, request: request, plan: plan, workspacePolicy: backend.workspacePolicy)
        let models = try ModelFolder(folder: folder, backend: backend, weights: .files(variant: nil))
        let picture = try RGBImage(width: request.width, height: request.height,
                                   pixels: (0..<(request.width * request.height * 3)).map { _ in UInt8.random(in: 0...255) })
        var start: Date?, end = Date()
        _ = try ImageToVideoPipeline(folder: models).generate(image: picture, request: request, plan: plan) { progress in
            if progress.phase == .denoise && progress.step == 0 { start = Date() }
            if progress.phase == .denoise && progress.step == progress.totalSteps { end = Date() }
        }
        return (predicted.phaseWork["denoise"] ?? OpWork(), end.timeIntervalSince(start ?? end))
    }
}
