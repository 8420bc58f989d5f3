import Dispatch
import Foundation
import KinemaCore

/// One line of `kinema selftest`: an op on fresh random inputs, compared with `ReferenceOps`.
public struct SelfTestResult: Sendable {
    public let op: String
    public let shape: String
    public let maxError: Float
    public let tolerance: Float
    public let milliseconds: Double
    public var passed: Bool { maxError <= tolerance }
}

/// Runs every op of a backend against the scalar references on random inputs (never zeros).
public struct SelfTest {
    let backend: Backend
    private var generator: SystemRandomNumberGenerator

    public init(backend: Backend) {
        self.backend = backend
        self.generator = SystemRandomNumberGenerator()
    }

    /// Normal random values, already rounded to the backend's compute type, so the reference sees
    /// exactly the inputs the backend computes on.
    mutating func normal(_ count: Int, scale: Float = 1) -> [Float] {
        var values: [Float] = (0..<count).map { _ in
            let u1 = Float.random(in: Float.ulpOfOne..<1, using: &generator), u2 = Float.random(in: 0..<1, using: &generator)
            return scale * (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        }
        let dtype = backend.computeType
        if dtype != .f32 {
            let rounded = UnsafeMutableRawPointer.allocate(byteCount: count * dtype.size, alignment: 64)
            defer { rounded.deallocate() }
            values.withUnsafeMutableBytes { buffer in
                DType.convert(buffer.baseAddress!, from: .f32, to: rounded, dtype, count: count)
                DType.convert(rounded, from: dtype, to: buffer.baseAddress!, .f32, count: count)
            }
        }
        return values
    }

    /// The tolerance of a case for this backend's compute type: f32 as given; f16 and bf16 outputs
    /// carry their own rounding (2⁻¹¹ and 2⁻⁸ relative), so their floors are 4e-3 and 3e-2. Exact
    /// cases (tolerance 0: copies) stay exact in every type.
    func tolerance(_ base: Float) -> Float {
        switch backend.computeType {
        case .f32: return base
        case .f16: return base == 0 ? 0 : max(base, 4e-3)
        case .bf16: return base == 0 ? 0 : max(base, 3e-2)
        }
    }

    /// Largest of |actual − expected| / (1 + |expected|): absolute error for small values,
    /// relative for large ones.
    static func error(_ actual: [Float], _ expected: [Float]) -> Float {
        guard actual.count == expected.count else { return .infinity }
        var worst: Float = 0
        for (a, e) in zip(actual, expected) {
            let d = abs(a - e) / (1 + abs(e))
            if !(d <= worst) { worst = d.isNaN ? .infinity : d }
        }
        return worst
    }

    /// The op's output read back to the host, and the milliseconds of op and read (which waits for
    /// a GPU to finish).
    func timed(_ body: () -> Tensor) -> ([Float], Double) {
        let start = DispatchTime.now().uptimeNanoseconds
        let result = backend.floats(body())
        return (result, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
    }

    /// Runs all cases, calling `report` after each one.
    public mutating func run(report: (SelfTestResult) -> Void = { _ in }) -> [SelfTestResult] {
        var results: [SelfTestResult] = []
        func record(_ op: String, _ shape: String, _ actual: ([Float], Double), _ expected: [Float], tolerance: Float = 1e-4) {
            let result = SelfTestResult(op: op, shape: shape, maxError: Self.error(actual.0, expected),
                                        tolerance: self.tolerance(tolerance), milliseconds: actual.1)
            results.append(result)
            report(result)
        }
        let b = backend
        func up(_ values: [Float], _ shape: [Int]) -> Tensor { b.tensor(values, shape: shape) }

        do {
            let x = normal(256 * 320), w = normal(640 * 320, scale: 0.05), bias = normal(640)
            record("linear", "256x320 · 640x320ᵀ", timed { b.linear(up(x, [256, 320]), weight: up(w, [640, 320]), bias: up(bias, [640])) },
                   ReferenceOps.linear(x, rows: 256, inFeatures: 320, weight: w, outFeatures: 640, bias: bias))
        }
        do {
            let a = normal(4 * 48 * 40), m = normal(4 * 40 * 56)
            record("matmul", "4x48x40 · 4x40x56", timed { b.matmul(up(a, [4, 48, 40]), up(m, [4, 40, 56])) },
                   ReferenceOps.matmul(a, m, batch: 4, m: 48, n: 56, k: 40, transposeA: false, transposeB: false, bBatched: true))
        }
        let convCases: [(String, [Int], [Int], Conv2dParameters, Bool)] = [
            ("conv2d 3x3 s1", [2, 32, 24, 20], [48, 32, 3, 3], .init(stride: 1, padding: 1), true),
            ("conv2d 3x3 s2", [1, 32, 24, 20], [32, 32, 3, 3], .init(stride: 2, padding: 1), true),
            ("conv2d 3x3 s2 pad(0,1,0,1)", [1, 16, 16, 18], [16, 16, 3, 3], .init(strideY: 2, strideX: 2, padTop: 0, padLeft: 0, padBottom: 1, padRight: 1), true),
            ("conv2d 1x1", [2, 64, 12, 12], [32, 64, 1, 1], .init(), true),
            ("conv2d 14x14 s14", [1, 3, 56, 56], [64, 3, 14, 14], .init(stride: 14, padding: 0), false),
        ]
        for (name, inShape, wShape, p, hasBias) in convCases {
            let x = normal(inShape.reduce(1, *)), w = normal(wShape.reduce(1, *), scale: 0.1), bias = normal(wShape[0])
            let expected = ReferenceOps.conv2d(x, n: inShape[0], c: inShape[1], h: inShape[2], w: inShape[3], weight: w, o: wShape[0],
                                               kh: wShape[2], kw: wShape[3], bias: hasBias ? bias : nil, stride: (p.strideY, p.strideX),
                                               pad: (p.padTop, p.padLeft, p.padBottom, p.padRight))
            record(name, "\(inShape) * \(wShape)", timed {
                b.conv2d(up(x, inShape), weight: up(w, wShape), bias: hasBias ? up(bias, [wShape[0]]) : nil, parameters: p)
            }, expected.out)
        }
        do {
            let x = normal(2 * 8 * 32 * 64), w = normal(32 * 32 * 3, scale: 0.1), bias = normal(32)
            record("temporalConv k3", "2x8 frames, 32ch, 8x8", timed {
                b.temporalConv(up(x, [16, 32, 8, 8]), weight: up(w, [32, 32, 3, 1, 1]), bias: up(bias, [32]), frames: 8)
            }, ReferenceOps.temporalConv(x, clips: 2, frames: 8, c: 32, pixels: 64, weight: w, o: 32, taps: 3, bias: bias))
        }
        for (frames, silu) in [(1, false), (1, true), (4, false), (4, true)] {
            let x = normal(8 * 64 * 100, scale: 3), w = normal(64), bias = normal(64)
            record("groupNorm\(silu ? "+silu" : "")\(frames > 1 ? " across \(frames) frames" : "")", "8x64x10x10, 32 groups", timed {
                b.groupNorm(up(x, [8, 64, 10, 10]), groups: 32, weight: up(w, [64]), bias: up(bias, [64]), epsilon: 1e-5, frames: frames, fusedSiLU: silu)
            }, ReferenceOps.groupNorm(x, images: 8, channels: 64, spatial: 100, groups: 32, frames: frames, weight: w, bias: bias, eps: 1e-5, silu: silu))
        }
        do {
            let x = normal(77 * 320, scale: 3), w = normal(320), bias = normal(320)
            record("layerNorm", "77x320", timed { b.layerNorm(up(x, [77, 320]), weight: up(w, [320]), bias: up(bias, [320]), epsilon: 1e-5) },
                   ReferenceOps.layerNorm(x, width: 320, weight: w, bias: bias, eps: 1e-5))
            record("softmax", "77x320", timed { b.softmax(up(x, [77, 320])) }, ReferenceOps.softmax(x, width: 320))
        }
        let attentionCases: [(String, Int, Int, Int, Int, Int, Bool)] = [
            ("attention spatial", 1, 512, 512, 2, 32, false),
            ("attention cross", 2, 256, 20, 2, 32, false),
            ("attention causal (CLIP text)", 1, 77, 77, 4, 16, true),
            ("attention temporal", 64, 16, 16, 2, 32, false),
            // Head dims of the released models (UNet and CLIP text 64, CLIP ViT-H 80), odd lengths.
            ("attention spatial d64", 1, 300, 300, 2, 64, false),
            ("attention cross d64", 2, 250, 77, 2, 64, false),
            ("attention causal d64", 1, 77, 77, 2, 64, true),
            ("attention vision d80", 1, 257, 257, 2, 80, false),
            ("attention temporal d64", 32, 24, 24, 2, 64, false),
            ("attention VAE d512", 1, 300, 300, 1, 512, false),
        ]
        for (name, batch, nq, nk, heads, d, causal) in attentionCases {
            let q = normal(batch * nq * heads * d), k = normal(batch * nk * heads * d), v = normal(batch * nk * heads * d)
            record(name, "\(batch)x\(nq)x\(nk), \(heads)x\(d)", timed {
                b.attention(query: up(q, [batch, nq, heads * d]), key: up(k, [batch, nk, heads * d]), value: up(v, [batch, nk, heads * d]),
                            heads: heads, causal: causal, queryChunk: 128)
            }, ReferenceOps.attention(q: q, k: k, v: v, batch: batch, queries: nq, keys: nk, heads: heads, headDim: d, causal: causal))
        }
        do {
            let x = normal(65536, scale: 4)
            record("gelu (erf)", "65536", timed { b.gelu(up(x, [65536])) }, x.map(ReferenceOps.gelu), tolerance: 1e-5)
            record("quickGelu", "65536", timed { b.quickGelu(up(x, [65536])) }, x.map(ReferenceOps.quickGelu), tolerance: 1e-5)
            record("silu", "65536", timed { b.silu(up(x, [65536])) }, x.map(ReferenceOps.silu), tolerance: 1e-5)
            var expected: [Float] = []
            for r in 0..<64 { for i in 0..<512 { expected.append(x[r * 1024 + i] * ReferenceOps.gelu(x[r * 1024 + 512 + i])) } }
            record("geglu", "64x1024", timed { b.geglu(up(x, [64, 1024])) }, expected, tolerance: 1e-5)
        }
        do {
            let x = normal(4 * 32 * 64), bias = normal(32)
            var expected = x
            for i in expected.indices { expected[i] += bias[(i / 64) % 32] }
            record("add (channel broadcast)", "4x32x8x8 + 32x1x1", timed { b.add(up(x, [4, 32, 8, 8]), up(bias, [32, 1, 1])) }, expected, tolerance: 1e-6)
            let y = normal(4 * 32 * 64)
            record("mul", "4x32x8x8", timed { b.mul(up(x, [4, 32, 8, 8]), up(y, [4, 32, 8, 8])) }, zip(x, y).map(*), tolerance: 1e-6)
            var permuted = [Float](repeating: 0, count: x.count)
            for n in 0..<4 { for c in 0..<32 { for p in 0..<64 { permuted[(n * 64 + p) * 32 + c] = x[(n * 32 + c) * 64 + p] } } }
            record("permute", "4x32x64 -> 4x64x32", timed { b.permute(up(x, [4, 32, 64]), [0, 2, 1]) }, permuted, tolerance: 0)
            var concatenated: [Float] = []
            for n in 0..<4 {
                let block = (n * 2048)..<((n + 1) * 2048)
                concatenated += x[block]
                concatenated += y[block]
            }
            record("concat", "2x(4x32x64) on dim 1", timed { b.concat([up(x, [4, 32, 64]), up(y, [4, 32, 64])], axis: 1) },
                   concatenated, tolerance: 0)
            var upsampled: [Float] = []
            for plane in 0..<128 { for yy in 0..<16 { for xx in 0..<16 { upsampled.append(x[plane * 64 + (yy / 2) * 8 + xx / 2]) } } }
            record("upsampleNearest 2x", "4x32x8x8", timed { b.upsampleNearest(up(x, [4, 32, 8, 8])) }, upsampled, tolerance: 0)
            record("convert f32->f16->f32", "8192", timed { b.convert(b.convert(up(x, [8192]), to: .f16), to: .f32) }, x, tolerance: 1e-3)
            record("convert f32->bf16->f32", "8192", timed { b.convert(b.convert(up(x, [8192]), to: .bf16), to: .f32) }, x, tolerance: 8e-3)
            let ids = [49406, 320, 1125, 49407].map { $0 % 128 }
            record("embedding", "4 ids, 128x64 table", timed { b.embedding(ids: ids, table: up(x, [128, 64])) },
                   ids.flatMap { Array(x[($0 * 64)..<(($0 + 1) * 64)]) }, tolerance: 0)
        }
        do {
            let timesteps: [Float] = [999, 500, 1]
            var expected: [Float] = []
            let frequencies: [Double] = (0..<160).map { exp(-log(10000.0) * Double($0) / 160) }
            for t in timesteps {
                expected += frequencies.map { Float(cos(Double(t) * $0)) }
                expected += frequencies.map { Float(sin(Double(t) * $0)) }
            }
            record("timestepEmbedding", "3x320", timed { b.timestepEmbedding(timesteps, parameters: .init(dimension: 320, flipSinToCos: true, downscaleFreqShift: 0)) },
                   expected, tolerance: 2e-4)
        }
        return results
    }
}
