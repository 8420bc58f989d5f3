import Foundation
import KinemaCore

extension CPUBackend {
    public func groupNormKernel(_ input: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, epsilon: Float,
                                frames: Int, fusedSiLU: Bool, into output: Tensor) {
        requireF32(input, weight, bias, op: "groupNorm")
        let images = input.shape[0], channels = input.shape[1]
        let spatial = input.count / max(images * channels, 1)
        let perGroup = channels / groups
        let clips = images / frames
        let x = input.pointer(Float.self), y = output.pointer(Float.self)
        let gamma = weight?.pointer(Float.self), beta = bias?.pointer(Float.self)
        let total = Float(frames * perGroup * spatial)
        // One task per (clip, group); a group spans its channels in every frame of the clip.
        parallelFor(clips * groups, threads: threads) { range in
            for task in range {
                let clip = task / groups, group = task % groups
                func segment(_ f: Int, _ c: Int) -> Int { ((clip * frames + f) * channels + c) * spatial }
                let channelRange = (group * perGroup)..<((group + 1) * perGroup)
                var sum: Float = 0
                for f in 0..<frames { for c in channelRange { sum += sumVectors(x + segment(f, c), spatial) } }
                let mean = sum / total
                var squares: Float = 0
                for f in 0..<frames { for c in channelRange { squares += squaredDeviationSum(x + segment(f, c), spatial, mean: mean) } }
                let rstd = 1 / (squares / total + epsilon).squareRoot()
                for c in channelRange {
                    let scale = rstd * (gamma?[c] ?? 1)
                    let shift = (beta?[c] ?? 0) - mean * scale
                    let s = Vector(repeating: scale), b = Vector(repeating: shift)
                    for f in 0..<frames {
                        let offset = segment(f, c)
                        if fusedSiLU {
                            mapVectors(x + offset, y + offset, spatial) { vsilu($0 * s + b) }
                        } else {
                            mapVectors(x + offset, y + offset, spatial) { $0 * s + b }
                        }
                    }
                }
            }
        }
    }

    public func layerNormKernel(_ input: Tensor, weight: Tensor?, bias: Tensor?, epsilon: Float, into output: Tensor) {
        requireF32(input, weight, bias, op: "layerNorm")
        let width = input.dim(-1), rows = input.count / max(width, 1)
        let x = input.pointer(Float.self), y = output.pointer(Float.self)
        let gamma = weight?.pointer(Float.self), beta = bias?.pointer(Float.self)
        parallelFor(rows, threads: threads, minimumPerThread: max(1, 8192 / max(width, 1))) { range in
            for r in range {
                let row = x + r * width, out = y + r * width
                let mean = sumVectors(row, width) / Float(width)
                let rstd = 1 / (squaredDeviationSum(row, width, mean: mean) / Float(width) + epsilon).squareRoot()
                for i in 0..<width {
                    out[i] = (row[i] - mean) * rstd * (gamma?[i] ?? 1) + (beta?[i] ?? 0)
                }
            }
        }
    }

    public func softmaxKernel(_ input: Tensor, into output: Tensor) {
        requireF32(input, op: "softmax")
        let width = input.dim(-1), rows = input.count / max(width, 1)
        let x = input.pointer(Float.self), y = output.pointer(Float.self)
        parallelFor(rows, threads: threads, minimumPerThread: max(1, 8192 / max(width, 1))) { range in
            for r in range { softmaxRow(x + r * width, y + r * width, width, scale: 1, validCount: width) }
        }
    }
}

/// `out = softmax(scale · row)` over the first `validCount` entries; entries past it are 0 (a
/// causal mask). `row` and `out` may be the same buffer.
@inline(__always)
func softmaxRow(_ row: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ width: Int, scale: Float, validCount: Int) {
    let peak = maxVectors(row, validCount) * scale
    let s = Vector(repeating: scale), m = Vector(repeating: peak)
    mapVectors(row, out, validCount) { vexp($0 * s - m) }
    let inverse = 1 / sumVectors(out, validCount)
    let v = Vector(repeating: inverse)
    mapVectors(out, out, validCount) { $0 * v }
    if validCount < width { (out + validCount).update(repeating: 0, count: width - validCount) }
}
