import Dispatch
import Foundation
import KinemaCore

/// Turns a dry run's op work (`OpWork`) into seconds: a rate for each kind of work, a fixed cost
/// per op call, and a rate for reading weights. `kinema bench calibrate` measures the rates on
/// this machine and keeps them in the data directory; without a calibration the planner uses
/// `defaultCPU`. A linear model: it does not know that small products run slower than large
/// ones, so it ranks plans by the work and the calls they add (f16 widening, chunk copies, more
/// and smaller ops), not by cache effects.
public struct CostModel: Sendable, Equatable, Codable {
    public var matmulFlopsPerSecond: Double
    public var convolutionFlopsPerSecond: Double
    public var attentionFlopsPerSecond: Double
    public var memoryBytesPerSecond: Double
    public var secondsPerCall: Double
    /// Weight bytes read from (page-cached) model files and converted, per second.
    public var weightBytesPerSecond: Double
    /// What the rates' seconds are multiplied by: 1 from op rates alone; fitted to whole runs of a
    /// model by `fitted(to:)`, since a model's many small ops run far below the large ops' rates.
    public var workScale: Double = 1
    /// Worker threads the rates were measured with.
    public var threads: Int
    /// Where the rates come from: "default" or "calibrated <ISO date> on <host>".
    public var source: String

    public init(matmulFlopsPerSecond: Double, convolutionFlopsPerSecond: Double, attentionFlopsPerSecond: Double,
                memoryBytesPerSecond: Double, secondsPerCall: Double, weightBytesPerSecond: Double, threads: Int, source: String) {
        self.matmulFlopsPerSecond = matmulFlopsPerSecond
        self.convolutionFlopsPerSecond = convolutionFlopsPerSecond
        self.attentionFlopsPerSecond = attentionFlopsPerSecond
        self.memoryBytesPerSecond = memoryBytesPerSecond
        self.secondsPerCall = secondsPerCall
        self.weightBytesPerSecond = weightBytesPerSecond
        self.threads = threads
        self.source = source
    }

    /// The model used when this machine has no calibration: rates of the 2-core AVX-512 machine
    /// Kinema is developed on (release build, `kinema bench calibrate`, 2026-12-01), rounded down.
    /// On other machines predicted seconds are rough until `kinema bench calibrate` runs.
    public static let defaultCPU = CostModel(matmulFlopsPerSecond: 100e9, convolutionFlopsPerSecond: 60e9, attentionFlopsPerSecond: 20e9,
                                             memoryBytesPerSecond: 3e9, secondsPerCall: 20e-6, weightBytesPerSecond: 1e9,
                                             threads: 2, source: "default")

    /// The model used on CUDA, which `kinema bench calibrate` does not measure yet: an estimate for an
    /// H200 in f16 (cuBLAS GEMMs, im2col convolutions, Kinema's flash attention, host-to-device weight
    /// copies), rounded from the runs in docs/benchmarks.md. It ranks plans by their work; its seconds
    /// are rough on other GPUs.
    public static let defaultCUDA = CostModel(matmulFlopsPerSecond: 300e12, convolutionFlopsPerSecond: 150e12,
                                              attentionFlopsPerSecond: 100e12, memoryBytesPerSecond: 2e12, secondsPerCall: 10e-6,
                                              weightBytesPerSecond: 10e9, threads: 0, source: "default (CUDA estimate)")

    /// Predicted seconds of `work`.
    public func seconds(_ work: OpWork) -> Double {
        workScale * rateSeconds(work) + work.calls * secondsPerCall
    }

    /// The seconds of `work` at the measured rates alone (no per-call cost, no scale).
    func rateSeconds(_ work: OpWork) -> Double {
        work.matmulFlops / matmulFlopsPerSecond + work.convolutionFlops / convolutionFlopsPerSecond
            + work.attentionFlops / attentionFlopsPerSecond + work.memoryBytes / memoryBytesPerSecond
    }

