/// Element types a tensor can be stored in. CPU compute is always `f32`; `f16` and `bf16` are
/// storage types (checkpoints, CUDA activations) widened with `DType.convert`.
public enum DType: String, Sendable, CaseIterable, CustomStringConvertible {
    case f32, f16, bf16

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        }
    }

    public var description: String { rawValue }

    /// The dtype of a safetensors header string ("F32", "F16", "BF16"), or nil for types Kinema
    /// does not load.
    public init?(safetensorsName: String) {
        switch safetensorsName {
        case "F32": self = .f32
        case "F16": self = .f16
        case "BF16": self = .bf16
        default: return nil
        }
    }

    /// The safetensors header string of this dtype.
    public var safetensorsName: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        }
    }

    /// Converts `count` elements from `source` (of dtype `from`) to `destination` (of dtype `to`).
    /// f16 uses the hardware conversion (F16C on x86); bf16 rounds to nearest even like torch.
    public static func convert(
        _ source: UnsafeRawPointer, from: DType,
        to destination: UnsafeMutableRawPointer, _ to: DType, count: Int
    ) {
        switch (from, to) {
        case (.f32, .f32), (.f16, .f16), (.bf16, .bf16):
            destination.copyMemory(from: source, byteCount: count * from.size)
        case (.f16, .f32):
            halfToFloat(source.assumingMemoryBound(to: Float16.self),
                        destination.assumingMemoryBound(to: Float.self), count)
        case (.f32, .f16):
            floatToHalf(source.assumingMemoryBound(to: Float.self),
                        destination.assumingMemoryBound(to: Float16.self), count)
        case (.bf16, .f32):
            bfloatToFloat(source.assumingMemoryBound(to: UInt16.self),
                          destination.assumingMemoryBound(to: UInt32.self), count)
        case (.f32, .bf16):
            floatToBfloat(source.assumingMemoryBound(to: UInt32.self),
                          destination.assumingMemoryBound(to: UInt16.self), count)
        case (.f16, .bf16), (.bf16, .f16):
            // Through f32 in blocks, so no full-size temporary is needed.
            let block = 4096
            let temp = UnsafeMutablePointer<Float>.allocate(capacity: block)
            defer { temp.deallocate() }
            var done = 0
            while done < count {
                let n = min(block, count - done)
                convert(source + done * from.size, from: from, to: temp, .f32, count: n)
                convert(temp, from: .f32, to: destination + done * to.size, to, count: n)
                done += n
            }
        }
    }

    @inline(__always)
    static func halfToFloat(_ s: UnsafePointer<Float16>, _ d: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n {
            let v = UnsafeRawPointer(s + i).loadUnaligned(as: SIMD8<Float16>.self)
            UnsafeMutableRawPointer(d + i).storeBytes(of: SIMD8<Float>(v), as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { d[i] = Float(s[i]); i += 1 }
    }

    @inline(__always)
    static func floatToHalf(_ s: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float16>, _ n: Int) {
        var i = 0
        while i + 8 <= n {
            let v = UnsafeRawPointer(s + i).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(d + i).storeBytes(of: SIMD8<Float16>(v), as: SIMD8<Float16>.self)
            i += 8
        }
        while i < n { d[i] = Float16(s[i]); i += 1 }
    }

    @inline(__always)
    static func bfloatToFloat(_ s: UnsafePointer<UInt16>, _ d: UnsafeMutablePointer<UInt32>, _ n: Int) {
        for i in 0..<n { d[i] = UInt32(s[i]) &<< 16 }
    }

    @inline(__always)
    static func floatToBfloat(_ s: UnsafePointer<UInt32>, _ d: UnsafeMutablePointer<UInt16>, _ n: Int) {
        for i in 0..<n {
            let bits = s[i]
            if bits & 0x7FFF_FFFF > 0x7F80_0000 {
                d[i] = UInt16(truncatingIfNeeded: bits &>> 16) | 0x0040  // quiet NaN
            } else {
                let rounding: UInt32 = 0x7FFF &+ ((bits &>> 16) & 1)
                d[i] = UInt16(truncatingIfNeeded: (bits &+ rounding) &>> 16)
            }
        }
    }
}
