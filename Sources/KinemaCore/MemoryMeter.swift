import Foundation

/// One allocation or release seen by a `MemoryMeter`.
public struct MemoryEvent: Sendable, Equatable {
    public enum Kind: String, Sendable { case allocate, release }
    public let kind: Kind
    public let bytes: Int
    /// The op that was running when the bytes were taken (the op that owns them).
    public let op: String
    /// Bytes in use after the event.
    public let current: Int
}

/// Current and peak bytes of one device, with an optional log of every event so a peak can be
/// explained op by op. Thread-safe.
public final class MemoryMeter: @unchecked Sendable {
    private let lock = NSLock()
    private var _current = 0
    private var _peak = 0
    private var _events: [MemoryEvent] = []
    private var _op = "unlabelled"
    private var _recordsEvents = false

    public init() {}

    /// Bytes allocated now.
    public var current: Int { lock.withLock { _current } }
    /// The most bytes allocated at once since creation or the last `resetPeak()`.
    public var peak: Int { lock.withLock { _peak } }
    /// The event log (empty unless `recordsEvents` is on).
    public var events: [MemoryEvent] { lock.withLock { _events } }

    /// Whether every allocation and release is logged.
    public var recordsEvents: Bool {
        get { lock.withLock { _recordsEvents } }
        set { lock.withLock { _recordsEvents = newValue } }
    }

    /// The label given to allocations from now on (set by the op front-end).
    public var currentOp: String {
        get { lock.withLock { _op } }
        set { lock.withLock { _op = newValue } }
    }

    /// Starts a new peak measurement from the bytes in use now.
    public func resetPeak() { lock.withLock { _peak = _current } }

    /// Drops the event log.
    public func clearEvents() { lock.withLock { _events.removeAll() } }

    /// The event at which the peak was reached, when events are recorded.
    public var peakEvent: MemoryEvent? {
        lock.withLock { _events.last { $0.kind == .allocate && $0.current == _peak } }
    }

    func recordAllocation(_ bytes: Int) -> String {
        lock.withLock {
            _current += bytes
            if _current > _peak { _peak = _current }
            if _recordsEvents { _events.append(MemoryEvent(kind: .allocate, bytes: bytes, op: _op, current: _current)) }
            return _op
        }
    }

    func recordRelease(_ bytes: Int, op: String) {
        lock.withLock {
            _current -= bytes
            if _recordsEvents { _events.append(MemoryEvent(kind: .release, bytes: bytes, op: op, current: _current)) }
        }
    }
}

/// Gives a device's bytes. Accounting is done by `Storage`, so an allocator only has to hand out
/// and take back memory; the meta allocator hands out none.
public protocol Allocator: AnyObject, Sendable {
    /// The device's meter: every `Storage` made from this allocator is counted here.
    var meter: MemoryMeter { get }
    /// Returns `byteCount` bytes, or nil where the device keeps no data (meta).
    func allocate(byteCount: Int) -> UnsafeMutableRawPointer?
    /// Takes back bytes given by `allocate`.
    func deallocate(_ pointer: UnsafeMutableRawPointer?, byteCount: Int)
}

/// Host memory, 64-byte aligned (a cache line, and AVX-512 loads).
public final class HostAllocator: Allocator, @unchecked Sendable {
    public let meter = MemoryMeter()
    public init() { _ = Self.keepFreedMemory }

    /// glibc returns large blocks to the kernel on free and maps them again on the next
    /// allocation, so every op's output would pay a page fault per 4 KiB. Keeping freed memory in
    /// the heap makes steady-state ops fault-free; the process's footprint is then the peak of
    /// live tensors (which the planner predicts) plus fragmentation.
    private static let keepFreedMemory: Void = {
        #if os(Linux)
        _ = glibcMallopt(-3, 32 << 20)  // M_MMAP_THRESHOLD, at glibc's maximum: larger blocks are still mapped
        _ = glibcMallopt(-1, Int32.max)  // M_TRIM_THRESHOLD
        #endif
    }()

    public func allocate(byteCount: Int) -> UnsafeMutableRawPointer? {
        var pointer: UnsafeMutableRawPointer?
        let status = posix_memalign(&pointer, 64, max(byteCount, 64))
        precondition(status == 0 && pointer != nil, "host allocation of \(byteCount) bytes failed (errno \(status))")
        return pointer
    }

    public func deallocate(_ pointer: UnsafeMutableRawPointer?, byteCount: Int) {
        free(pointer)
    }
}

/// Allocations of the meta device: counted, never backed by memory.
public final class MetaAllocator: Allocator, @unchecked Sendable {
    public let meter = MemoryMeter()
    public init() {}
    public func allocate(byteCount: Int) -> UnsafeMutableRawPointer? { nil }
    public func deallocate(_ pointer: UnsafeMutableRawPointer?, byteCount: Int) {}
}

#if os(Linux)
/// glibc's `mallopt` (declared in malloc.h, which the Glibc module does not export).
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif
