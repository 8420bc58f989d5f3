// torch's float32 arithmetic on the CPU, reproduced bit for bit where diffusers' numbers depend on it:
// each function does the same operations in the same order and precision as ATen's CPU kernels in the
// x86 wheels (torch 2.15), so the scheduler's numbers equal diffusers' exactly.
import Foundation

/// `torch.linspace(start, end, count, dtype=float32)` on the CPU: the first half counts up from `start`,
/// the second down from `end`. torch's x86 builds (AVX2/AVX-512) contract `start + step * i` into one
/// fused multiply-add, so the fused form is what diffusers gets there.
func torchLinspace(from start: Float, to end: Float, count: Int) -> [Float] {
    if count == 1 { return [start] }
    let step = (end - start) / Float(count - 1)
    let halfway = count / 2
    return (0..<count).map { i in
        i < halfway ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(count - i - 1))
    }
}

/// `torch.cumprod` of a float32 vector on the CPU, which accumulates in double (ATen's CPU accumulate
/// type for float) and rounds each running product to float32.
func torchCumprod(_ values: [Float]) -> [Float] {
    var product = 1.0
    return values.map { value in
        product *= Double(value)
        return Float(product)
    }
}

/// `torch.quantile(values, q)` with linear interpolation, on the CPU: q becomes a float32 tensor, the
/// rank q·(n−1) is computed in double and its fractional part rounded to float32, and the lerp is fused
/// as ATen's compiled kernel is (all found bit-exact against torch 2.15). A NaN makes the quantile NaN.
func torchQuantile(_ values: [Float], _ q: Double) -> Float {
    if values.contains(where: { $0.isNaN }) { return .nan }
    let sorted = values.sorted()
    let rank = Double(Float(q)) * Double(sorted.count - 1)
    let below = Int(rank), above = Int(rank.rounded(.up))
    let weight = Float(rank - Double(below))
    let low = sorted[below], high = sorted[above]
    let difference = high - low
    // ATen's lerp: low + w·(high − low) for small weights, high − (high − low)·(1 − w) otherwise.
    return abs(weight) < 0.5 ? low.addingProduct(weight, difference) : high.addingProduct(-difference, 1 - weight)
}

/// `torch.clamp(value, lower, upper)`: NaN stays NaN; when `lower > upper` the result is `upper`.
func torchClamp(_ value: Float, _ lower: Float, _ upper: Float) -> Float {
    value.isNaN ? value : min(max(value, lower), upper)
}

/// `torch.sqrt` of a float32 as torch's x86 wheels compute it: through MKL's vector math library
/// (`vmsSqrt`, high-accuracy mode), which on AVX-512 CPUs is a 14-bit reciprocal-square-root estimate
/// (`vrsqrt14ps`) plus one fused Newton correction, and differs from IEEE sqrt by 1 ulp for ~0.6% of
/// inputs. Checked bit for bit against torch 2.15 on all floats in [1, 4) and 4 M random floats
/// (`tools/make_scheduler_fixtures.py` keeps a sample); builds without MKL (macOS, ARM) give IEEE sqrt.
func torchSqrt(_ x: Float) -> Float {
    if x.isNaN || x == 0 || x == .infinity { return x }
    if x < 0 { return .nan }
    // MKL keeps the residual below from going subnormal; scaling by a power of 4 is exact.
    if x < 0x1p-64 { return torchSqrt(x * 0x1p64) * 0x1p-32 }
    let estimate = reciprocalSquareRootEstimate(x)
    let root = x * estimate, halfEstimate = 0.5 * estimate
    let residual = x.addingProduct(-root, root)
    return root.addingProduct(residual, halfEstimate)
}

/// `vrsqrt14ps` for a positive finite float, bit-exact, after Intel's published reference
/// implementation of the AVX-512 approximation instructions: with x = m·4^n and m in [1, 4), a
/// linear piece c − d·(m′ − y) on one of 32 intervals of [1, 2) or [2, 4) (m′ is m with its 8 lowest
/// bits cleared), truncated to 16 fraction bits, then scaled by 2^−n.
private func reciprocalSquareRootEstimate(_ x: Float) -> Float {
    var significand = x.bitPattern & 0x007F_FFFF
    var exponent = Int(x.bitPattern >> 23) - 127
    if x.bitPattern >> 23 == 0 {  // subnormal: normalize
        exponent = -126
        while significand & 0x0080_0000 == 0 {
            significand <<= 1
            exponent -= 1
        }
        significand &= 0x007F_FFFF
    }
    let oddExponent = exponent & 1 != 0
    let halfExponent = (oddExponent ? exponent - 1 : exponent) / 2
    let m = Float(bitPattern: (oddExponent ? 0x4000_0000 : 0x3F80_0000) | significand)  // x / 4^halfExponent
    var estimate: Float = 1
    if m != 1 {
        let interval = oddExponent ? Int((m - 2) * 16) : Int((m - 1) * 32)
        let center = oddExponent ? 2 + 1.0 / 32 + Float(interval) / 16 : 1 + 1.0 / 64 + Float(interval) / 32
        let row = interval * 4 + (oddExponent ? 2 : 0)
        let slope = Double(rsqrt14Coefficients[row]) * (oddExponent ? 128 : 256)
        let offset = Double(Float(bitPattern: m.bitPattern & 0xFFFF_FF00) - center)  // exact
        let linear = Double(rsqrt14Coefficients[row + 1]) - slope * offset  // exact in double
        // Keep 16 fraction bits and divide by 2^19 (the coefficients are scaled integers).
        estimate = Float(Double(bitPattern: (linear.bitPattern & 0xFFFF_FFF0_0000_0000) - 0x0130_0000_0000_0000))
    }
    return Float(bitPattern: UInt32(bitPattern: Int32(bitPattern: estimate.bitPattern) - Int32(halfExponent) << 23))
}

/// Per interval i of the estimate: (d, c) for m in [1, 2), then (d, c) for m in [2, 4); c is the value
/// at the interval's center times 2^19, d the slope's magnitude times 2^11 (2^12 for [2, 4)).
private let rsqrt14Coefficients: [UInt32] = [
    1001, 520261, 707, 367881, 955, 512437, 675, 362349, 915, 504953, 647, 357056, 877, 497790, 619, 351992,
    841, 490922, 595, 347136, 807, 484331, 571, 342475, 775, 478001, 549, 337997, 747, 471909, 527, 333693,
    719, 466046, 509, 329545, 693, 460397, 491, 325551, 669, 454947, 473, 321697, 647, 449688, 457, 317977,
    625, 444606, 441, 314385, 603, 439694, 427, 310910, 585, 434939, 413, 307549, 567, 430335, 401, 304295,
    549, 425875, 389, 301139, 533, 421551, 377, 298079, 517, 417355, 365, 295115, 501, 413284, 355, 292237,
    487, 409329, 345, 289439, 473, 405487, 335, 286722, 461, 401748, 325, 284080, 449, 398111, 317, 281508,
    437, 394571, 309, 279006, 425, 391127, 301, 276569, 415, 387770, 293, 274195, 403, 384498, 285, 271882,
    393, 381307, 279, 269625, 385, 378194, 271, 267425, 375, 375155, 265, 265276, 367, 372190, 259, 263178,
]
