import KinemaCore

extension CPUBackend {
    public func matmulKernel(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool,
                             batch: Int, m: Int, n: Int, k: Int, into output: Tensor) {
        requireF32(a, b, op: "matmul")
        let pa = a.pointer(Float.self), pb = b.pointer(Float.self), pc = output.pointer(Float.self)
        let bStride = b.count == k * n ? 0 : k * n
        for i in 0..<batch {
            BLAS.sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
                       a: pa + i * m * k, lda: transposeA ? m : k, b: pb + i * bStride, ldb: transposeB ? k : n,
                       beta: 0, c: pc + i * m * n, ldc: n)
        }
    }

    public func linearKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, into output: Tensor) {
        requireF32(input, weight, bias, op: "linear")
        let k = weight.shape[1], n = weight.shape[0], rows = input.count / k
        let out = output.pointer(Float.self)
        if let bias { fillRows(out, rows: rows, with: bias.pointer(Float.self), width: n) }
        // (rows, k) · (n, k)ᵀ
        BLAS.sgemm(transposeA: false, transposeB: true, m: rows, n: n, k: k,
                   a: input.pointer(Float.self), lda: k, b: weight.pointer(Float.self), ldb: k,
                   beta: bias == nil ? 0 : 1, c: out, ldc: n)
    }

    /// Writes `row` into each of `rows` rows of `width` floats.
    func fillRows(_ out: UnsafeMutablePointer<Float>, rows: Int, with row: UnsafePointer<Float>, width: Int) {
        parallelFor(rows, threads: threads, minimumPerThread: max(1, 65536 / max(width, 1))) { range in
            for r in range { (out + r * width).update(from: row, count: width) }
        }
    }
}
