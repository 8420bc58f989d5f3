import Dispatch
import Foundation
import KinemaCore

/// The timed ops of `kinema bench ops`; names and shapes match `tools/bench_ops.py` (the torch
/// side), so the two can be put side by side.
public struct OpBenchmark {
    /// One op's timing: median of `runs` after two warm-up runs.
    public struct Timing: Sendable {
        public let name: String
        public let medianMilliseconds: Double
        public let runs: Int
        /// Counted floating-point operations per call, nil where counting makes no sense.
        public let flops: Double?
        public var gflops: Double? { flops.map { $0 / medianMilliseconds / 1e6 } }
    }

    let backend: CPUBackend
    public init(backend: CPUBackend) { self.backend = backend }

    public static let names = [
        "matmul_4096x320x320", "matmul_4096x1280x5120", "conv2d_3x3_320_64x64_b2", "group_norm_silu_32x320x64x64",
        "attention_4096x320_h5", "temporal_attention_4096x16x320_h5",
        "raw_sgemm_4096x320x320", "raw_sgemm_4096x1280x5120",
    ]

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    func time(_ name: String, runs: Int, flops: Double?, _ body: () -> Void) -> Timing {
        body(); body()
        var samples: [Double] = []
        for _ in 0..<runs {
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        return Timing(name: name, medianMilliseconds: Self.median(samples), runs: runs, flops: flops)
    }

    func random(_ shape: [Int]) -> Tensor {
        // A cheap linear congruential stream: the values only need to be non-trivial.
        var state = UInt64.random(in: 1...UInt64.max)
        let values = (0..<shape.reduce(1, *)).map { _ -> Float in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max)
        }
        return backend.tensor(values, shape: shape)
    }

    /// Times the ops named in `only` (all when empty).
    public func run(runs: Int, only: Set<String> = [], report: (Timing) -> Void = { _ in }) -> [Timing] {
        let b = backend
        var results: [Timing] = []
        func add(_ name: String, flops: Double?, _ body: () -> Void) {
            guard only.isEmpty || only.contains(name) else { return }
            let timing = time(name, runs: runs, flops: flops, body)
            results.append(timing)
            report(timing)
        }
        for (m, k, n) in [(4096, 320, 320), (4096, 1280, 5120)] {
            let name = "\(m)x\(k)x\(n)"
            guard only.isEmpty || only.contains("matmul_\(name)") || only.contains("raw_sgemm_\(name)") else { continue }
            let a = random([m, k]), w = random([k, n])
            add("matmul_\(name)", flops: 2.0 * Double(m * n * k)) { _ = b.matmul(a, w) }
            let c = b.empty([m, n])
            add("raw_sgemm_\(name)", flops: 2.0 * Double(m * n * k)) {
                BLAS.sgemm(transposeA: false, transposeB: false, m: m, n: n, k: k, a: a.pointer(), lda: k,
                           b: w.pointer(), ldb: n, beta: 0, c: c.pointer(), ldc: n)
            }
        }
        if only.isEmpty || only.contains("conv2d_3x3_320_64x64_b2") {
            let x = random([2, 320, 64, 64]), w = random([320, 320, 3, 3]), bias = random([320])
            add("conv2d_3x3_320_64x64_b2", flops: 2.0 * 2 * 320 * 320 * 9 * 64 * 64) {
                _ = b.conv2d(x, weight: w, bias: bias, parameters: .init(stride: 1, padding: 1))
            }
        }
        if only.isEmpty || only.contains("group_norm_silu_32x320x64x64") {
            let x = random([32, 320, 64, 64]), w = random([320]), bias = random([320])
            add("group_norm_silu_32x320x64x64", flops: nil) {
                _ = b.groupNorm(x, groups: 32, weight: w, bias: bias, epsilon: 1e-5, fusedSiLU: true)
            }
        }
        if only.isEmpty || only.contains("attention_4096x320_h5") {
            let q = random([1, 4096, 320]), k = random([1, 4096, 320]), v = random([1, 4096, 320])
            add("attention_4096x320_h5", flops: 4.0 * 5 * 4096 * 4096 * 64) { _ = b.attention(query: q, key: k, value: v, heads: 5) }
        }
        if only.isEmpty || only.contains("temporal_attention_4096x16x320_h5") {
            let q = random([4096, 16, 320]), k = random([4096, 16, 320]), v = random([4096, 16, 320])
            add("temporal_attention_4096x16x320_h5", flops: 4.0 * 4096 * 5 * 16 * 16 * 64) { _ = b.attention(query: q, key: k, value: v, heads: 5) }
        }
        return results
    }
}
