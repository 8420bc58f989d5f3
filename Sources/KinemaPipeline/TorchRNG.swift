import Foundation

/// PyTorch's CPU random generator (`torch.Generator("cpu")`, also the global generator behind
/// `torch.manual_seed`), reproducing `torch.randn` and `torch.rand` for float32 bit for bit.
///
/// Kinema's `--seed S` must give diffusers' video for seed S, so the noise must be torch's own:
/// an mt19937 stream turned into normals by the same two algorithms torch picks by size.
/// - Fewer than 16 values: scalar Box–Muller in double precision on 53-bit uniforms; each pair
///   yields two normals and the second is cached in the generator for the next scalar draw.
/// - 16 values or more: the first half of every 16-value chunk of 24-bit uniforms gives the
///   radii and the second half the angles; a partial last chunk is redrawn as the last 16 values.
///   Values are those of torch's AVX2 kernel (used on every x86-64 CPU with AVX2, AVX-512 ones
///   included). Torch builds without AVX2 (ARM, for one) use libm there instead and differ from
///   these values by up to about 2e-6.
///
/// Successive calls continue one stream exactly as successive torch calls on one generator do,
/// including the cached normal, which a large draw neither uses nor clears.
public struct TorchGenerator: Sendable {
    private var engine: MersenneTwister
    /// torch's `next_double_normal_sample`: the unused second normal of the last scalar pair.
    /// (torch's float cache is not read by any float32 path, so it is not kept here.)
    private var cachedNormal: Double?

    /// A generator as after `torch.Generator().manual_seed(seed)` or `torch.manual_seed(seed)`.
    /// Only the low 32 bits of `seed` reach the engine, as in torch, so `seed` and
    /// `seed + 2^32` give the same stream.
    public init(seed: UInt64) {
        engine = MersenneTwister(seed: UInt32(truncatingIfNeeded: seed))
        cachedNormal = nil
    }

    /// `torch.randn(count, generator: self, dtype: torch.float32)`: standard normal values.
    public mutating func randn(count: Int) -> [Float] {
        precondition(count >= 0, "randn needs a non-negative count, got \(count)")
        if count < AVX2BoxMuller.chunk {
            return (0..<count).map { _ in Float(scalarNormal() + 0) }  // torch adds mean 0: -0 becomes +0
        }
        var values = [Float](repeating: 0, count: count)
        values.withUnsafeMutableBufferPointer { values in
            fillUniform(values)
            for start in stride(from: 0, through: count - AVX2BoxMuller.chunk, by: AVX2BoxMuller.chunk) {
                AVX2BoxMuller.transform(values.baseAddress! + start)
            }
            if count % AVX2BoxMuller.chunk != 0 {
                // torch quirk: the partial last chunk is not completed but replaced, with fresh
                // uniforms, by the last 16 values, so those overwrite already finished normals.
                let tail = UnsafeMutableBufferPointer(rebasing: values[(count - AVX2BoxMuller.chunk)...])
                fillUniform(tail)
                AVX2BoxMuller.transform(tail.baseAddress!)
            }
        }
        return values
    }

    /// `torch.randn(shape, generator: self, dtype: torch.float32)` in row-major order.
    public mutating func randn(shape: [Int]) -> [Float] {
        precondition(shape.allSatisfy { $0 >= 0 }, "randn needs non-negative dimensions, got \(shape)")
        return randn(count: shape.reduce(1, *))
    }

    /// `torch.rand(count, generator: self, dtype: torch.float32)`: uniform values in [0, 1), each
    /// one of the 2^24 multiples of 2^-24.
    public mutating func rand(count: Int) -> [Float] {
        precondition(count >= 0, "rand needs a non-negative count, got \(count)")
        var values = [Float](repeating: 0, count: count)
        values.withUnsafeMutableBufferPointer { fillUniform($0) }
        return values
    }

