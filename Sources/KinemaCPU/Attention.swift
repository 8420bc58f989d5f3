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
                                  _ out: UnsafeMutablePointer<Float>, _ scores: UnsafeMutablePointer<Float>,
                                  _ g: AttentionGeometry, causal: Bool, scale: Float) {
        let width = g.heads * g.headDim
        for b in 0..<g.batch {
            for h in 0..<g.heads {
                let keys = k + b * g.keys * width + h * g.headDim
                let values = v + b * g.keys * width + h * g.headDim
                var q0 = 0
                while q0 < g.queries {
                    let rows = min(g.queryChunk, g.queries - q0)
                    let queryRows = (b * g.queries + q0) * width + h * g.headDim
                    // scores (rows, Nk) = Q (rows, D) · Kᵀ (D, Nk)
                    BLAS.sgemm(transposeA: false, transposeB: true, m: rows, n: g.keys, k: g.headDim,
                               a: q + queryRows, lda: width, b: keys, ldb: width, beta: 0, c: scores, ldc: g.keys)
                    let first = q0
                    parallelFor(rows, threads: threads, minimumPerThread: max(1, 4096 / g.keys)) { range in
                        for r in range {
                            let row = scores + r * g.keys
                            softmaxRow(row, row, g.keys, scale: scale, validCount: causal ? min(first + r + 1, g.keys) : g.keys)
                        }
                    }
                    // out (rows, D) = P (rows, Nk) · V (Nk, D)
                    BLAS.sgemm(transposeA: false, transposeB: false, m: rows, n: g.headDim, k: g.keys,
                               a: scores, lda: g.keys, b: values, ldb: width, beta: 0, c: out + queryRows, ldc: width)
                    q0 += rows
                }
            }
        }
    }

    private func smallAttention(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                                _ out: UnsafeMutablePointer<Float>, _ workspace: UnsafeMutablePointer<Float>,
                                _ g: AttentionGeometry, causal: Bool, scale: Float) {
        let width = g.heads * g.headDim, d = g.headDim
        parallelForWorkers(g.batch * g.heads, threads: threads) { worker, range in
            let scores = workspace + worker * g.queries * g.keys
            for task in range {
                let b = task / g.heads, h = task % g.heads
                let qBase = q + b * g.queries * width + h * d
                let kBase = k + b * g.keys * width + h * d
                let vBase = v + b * g.keys * width + h * d
                for i in 0..<g.queries {
                    let row = scores + i * g.keys, qi = qBase + i * width
                    let valid = causal ? min(i + 1, g.keys) : g.keys
                    for j in 0..<valid { row[j] = dot(qi, kBase + j * width, d) }
                    softmaxRow(row, row, g.keys, scale: scale, validCount: valid)
                    let o = out + (b * g.queries + i) * width + h * d
                    weightedSum(row, vBase, rowStride: width, count: valid, width: d, into: o)
                }
            }
        }
    }
}

@inline(__always)
func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = Vector()
    var i = 0
    while i + vectorWidth <= n { acc = acc.addingProduct(loadVector(a + i), loadVector(b + i)); i += vectorWidth }
    var sum = acc.sum()
    while i < n { sum += a[i] * b[i]; i += 1 }
    return sum
}

/// `out[0..<width] = Σ_j weights[j] · rows[j]`, rows `rowStride` apart.
@inline(__always)
func weightedSum(_ weights: UnsafePointer<Float>, _ rows: UnsafePointer<Float>, rowStride: Int, count: Int,
                 width: Int, into out: UnsafeMutablePointer<Float>) {
    var c = 0
    while c + vectorWidth <= width {
        var acc = Vector()
        for j in 0..<count { acc = acc.addingProduct(loadVector(rows + j * rowStride + c), Vector(repeating: weights[j])) }
        storeVector(acc, out + c)
        c += vectorWidth
    }
    while c < width {
        var sum: Float = 0
        for j in 0..<count { sum += weights[j] * rows[j * rowStride + c] }
        out[c] = sum
        c += 1
    }
}
