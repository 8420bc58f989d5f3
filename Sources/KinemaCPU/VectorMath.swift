/// SIMD transcendental functions for the CPU kernels. Accuracy is that of torch's own vectorised
/// CPU paths (Cephes' expf polynomial; Abramowitz–Stegun 7.1.26 erf, which torch's
/// `Vectorized<float>::erf` also uses), about 1e-7 absolute, which the op tests check.
typealias Vector = SIMD8<Float>
let vectorWidth = 8

@inline(__always)
func vexp(_ input: Vector) -> Vector {
    // Clamp and convert without the generic SIMD helpers (pointwiseMin, init(_:rounding:)),
    // which the compiler leaves as calls; these forms become single AVX instructions.
    var x = input.replacing(with: -87.336_544, where: input .< -87.336_544)
    x.replace(with: 88.376_26, where: x .> 88.376_26)
    // n = round(x / ln 2); r = x - n ln 2 (in two parts for precision).
    let n = (x * 1.442_695_04 + 0.5).rounded(.down)
    let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4
    var p = Vector(repeating: 1.987_569_15e-4)
    p = Vector(repeating: 1.398_199_95e-3).addingProduct(p, r)
    p = Vector(repeating: 8.333_451_9e-3).addingProduct(p, r)
    p = Vector(repeating: 4.166_579_59e-2).addingProduct(p, r)
    p = Vector(repeating: 1.666_666_55e-1).addingProduct(p, r)
    p = Vector(repeating: 5.000_000_12e-1).addingProduct(p, r)
    p = (r + 1).addingProduct(p, r * r)
    // 2^n through the exponent bits; n is integral, so adding 1.5·2²³ puts it in the low bits.
    let integer = unsafeBitCast(n + 12_582_912, to: SIMD8<Int32>.self) &- 0x4B40_0000
    return p * unsafeBitCast((integer &+ 127) &<< 23, to: Vector.self)
}

@inline(__always)
func vsigmoid(_ x: Vector) -> Vector {
    1 / (1 + vexp(-x))
}

@inline(__always)
func verf(_ x: Vector) -> Vector {
    let ax = x.replacing(with: -x, where: x .< 0)
    let t = 1 / (1 + 0.327_591_1 * ax)
    var p = Vector(repeating: 1.061_405_429)
    p = Vector(repeating: -1.453_152_027).addingProduct(p, t)
    p = Vector(repeating: 1.421_413_741).addingProduct(p, t)
    p = Vector(repeating: -0.284_496_736).addingProduct(p, t)
    p = Vector(repeating: 0.254_829_592).addingProduct(p, t)
    let y = 1 - p * t * vexp(-ax * ax)
    return y.replacing(with: -y, where: x .< 0)
}

@inline(__always)
func vgelu(_ x: Vector) -> Vector {
    x * 0.5 * (1 + verf(x * 0.707_106_781_186_547_6))
}

@inline(__always)
func vquickGelu(_ x: Vector) -> Vector {
    x * vsigmoid(1.702 * x)
}

@inline(__always)
func vsilu(_ x: Vector) -> Vector {
    x * vsigmoid(x)
}

@inline(__always)
func loadVector(_ p: UnsafePointer<Float>) -> Vector {
    UnsafeRawPointer(p).loadUnaligned(as: Vector.self)
}

@inline(__always)
func storeVector(_ v: Vector, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self)
}

/// Applies `f` to `count` floats, eight at a time; the tail goes through one padded vector.
@inline(__always)
func mapVectors(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, _ count: Int,
                _ f: (Vector) -> Vector) {
    var i = 0
    while i + vectorWidth <= count {
        storeVector(f(loadVector(input + i)), output + i)
        i += vectorWidth
    }
    if i < count {
        var tail = Vector()
        for j in 0..<(count - i) { tail[j] = input[i + j] }
        let result = f(tail)
        for j in 0..<(count - i) { output[i + j] = result[j] }
    }
}

/// Sum of `count` floats with eight lanes of partial sums.
@inline(__always)
func sumVectors(_ p: UnsafePointer<Float>, _ count: Int) -> Float {
    var acc = Vector()
    var i = 0
    while i + vectorWidth <= count { acc += loadVector(p + i); i += vectorWidth }
    var sum = acc.sum()
    while i < count { sum += p[i]; i += 1 }
    return sum
}

/// Sum of squared deviations from `mean`.
@inline(__always)
func squaredDeviationSum(_ p: UnsafePointer<Float>, _ count: Int, mean: Float) -> Float {
    var acc = Vector()
    let m = Vector(repeating: mean)
    var i = 0
    while i + vectorWidth <= count { let d = loadVector(p + i) - m; acc = acc.addingProduct(d, d); i += vectorWidth }
    var sum = acc.sum()
    while i < count { let d = p[i] - mean; sum += d * d; i += 1 }
    return sum
}

/// Largest of `count` floats.
@inline(__always)
func maxVectors(_ p: UnsafePointer<Float>, _ count: Int) -> Float {
    var acc = Vector(repeating: -.infinity)
    var i = 0
    while i + vectorWidth <= count { let v = loadVector(p + i); acc.replace(with: v, where: v .> acc); i += vectorWidth }
    var result = acc.max()
    while i < count { result = max(result, p[i]); i += 1 }
    return result
}