    /// torch's `uniform_real_distribution<float>(0, 1)`: the low 24 bits of one 32-bit draw.
    private mutating func fillUniform(_ values: UnsafeMutableBufferPointer<Float>) {
        for index in values.indices {
            values[index] = Float(engine.next() & 0xFF_FFFF) * 0x1p-24
        }
    }

    /// torch's `uniform_real_distribution<double>(0, 1)`: the low 53 bits of a 64-bit draw made of
    /// two 32-bit draws, the first one high.
    private mutating func uniformDouble() -> Double {
        let high = UInt64(engine.next())
        let low = UInt64(engine.next())
        return Double((high << 32 | low) & (1 << 53 - 1)) * 0x1p-53
    }

    /// torch's `normal_distribution<double>`: Box–Muller on a pair of uniforms, returning the cosine
    /// branch and caching the sine branch (libm's double log1p/sin/cos, as torch calls them).
    private mutating func scalarNormal() -> Double {
        if let cached = cachedNormal {
            cachedNormal = nil
            return cached
        }
        let angleUniform = uniformDouble()
        let radiusUniform = uniformDouble()
        let radius = (-2.0 * log1p(-radiusUniform)).squareRoot()
        let theta = 2.0 * Double.pi * angleUniform
        cachedNormal = radius * sin(theta)
        return radius * cos(theta)
    }
}

/// at::mt19937 (MT19937 with Matsumoto–Nishimura 2002 seeding), the engine of torch's CPU generator.
struct MersenneTwister: Sendable {
    private static let stateCount = 624
    private static let shift = 397
    private var state: [UInt32]
    /// Index of the next state word to temper; `stateCount` means the state must be regenerated
    /// first, as right after seeding.
    private var index: Int

    init(seed: UInt32) {
        var state = [UInt32](repeating: 0, count: Self.stateCount)
        state[0] = seed
        for j in 1..<Self.stateCount {
            state[j] = 1_812_433_253 &* (state[j - 1] ^ (state[j - 1] >> 30)) &+ UInt32(j)
        }
        self.state = state
        index = Self.stateCount
    }