    /// This model with `workScale` and `secondsPerCall` fitted (least squares) to measured runs:
    /// each sample a run's work and its seconds. Two runs that differ in how many calls they make
    /// for the same work (whole activations vs. many parts) separate the two; where the fit gives
    /// no positive per-call cost, the scale alone is fitted.
    public func fitted(to samples: [(work: OpWork, seconds: Double)]) -> CostModel {
        guard !samples.isEmpty else { return self }
        let rows = samples.map { (rateSeconds($0.work), $0.work.calls, $0.seconds) }
        let (sww, swc, scc) = rows.reduce((0.0, 0.0, 0.0)) { ($0.0 + $1.0 * $1.0, $0.1 + $1.0 * $1.1, $0.2 + $1.1 * $1.1) }
        let (swt, sct) = rows.reduce((0.0, 0.0)) { ($0.0 + $1.0 * $1.2, $0.1 + $1.1 * $1.2) }
        var copy = self
        let determinant = sww * scc - swc * swc
        if determinant > 1e-12 * sww * scc {
            let scale = (swt * scc - sct * swc) / determinant, perCall = (sww * sct - swc * swt) / determinant
            if scale > 0 && perCall >= 0 {
                (copy.workScale, copy.secondsPerCall) = (scale, perCall)
                return copy
            }
        }
        copy.workScale = max(swt - secondsPerCall * rows.reduce(0) { $0 + $1.0 * $1.1 }, 0) / max(sww, 1e-30)
        if copy.workScale <= 0 { copy.workScale = 1 }
        return copy
    }

    /// Predicted seconds of a dry-run prediction, by phase ("encode" includes reading the weights
    /// of the models loaded for it; "decode" the VAE's second read when weights load per phase).
    public func phaseSeconds(_ prediction: MemoryPrediction) -> [String: Double] {
        var phases = prediction.phaseWork.mapValues { seconds($0) }
        phases["load_weights"] = Double(prediction.loadedWeightBytes) / weightBytesPerSecond
        return phases
    }

    /// Predicted seconds of the whole run.
    public func seconds(_ prediction: MemoryPrediction) -> Double { phaseSeconds(prediction).values.reduce(0, +) }

    // MARK: - Stored calibration

    /// The calibration file in a data directory.
    public static func path(dataDirectory: String) -> String { (dataDirectory as NSString).appendingPathComponent("calibration.json") }

    /// The calibration stored in `dataDirectory` for `threads` threads, or nil when there is none
    /// (or it was measured with another thread count). A damaged file is an error.
    public static func load(dataDirectory: String, threads: Int) throws -> CostModel? {
        let file = path(dataDirectory: dataDirectory)
        guard FileManager.default.fileExists(atPath: file) else { return nil }
        let models: [CostModel]
        do { models = try JSONDecoder().decode([CostModel].self, from: Data(contentsOf: URL(fileURLWithPath: file))) } catch {
            throw PlanError("\(file) is not a calibration Kinema wrote (\(error)); run kinema bench calibrate again or delete it")
        }
        return models.first { $0.threads == threads }
    }

    /// Stores this calibration in `dataDirectory`, replacing one for the same thread count.
    public func save(dataDirectory: String) throws {
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        let file = Self.path(dataDirectory: dataDirectory)
        var models = (try? JSONDecoder().decode([CostModel].self, from: Data(contentsOf: URL(fileURLWithPath: file)))) ?? []
        models.removeAll { $0.threads == threads }
        models.append(self)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(models).write(to: URL(fileURLWithPath: file), options: .atomic)
    }

    enum CodingKeys: String, CodingKey {
        case matmulFlopsPerSecond = "matmul_flops_per_second", convolutionFlopsPerSecond = "convolution_flops_per_second"
        case attentionFlopsPerSecond = "attention_flops_per_second", memoryBytesPerSecond = "memory_bytes_per_second"
        case secondsPerCall = "seconds_per_call", weightBytesPerSecond = "weight_bytes_per_second", workScale = "work_scale", threads, source
    }

    // MARK: - Calibration

