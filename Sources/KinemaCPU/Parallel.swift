import Dispatch
import Foundation

/// Splits `0..<count` into at most `threads` contiguous ranges and runs `body` on each in
/// parallel; runs inline when the work is small (`count < minimumPerThread * 2`).
@inline(__always)
func parallelFor(_ count: Int, threads: Int, minimumPerThread: Int = 1, _ body: (Range<Int>) -> Void) {
    let workers = min(threads, max(1, count / max(minimumPerThread, 1)))
    if workers <= 1 {
        if count > 0 { body(0..<count) }
        return
    }
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        let start = count * w / workers
        let end = count * (w + 1) / workers
        if start < end { body(start..<end) }
    }
}

/// Like `parallelFor`, also passing the worker's index (below `threads`), so each worker can use
/// its own slice of a workspace.
@inline(__always)
func parallelForWorkers(_ count: Int, threads: Int, _ body: (_ worker: Int, _ range: Range<Int>) -> Void) {
    let workers = min(threads, max(1, count))
    if workers <= 1 {
        if count > 0 { body(0, 0..<count) }
        return
    }
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        let start = count * w / workers
        let end = count * (w + 1) / workers
        if start < end { body(w, start..<end) }
    }
}
