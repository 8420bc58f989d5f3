import Foundation
import KinemaCore

/// Which of the two CPU attention algorithms a call uses.
enum AttentionPlan {
    /// Short sequences (temporal attention over frames, tiny models): every (batch, head) pair is
    /// one task on one worker with plain SIMD dot products; sgemm calls would cost more than the math.
    static func usesSmallPath(_ g: AttentionGeometry) -> Bool { g.queries <= 64 && g.keys <= 64 }
}

extension CPUBackend {
    public func attentionKernel(query: Tensor, key: Tensor, value: Tensor, geometry g: AttentionGeometry,
                                causal: Bool, scale: Float, workspace: Tensor?, into output: Tensor) {
        requireF32(query, key, value, op: "attention")
        let q = query.pointer(Float.self), k = key.pointer(Float.self), v = value.pointer(Float.self)
        let out = output.pointer(Float.self), scores = workspace!.pointer(Float.self)
        if AttentionPlan.usesSmallPath(g) {
            smallAttention(q, k, v, out, scores, g, causal: causal, scale: scale)
        } else {
            chunkedAttention(q, k, v, out, scores, g, causal: causal, scale: scale)
        }
    }

    /// Scores of one query chunk by sgemm, softmax over rows in parallel, then the weighted sum of
    /// values by sgemm. Token-major tensors: row stride heads·D, head h at column h·D.
    private func chunkedAttention(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                                  _ out: UnsafeMutablePointer<Float>, _ workspace: UnsafeMutablePointer<Float>,
                                  _ g: AttentionGeometry, causal: Bool, scale: Float) {
        let width = g.heads * g.headDim
        let chunks = (g.queries + g.queryChunk - 1) / g.queryChunk
        // Each worker takes whole (batch, head, query chunk) tasks with single-threaded sgemm: no
        // fork and join per product, and softmax overlaps the other worker's products.
        BLAS.setThreads(1)
        defer { BLAS.setThreads(threads) }
        parallelForWorkers(g.batch * g.heads * chunks, threads: threads) { worker, range in
            let scores = workspace + worker * ChunkedAttentionLayout.floatsPerWorker(g)
            let sums = scores + g.queryChunk * g.keys
            for task in range {
                let b = task / (g.heads * chunks), h = (task / chunks) % g.heads, q0 = (task % chunks) * g.queryChunk
                let keys = k + b * g.keys * width + h * g.headDim
                let values = v + b * g.keys * width + h * g.headDim
                let rows = min(g.queryChunk, g.queries - q0)
                let queryRows = (b * g.queries + q0) * width + h * g.headDim
                // scores (rows, Nk) = Q (rows, D) · Kᵀ (D, Nk)
                BLAS.sgemm(transposeA: false, transposeB: true, m: rows, n: g.keys, k: g.headDim,
                           a: q + queryRows, lda: width, b: keys, ldb: width, beta: 0, c: scores, ldc: g.keys)
                // Unnormalised probabilities; each output row is divided by its sum after the
                // product with V (D values a row instead of Nk).
                for r in 0..<rows {
                    sums[r] = exponentiateRow(scores + r * g.keys, g.keys, scale: scale,
                                              validCount: causal ? min(q0 + r + 1, g.keys) : g.keys)
                }
                // out (rows, D) = P (rows, Nk) · V (Nk, D)
                let outRows = out + queryRows
                BLAS.sgemm(transposeA: false, transposeB: false, m: rows, n: g.headDim, k: g.keys,
                           a: scores, lda: g.keys, b: values, ldb: width, beta: 0, c: outRows, ldc: width)
                for r in 0..<rows {
                    let inverse = 1 / sums[r]
                    let line = outRows + r * width
                    for d in 0..<g.headDim { line[d] *= inverse }
                }
            }
        }
    }

    private func smallAttention(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                                _ out: UnsafeMutablePointer<Float>, _ workspace: UnsafeMutablePointer<Float>,
                                _ g: AttentionGeometry, causal: Bool, scale: Float) {
        let width = g.heads * g.headDim, d = g.headDim
        let paddedKeys = SmallAttentionLayout.paddedKeys(g)
        parallelForWorkers(g.batch * g.heads, threads: threads) { worker, range in
            let scores = workspace + worker * SmallAttentionLayout.floatsPerWorker(g)
            let keysT = scores + g.queries * paddedKeys
            for task in range {
                let b = task / g.heads, h = task % g.heads
                let qBase = q + b * g.queries * width + h * d
                let kBase = k + b * g.keys * width + h * d
                let vBase = v + b * g.keys * width + h * d
                // Kᵀ (D, paddedKeys), zero past Nk, so a row of scores is whole vectors.
                for j in 0..<g.keys { for c in 0..<d { keysT[c * paddedKeys + j] = kBase[j * width + c] } }
                if paddedKeys > g.keys { for c in 0..<d { (keysT + c * paddedKeys + g.keys).update(repeating: 0, count: paddedKeys - g.keys) } }
                var i = 0
                while i < g.queries {
                    let rows = min(4, g.queries - i)
                    scoreRows(qBase + i * width, rowStride: width, rows: rows, keysT, paddedKeys: paddedKeys, d: d,
                              into: scores + i * paddedKeys)
                    i += rows
                }
                for i in 0..<g.queries {
                    let row = scores + i * paddedKeys
                    let valid = causal ? min(i + 1, g.keys) : g.keys
                    let inverse = 1 / exponentiateRow(row, g.keys, scale: scale, validCount: valid)
                    let scaled = Vector(repeating: inverse)
                    var j = 0
                    while j + vectorWidth <= g.keys { storeVector(loadVector(row + j) * scaled, row + j); j += vectorWidth }
                    while j < g.keys { row[j] *= inverse; j += 1 }
                }
                var i2 = 0
                while i2 < g.queries {
                    let rows = min(4, g.queries - i2)
                    weightedRows(scores + i2 * paddedKeys, paddedKeys: paddedKeys, rows: rows, keys: g.keys, vBase,
                                 rowStride: width, d: d, into: out + (b * g.queries + i2) * width + h * d)
                    i2 += rows
                }
            }
        }
    }
}