    /// Measures the rates on `backend` (`threads` worker threads): each kind of op on shapes of the
    /// UNet's middle levels, its work counted by running the same op on a meta device. `runs`
    /// timed runs after one warm-up; the median is used.
    public static func calibrate(on backend: Backend, threads: Int, runs: Int = 3, source: String) -> CostModel {
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        func seconds(_ body: () -> Void) -> Double {
            body()
            return median((0..<max(1, runs)).map { _ in
                let start = DispatchTime.now().uptimeNanoseconds
                body()
                return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            })
        }
        func random(_ b: Backend, _ shape: [Int], dtype: DType? = nil) -> Tensor {
            b.tensor((0..<shape.reduce(1, *)).map { _ in Float.random(in: -1...1) }, shape: shape, dtype: dtype)
        }
        /// The op's work (on a meta device) and its seconds (on `backend`).
        func measure(_ op: (Backend, (([Int], DType?) -> Tensor)) -> Void) -> (OpWork, Double) {
            let meta = MetaBackend(emulating: backend.workspacePolicy, computeType: backend.computeType)
            op(meta) { meta.empty($0, dtype: $1) }
            meta.work = OpWork()
            op(meta) { meta.empty($0, dtype: $1) }
            let work = meta.work
            var inputs: [[Int]: Tensor] = [:]
            let time = seconds { op(backend) { shape, dtype in
                if let made = inputs[shape + [dtype?.size ?? 0]] { return made }
                let made = random(backend, shape, dtype: dtype)
                inputs[shape + [dtype?.size ?? 0]] = made
                return made
            } }
            return (work, time)
        }
        func rate(_ amount: (OpWork) -> Double, _ op: (Backend, (([Int], DType?) -> Tensor)) -> Void) -> Double {
            let (work, time) = measure(op)
            return amount(work) / max(time, 1e-9)
        }
        let matmul = rate({ $0.matmulFlops }) { b, make in _ = b.linear(make([2048, 640], nil), weight: make([640, 640], nil)) }
        let convolution = rate({ $0.convolutionFlops }) { b, make in
            _ = b.conv2d(make([2, 320, 32, 32], nil), weight: make([320, 320, 3, 3], nil), parameters: Conv2dParameters(stride: 1, padding: 1))
        }
        let attention = rate({ $0.attentionFlops }) { b, make in
            let q = make([2, 1024, 320], nil)
            _ = b.attention(query: q, key: q, value: q, heads: 5)
        }
        let memory = rate({ $0.memoryBytes }) { b, make in
            let x = make([8, 320, 32, 32], nil)
            _ = b.permute(x, [0, 2, 3, 1])
            _ = b.add(x, x)
            _ = b.groupNorm(x, groups: 32, weight: make([320], nil), bias: make([320], nil), epsilon: 1e-5)
        }
        // The fixed cost of one call (argument checks, allocation, handing work to the threads):
        // what the work of small ops of a UNet's innermost level (64 tokens of 320 channels) leaves
        // unexplained, over 50 rounds of linear → layer norm → add.
        let (smallWork, smallTime) = measure { b, make in
            let x = make([64, 320], nil), w = make([320, 320], nil), g = make([320], nil)
            for _ in 0..<50 { _ = b.add(b.layerNorm(b.linear(x, weight: w), weight: g, bias: g, epsilon: 1e-5), x) }
        }
        let workSeconds = smallWork.matmulFlops / matmul + smallWork.memoryBytes / memory
        let perCall = max(smallTime - workSeconds, 0) / smallWork.calls
        // Reading weights: f16 values widened into the compute type, as loading an f16 checkpoint does.
        let (_, loadTime) = measure { b, make in _ = b.convert(make([4 << 20], .f16), to: b.computeType) }
        return CostModel(matmulFlopsPerSecond: matmul, convolutionFlopsPerSecond: convolution, attentionFlopsPerSecond: attention,
                         memoryBytesPerSecond: memory, secondsPerCall: perCall,
                         weightBytesPerSecond: Double((4 << 20) * backend.computeType.size) / max(loadTime, 1e-9), threads: threads, source: source)
    }
}
