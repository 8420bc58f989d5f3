import Foundation

/// Wakes tasks waiting on a key (a job id, or `NotificationHub.work`) when a notification for it arrives,
/// or when their timeout passes. The PostgreSQL store feeds it from `LISTEN`.
final class NotificationHub: @unchecked Sendable {
    /// The key of "a job may have become claimable".
    static let work = "*work"

    private let lock = NSLock()
    private var waiters: [UUID: (key: String, continuation: CheckedContinuation<Bool, Never>)] = [:]

    /// Returns true at the next `post(key)` or `postAll()`; false after `timeout` seconds or when the task is
    /// cancelled.
    @discardableResult
    func wait(for key: String, timeout: Double) async -> Bool {
        let token = UUID()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                lock.withLock { waiters[token] = (key, continuation) }
                Task {
                    try? await Task.sleep(nanoseconds: UInt64(max(0, timeout) * 1e9))
                    self.resume(token, notified: false)
                }
            }
        } onCancel: {
            self.resume(token, notified: false)
        }
    }

    /// Wakes every waiter on `key`.
    func post(_ key: String) {
        let woken: [CheckedContinuation<Bool, Never>] = lock.withLock {
            let tokens = waiters.filter { $0.value.key == key }.map(\.key)
            return tokens.compactMap { waiters.removeValue(forKey: $0)?.continuation }
        }
        woken.forEach { $0.resume(returning: true) }
    }

    /// Wakes every waiter (after a reconnection, when notifications may have been missed).
    func postAll() {
        let woken = lock.withLock {
            defer { waiters.removeAll() }
            return waiters.values.map(\.continuation)
        }
        woken.forEach { $0.resume(returning: true) }
    }

    private func resume(_ token: UUID, notified: Bool) {
        let waiter = lock.withLock { waiters.removeValue(forKey: token) }
        waiter?.continuation.resume(returning: notified)
    }
}