/// Workspace layout of the chunked attention path, per worker: one chunk of scores, then its row sums.
enum ChunkedAttentionLayout {
    static func floatsPerWorker(_ g: AttentionGeometry) -> Int { g.queryChunk * g.keys + g.queryChunk }
}

/// Workspace layout of the small-sequence attention path, per worker: scores (Nq × paddedKeys)
/// then Kᵀ (D × paddedKeys).
enum SmallAttentionLayout {
    static func paddedKeys(_ g: AttentionGeometry) -> Int { (g.keys + vectorWidth - 1) / vectorWidth * vectorWidth }
    static func floatsPerWorker(_ g: AttentionGeometry) -> Int { (g.queries + g.headDim) * paddedKeys(g) }
}

/// Scores of up to four query rows against all keys: `out[r][j] = q_r · k_j`, with Kᵀ laid out
/// (D, paddedKeys). Four rows share each load of Kᵀ and keep four independent FMA chains.
@inline(__always)
func scoreRows(_ q: UnsafePointer<Float>, rowStride: Int, rows: Int, _ keysT: UnsafePointer<Float>, paddedKeys: Int, d: Int,
               into out: UnsafeMutablePointer<Float>) {
    let q0 = q, q1 = q + (rows > 1 ? rowStride : 0), q2 = q + (rows > 2 ? 2 * rowStride : 0), q3 = q + (rows > 3 ? 3 * rowStride : 0)
    var jb = 0
    while jb < paddedKeys {
        var a0 = Vector(), a1 = Vector(), a2 = Vector(), a3 = Vector()
        for c in 0..<d {
            let kv = loadVector(keysT + c * paddedKeys + jb)
            a0 = a0.addingProduct(Vector(repeating: q0[c]), kv)
            a1 = a1.addingProduct(Vector(repeating: q1[c]), kv)
            a2 = a2.addingProduct(Vector(repeating: q2[c]), kv)
            a3 = a3.addingProduct(Vector(repeating: q3[c]), kv)
        }
        storeVector(a0, out + jb)
        if rows > 1 { storeVector(a1, out + paddedKeys + jb) }
        if rows > 2 { storeVector(a2, out + 2 * paddedKeys + jb) }
        if rows > 3 { storeVector(a3, out + 3 * paddedKeys + jb) }
        jb += vectorWidth
    }
}

/// `out_r = Σ_j p[r][j] · v_j` for up to four rows of probabilities; values rows `rowStride` apart.
@inline(__always)
func weightedRows(_ p: UnsafePointer<Float>, paddedKeys: Int, rows: Int, keys: Int, _ values: UnsafePointer<Float>,
                  rowStride: Int, d: Int, into out: UnsafeMutablePointer<Float>) {
    let p0 = p, p1 = p + (rows > 1 ? paddedKeys : 0), p2 = p + (rows > 2 ? 2 * paddedKeys : 0), p3 = p + (rows > 3 ? 3 * paddedKeys : 0)
    var c = 0
    while c + vectorWidth <= d {
        var a0 = Vector(), a1 = Vector(), a2 = Vector(), a3 = Vector()
        for j in 0..<keys {
            let vv = loadVector(values + j * rowStride + c)
            a0 = a0.addingProduct(Vector(repeating: p0[j]), vv)
            a1 = a1.addingProduct(Vector(repeating: p1[j]), vv)
            a2 = a2.addingProduct(Vector(repeating: p2[j]), vv)
            a3 = a3.addingProduct(Vector(repeating: p3[j]), vv)
        }
        storeVector(a0, out + c)
        if rows > 1 { storeVector(a1, out + rowStride + c) }
        if rows > 2 { storeVector(a2, out + 2 * rowStride + c) }
        if rows > 3 { storeVector(a3, out + 3 * rowStride + c) }
        c += vectorWidth
    }
    while c < d {
        for r in 0..<rows {
            var sum: Float = 0
            for j in 0..<keys { sum += p[r * paddedKeys + j] * values[j * rowStride + c] }
            out[r * rowStride + c] = sum
        }
        c += 1
    }
}

/// `row[j] = exp(scale · (row[j] − max))` over the first `validCount` entries, 0 past them (a
/// causal mask); returns the sum of the exponentials.
@inline(__always)
func exponentiateRow(_ row: UnsafeMutablePointer<Float>, _ width: Int, scale: Float, validCount: Int) -> Float {
    let peak = maxVectors(row, validCount) * scale
    let s = Vector(repeating: scale), m = Vector(repeating: peak)
    var acc = Vector()
    var i = 0
    while i + vectorWidth <= validCount {
        let e = vexp(loadVector(row + i) * s - m)
        storeVector(e, row + i)
        acc += e
        i += vectorWidth
    }
    var sum = acc.sum()
    while i < validCount { row[i] = expf(row[i] * scale - peak); sum += row[i]; i += 1 }
    if validCount < width { (row + validCount).update(repeating: 0, count: width - validCount) }
    return sum
}
