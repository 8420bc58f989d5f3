/// Bytes that hold a tensor's elements. Storage made by an allocator is counted by its meter and
/// returned when the last tensor that refers to it goes; borrowed storage (a memory-mapped
/// checkpoint) keeps its owner alive instead and is not counted.
public final class Storage: @unchecked Sendable {
    /// Start of the bytes, nil on the meta device.
    public let base: UnsafeMutableRawPointer?
    public let byteCount: Int
    private let allocator: Allocator?
    private let owner: AnyObject?
    private let op: String

    /// Takes `byteCount` bytes from `allocator`, counted under the meter's current op.
    public init(byteCount: Int, allocator: Allocator) {
        self.byteCount = byteCount
        self.allocator = allocator
        self.owner = nil
        self.op = allocator.meter.recordAllocation(byteCount)
        self.base = allocator.allocate(byteCount: byteCount)
    }

    /// Refers to bytes owned by `owner` (for example a memory-mapped file).
    public init(borrowing base: UnsafeMutableRawPointer, byteCount: Int, owner: AnyObject) {
        self.base = base
        self.byteCount = byteCount
        self.allocator = nil
        self.owner = owner
        self.op = ""
    }

    /// Whether the bytes are counted by a device meter.
    public var isCounted: Bool { allocator != nil }

    deinit {
        if let allocator {
            allocator.deallocate(base, byteCount: byteCount)
            allocator.meter.recordRelease(byteCount, op: op)
        }
    }
}

/// A contiguous, row-major n-dimensional array on some device. A value: copying a `Tensor`
/// shares its storage; views (`reshaped`, `slice`) share it too.
public struct Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let dtype: DType
    public let storage: Storage
    /// Where this tensor starts inside `storage`, in bytes.
    public let byteOffset: Int

    public init(shape: [Int], dtype: DType, storage: Storage, byteOffset: Int = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in shape \(shape)")
        let bytes = shape.reduce(1, *) * dtype.size
        precondition(byteOffset + bytes <= storage.byteCount,
                     "tensor of shape \(shape) \(dtype) does not fit its storage")
        self.shape = shape
        self.dtype = dtype
        self.storage = storage
        self.byteOffset = byteOffset
    }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    /// Number of bytes of the elements.
    public var byteCount: Int { count * dtype.size }
    public var rank: Int { shape.count }
    /// Whether the tensor carries data (false on the meta device).
    public var hasData: Bool { storage.base != nil }

    /// The size of dimension `axis`; negative axes count from the end.
    public func dim(_ axis: Int) -> Int { shape[axis < 0 ? shape.count + axis : axis] }

    /// Raw address of the first element. Traps on the meta device.
    public var rawPointer: UnsafeMutableRawPointer {
        guard let base = storage.base else { preconditionFailure("meta tensors have no data") }
        return base + byteOffset
    }

    /// Typed address of the first element; `T` must match `dtype`.
    public func pointer<T>(_ type: T.Type = Float.self) -> UnsafeMutablePointer<T> {
        precondition(MemoryLayout<T>.size == dtype.size, "\(T.self) does not match dtype \(dtype)")
        return rawPointer.assumingMemoryBound(to: T.self)
    }

    /// The same elements with another shape of the same count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var newShape = newShape
        if let inferred = newShape.firstIndex(of: -1) {
            let known = newShape.enumerated().filter { $0.offset != inferred }.map(\.element).reduce(1, *)
            precondition(known > 0 && count % known == 0, "cannot reshape \(shape) to \(newShape)")
            newShape[inferred] = count / known
        }
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(shape: newShape, dtype: dtype, storage: storage, byteOffset: byteOffset)
    }

    /// A view of rows `range` of the first dimension.
    public func slice(_ range: Range<Int>) -> Tensor {
        precondition(range.lowerBound >= 0 && range.upperBound <= shape[0], "slice \(range) outside \(shape)")
        let rowBytes = shape.dropFirst().reduce(1, *) * dtype.size
        var newShape = shape
        newShape[0] = range.count
        return Tensor(shape: newShape, dtype: dtype, storage: storage, byteOffset: byteOffset + range.lowerBound * rowBytes)
    }

    /// The elements as `Float`s (converted from f16/bf16). Traps on the meta device.
    public func floats() -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            DType.convert(rawPointer, from: dtype, to: buffer.baseAddress!, .f32, count: count)
            initialized = count
        }
    }
}
