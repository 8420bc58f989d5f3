import Foundation

/// Straightforward scalar definitions of the ops, accumulating in Double: what the fast kernels
/// are checked against, by the tests and by `kinema selftest`. Shapes and semantics follow torch.
public enum ReferenceOps {
    public static func linear(_ x: [Float], rows: Int, inFeatures: Int, weight: [Float], outFeatures: Int, bias: [Float]?) -> [Float] {
        var out = [Float](repeating: 0, count: rows * outFeatures)
        for r in 0..<rows {
            for o in 0..<outFeatures {
                var sum = Double(bias?[o] ?? 0)
                for i in 0..<inFeatures { sum += Double(x[r * inFeatures + i]) * Double(weight[o * inFeatures + i]) }
                out[r * outFeatures + o] = Float(sum)
            }
        }
        return out
    }

    public static func matmul(_ a: [Float], _ b: [Float], batch: Int, m: Int, n: Int, k: Int,
                       transposeA: Bool, transposeB: Bool, bBatched: Bool) -> [Float] {
        var out = [Float](repeating: 0, count: batch * m * n)
        for bi in 0..<batch {
            for i in 0..<m {
                for j in 0..<n {
                    var sum = 0.0
                    for p in 0..<k {
                        let av = transposeA ? a[bi * m * k + p * m + i] : a[bi * m * k + i * k + p]
                        let bb = bBatched ? bi * k * n : 0
                        let bv = transposeB ? b[bb + j * k + p] : b[bb + p * n + j]
                        sum += Double(av) * Double(bv)
                    }
                    out[(bi * m + i) * n + j] = Float(sum)
                }
            }
        }
        return out
    }

    public static func conv2d(_ x: [Float], n: Int, c: Int, h: Int, w: Int, weight: [Float], o: Int, kh: Int, kw: Int,
                       bias: [Float]?, stride: (Int, Int), pad: (top: Int, left: Int, bottom: Int, right: Int)) -> (out: [Float], oh: Int, ow: Int) {
        let oh = (h + pad.top + pad.bottom - kh) / stride.0 + 1
        let ow = (w + pad.left + pad.right - kw) / stride.1 + 1
        var out = [Float](repeating: 0, count: n * o * oh * ow)
        for ni in 0..<n { for oc in 0..<o { for y in 0..<oh { for xo in 0..<ow {
            var sum = Double(bias?[oc] ?? 0)
            for ci in 0..<c { for ky in 0..<kh { for kx in 0..<kw {
                let iy = y * stride.0 - pad.top + ky, ix = xo * stride.1 - pad.left + kx
                if iy < 0 || iy >= h || ix < 0 || ix >= w { continue }
                sum += Double(x[((ni * c + ci) * h + iy) * w + ix]) * Double(weight[((oc * c + ci) * kh + ky) * kw + kx])
            }}}
            out[((ni * o + oc) * oh + y) * ow + xo] = Float(sum)
        }}}}
        return (out, oh, ow)
    }

    /// Conv3d (kt,1,1) over frames, on (clips*frames, C, H, W).
    public static func temporalConv(_ x: [Float], clips: Int, frames: Int, c: Int, pixels: Int, weight: [Float], o: Int, taps: Int, bias: [Float]?) -> [Float] {
        var out = [Float](repeating: 0, count: clips * frames * o * pixels)
        for b in 0..<clips { for f in 0..<frames { for oc in 0..<o { for p in 0..<pixels {
            var sum = Double(bias?[oc] ?? 0)
            for t in 0..<taps {
                let source = f + t - taps / 2
                if source < 0 || source >= frames { continue }
                for ci in 0..<c { sum += Double(weight[(oc * c + ci) * taps + t]) * Double(x[((b * frames + source) * c + ci) * pixels + p]) }
            }
            out[((b * frames + f) * o + oc) * pixels + p] = Float(sum)
        }}}}
        return out
    }

    public static func groupNorm(_ x: [Float], images: Int, channels: Int, spatial: Int, groups: Int, frames: Int,
                          weight: [Float]?, bias: [Float]?, eps: Float, silu: Bool) -> [Float] {
        var out = x
        let perGroup = channels / groups
        for clip in 0..<(images / frames) {
            for g in 0..<groups {
                var indices: [Int] = []
                for f in 0..<frames { for c in (g * perGroup)..<((g + 1) * perGroup) { for s in 0..<spatial {
                    indices.append(((clip * frames + f) * channels + c) * spatial + s)
                }}}
                let mean = indices.reduce(0.0) { $0 + Double(x[$1]) } / Double(indices.count)
                let variance = indices.reduce(0.0) { $0 + pow(Double(x[$1]) - mean, 2) } / Double(indices.count)
                for i in indices {
                    let c = (i / spatial) % channels
                    var y = (Double(x[i]) - mean) / (variance + Double(eps)).squareRoot() * Double(weight?[c] ?? 1) + Double(bias?[c] ?? 0)
                    if silu { y = y / (1 + exp(-y)) }
                    out[i] = Float(y)
                }
            }
        }
        return out
    }

    public static func layerNorm(_ x: [Float], width: Int, weight: [Float]?, bias: [Float]?, eps: Float) -> [Float] {
        var out = x
        for r in 0..<(x.count / width) {
            let row = (0..<width).map { Double(x[r * width + $0]) }
            let mean = row.reduce(0, +) / Double(width)
            let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(width)
            for i in 0..<width {
                out[r * width + i] = Float((row[i] - mean) / (variance + Double(eps)).squareRoot() * Double(weight?[i] ?? 1) + Double(bias?[i] ?? 0))
            }
        }
        return out
    }

    public static func softmax(_ x: [Float], width: Int) -> [Float] {
        var out = x
        for r in 0..<(x.count / width) {
            let row = (0..<width).map { Double(x[r * width + $0]) }
            let peak = row.max()!
            let exps = row.map { exp($0 - peak) }
            let sum = exps.reduce(0, +)
            for i in 0..<width { out[r * width + i] = Float(exps[i] / sum) }
        }
        return out
    }

    public static func attention(q: [Float], k: [Float], v: [Float], batch: Int, queries: Int, keys: Int, heads: Int,
                          headDim: Int, causal: Bool) -> [Float] {
        let width = heads * headDim
        var out = [Float](repeating: 0, count: batch * queries * width)
        let scale = 1 / Double(headDim).squareRoot()
        for b in 0..<batch { for h in 0..<heads { for i in 0..<queries {
            let valid = causal ? min(i + 1, keys) : keys
            var scores = [Double](repeating: 0, count: valid)
            for j in 0..<valid {
                var s = 0.0
                for d in 0..<headDim { s += Double(q[(b * queries + i) * width + h * headDim + d]) * Double(k[(b * keys + j) * width + h * headDim + d]) }
                scores[j] = s * scale
            }
            let peak = scores.max()!
            let exps = scores.map { exp($0 - peak) }
            let sum = exps.reduce(0, +)
            for d in 0..<headDim {
                var acc = 0.0
                for j in 0..<valid { acc += exps[j] / sum * Double(v[(b * keys + j) * width + h * headDim + d]) }
                out[(b * queries + i) * width + h * headDim + d] = Float(acc)
            }
        }}}
        return out
    }

    public static func gelu(_ x: Float) -> Float { Float(0.5 * Double(x) * (1 + erf(Double(x) / 2.0.squareRoot()))) }
    public static func quickGelu(_ x: Float) -> Float { Float(Double(x) / (1 + exp(-1.702 * Double(x)))) }
    public static func silu(_ x: Float) -> Float { Float(Double(x) / (1 + exp(-Double(x)))) }
}