    /// The next tempered 32-bit output.
    mutating func next() -> UInt32 {
        if index == Self.stateCount { regenerate() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    private mutating func regenerate() {
        let n = Self.stateCount
        let m = Self.shift
        state.withUnsafeMutableBufferPointer { state in
            for j in 0..<n {
                let mixed = (state[j] & 0x8000_0000) | (state[(j + 1) % n] & 0x7FFF_FFFF)
                let twisted = (mixed >> 1) ^ (state[(j + 1) % n] & 1 == 0 ? 0 : 0x9908_B0DF)
                state[j] = state[(j + m) % n] ^ twisted
            }
        }
        index = 0
    }
}

/// torch's `NormalFill16<float>` AVX2 kernel, one lane at a time: Box–Muller with the Cephes-style
/// `log256_ps` and `sincos256_ps` of ATen's avx_mathfun.h.
///
/// Every multiply whose only use is an add is fused here, because GCC contracts them that way in
/// torch's build (-ffp-contract=fast); checked bit-exact against torch on millions of values.
/// Inputs are limited by construction: `log` sees 1 - u in [2^-24, 1] and `sincos` sees
/// 2πu in [0, 2π), so avx_mathfun's clamps for zero, negative and denormal inputs never act
/// and are left out.
enum AVX2BoxMuller {
    /// Values per Box–Muller block: radii from the first 8 uniforms, angles from the last 8.
    static let chunk = 16

    /// Turns 16 uniforms in [0, 1) at `data` into 16 standard normals in place.
    static func transform(_ data: UnsafeMutablePointer<Float>) {
        // Float(2.0f * c10::pi<double>): the product is taken in double, then rounded.
        let twoPi = Float(2 * Double.pi)
        for j in 0..<8 {
            let radius = (-2 * log(1 - data[j])).squareRoot()
            let (sine, cosine) = sincos(twoPi * data[j + 8])
            // torch stores fma(n, std = 1, mean = 0), which is n except that -0 becomes +0.
            data[j] = radius * cosine + 0
            data[j + 8] = radius * sine + 0
        }
    }

    /// `log256_ps` for x in [2^-24, 1]: x = m·2^e with m in [√½, √2), then a degree-9 polynomial.
    static func log(_ x: Float) -> Float {
        let bits = x.bitPattern
        var exponent = Float(Int32(bits >> 23) - 0x7F) + 1
        // Keep the mantissa with the exponent of 0.5: m in [0.5, 1).
        let mantissa = Float(bitPattern: (bits & ~0x7F80_0000) | Float(0.5).bitPattern)
        let belowSqrtHalf = mantissa < 0.707106781186547524
        var m = mantissa - 1
        exponent -= belowSqrtHalf ? 1 : 0
        m += belowSqrtHalf ? mantissa : 0
        let m2 = m * m
        var y: Float = 7.0376836292E-2
        y = y.times(m, plus: -1.1514610310E-1)
        y = y.times(m, plus: 1.1676998740E-1)
        y = y.times(m, plus: -1.2420140846E-1)
        y = y.times(m, plus: 1.4249322787E-1)
        y = y.times(m, plus: -1.6668057665E-1)
        y = y.times(m, plus: 2.0000714765E-1)
        y = y.times(m, plus: -2.4999993993E-1)
        y = y.times(m, plus: 3.3333331174E-1)
        y = y * m
        y = y.times(m2, plus: exponent * -2.12194440e-4)
        y = (-m2).times(0.5, plus: y)
        let sum = m + y
        return exponent.times(0.693359375, plus: sum)
    }

    /// `sincos256_ps` for x in [0, 2π): reduction by multiples of π/4 in three parts, then the
    /// Cephes sine and cosine polynomials, each picked per octant.
    static func sincos(_ x: Float) -> (sin: Float, cos: Float) {
        // Octant j rounded up to even (cephes: j = (j + 1) & ~1); truncation as cvttps.
        let octant = (Int32(x * 1.27323954473516) + 1) & ~1
        let y = Float(octant)
        var r = y.times(-0.78515625, plus: x)
        r = y.times(-2.4187564849853515625e-4, plus: r)
        r = y.times(-3.77489497744594108e-8, plus: r)
        let sinSign = UInt32(octant & 4) << 29
        let cosSign = UInt32(~(octant - 2) & 4) << 29
        let usesSinPolynomial = octant & 2 == 0

        let r2 = r * r
        var cosPolynomial: Float = 2.443315711809948E-005
        cosPolynomial = cosPolynomial.times(r2, plus: -1.388731625493765E-003)
        cosPolynomial = cosPolynomial.times(r2, plus: 4.166664568298827E-002)
        cosPolynomial = cosPolynomial * r2
        cosPolynomial = cosPolynomial.times(r2, plus: -(r2 * 0.5))
        cosPolynomial = cosPolynomial + 1

        var sinPolynomial: Float = -1.9515295891E-4
        sinPolynomial = sinPolynomial.times(r2, plus: 8.3321608736E-3)
        sinPolynomial = sinPolynomial.times(r2, plus: -1.6666654611E-1)
        sinPolynomial = sinPolynomial * r2
        sinPolynomial = sinPolynomial.times(r, plus: r)

        // The kernel blends the two with masks and adds, so the picked value gets "+ 0" (-0 -> +0).
        let sine = (usesSinPolynomial ? sinPolynomial : cosPolynomial) + 0
        let cosine = (usesSinPolynomial ? cosPolynomial : sinPolynomial) + 0
        return (Float(bitPattern: sine.bitPattern ^ sinSign), Float(bitPattern: cosine.bitPattern ^ cosSign))
    }
}

extension Float {
    /// `self * factor + addend` with one rounding (an FMA), as GCC emits for a contracted mul-add.
    fileprivate func times(_ factor: Float, plus addend: Float) -> Float {
        addend.addingProduct(self, factor)
    }
}
