/// Lets one async operation at a time through, in arrival order.
///
/// A store instance has one SQLite connection, and a transaction on it must not interleave with another
/// caller's statements; an actor alone does not ensure that, because it is re-entered at every `await`.
actor SerialGate {
    private var isHeld = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    /// Waits until the gate is free and takes it.
    func enter() async {
        guard isHeld else {
            isHeld = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    /// Frees the gate, handing it straight to the longest waiter if there is one.
    func leave() {
        if waiting.isEmpty {
            isHeld = false
        } else {
            waiting.removeFirst().resume()
        }
    }
}
