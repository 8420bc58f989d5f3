import Dispatch
import Foundation

/// Wall time spent in each op's kernel, when enabled (`kinema generate --profile`). Ops run on
/// one thread per device, so a lock-free accumulator per process is enough for the CLI; the lock
/// covers the rare concurrent use.
public final class OpProfile: @unchecked Sendable {
    public static let shared = OpProfile()
    private let lock = NSLock()
    private var seconds: [String: Double] = [:]
    private var calls: [String: Int] = [:]
    /// Off by default: when off, timing costs one branch per op.
    public var isEnabled = false

    /// Runs `body`, adding its duration to `op` when enabled.
    @inline(__always)
    public func time<T>(_ op: String, _ body: () -> T) -> T {
        guard isEnabled else { return body() }
        let start = DispatchTime.now().uptimeNanoseconds
        let result = body()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        lock.withLock {
            seconds[op, default: 0] += elapsed
            calls[op, default: 0] += 1
        }
        return result
    }

    /// (op, seconds, calls), most time first.
    public var table: [(op: String, seconds: Double, calls: Int)] {
        lock.withLock { seconds.map { ($0.key, $0.value, calls[$0.key] ?? 0) }.sorted { $0.1 > $1.1 } }
    }
}
