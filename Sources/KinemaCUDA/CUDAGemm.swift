import KinemaCore

/// Matrix products, linear layers and convolutions on cuBLAS: f16/bf16 inputs on tensor cores and
/// f32 inputs in true f32 (no TF32), always accumulating in f32 (CUBLAS_COMPUTE_32F).
extension CUDABackend {
    static func cudaDataType(_ dtype: DType) -> Int32 {
        switch dtype {
        case .f32: return 0  // CUDA_R_32F
        case .f16: return 2  // CUDA_R_16F
        case .bf16: return 14  // CUDA_R_16BF
        }
    }

    /// Row-major `C (m×n) = op(A) · op(B) + beta·C`, `batch` times with the given element strides.
    /// `lda`/`ldb`/`ldc` are row strides of the stored matrices (defaults: packed).
    func gemm(a: CUdeviceptr, b: CUdeviceptr, c: CUdeviceptr, dtype: DType, m: Int, n: Int, k: Int,
              transposeA: Bool = false, transposeB: Bool = false, lda: Int? = nil, ldb: Int? = nil, ldc: Int? = nil,
              batch: Int = 1, strideA: Int = 0, strideB: Int = 0, strideC: Int = 0, alpha: Float = 1, beta: Float = 0,
              outputType: DType? = nil) {
        guard m > 0, n > 0, batch > 0 else { return }
        device.makeCurrent()
        let lda = lda ?? (transposeA ? m : k), ldb = ldb ?? (transposeB ? k : n), ldc = ldc ?? n
        var alpha = alpha, beta = beta
        let type = Self.cudaDataType(dtype), cType = Self.cudaDataType(outputType ?? dtype)
        // cuBLAS is column-major: the row-major C is the column-major Cᵀ = op(B)ᵀ · op(A)ᵀ.
        let status = withUnsafePointer(to: &alpha) { alphaPointer in
            withUnsafePointer(to: &beta) { betaPointer in
                device.cublas.cublasGemmStridedBatchedEx(
                    device.cublasHandle, transposeB ? 1 : 0, transposeA ? 1 : 0, Int32(n), Int32(m), Int32(k), alphaPointer,
                    UnsafeRawPointer(bitPattern: UInt(b))!, type, Int32(ldb), Int64(strideB),
                    UnsafeRawPointer(bitPattern: UInt(a))!, type, Int32(lda), Int64(strideA),
                    betaPointer, UnsafeMutableRawPointer(bitPattern: UInt(c))!, cType, Int32(ldc), Int64(strideC),
                    Int32(batch), 68 /* CUBLAS_COMPUTE_32F */, -1 /* CUBLAS_GEMM_DEFAULT */)
            }
        }
        do {
            try device.cublas.check(status, "cublasGemmStridedBatchedEx(m \(m), n \(n), k \(k), batch \(batch), \(dtype))")
        } catch { fatalError("\(error)") }
        if device.synchronizesEachOp { device.synchronize() }
    }

    public func matmulKernel(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool,
                             batch: Int, m: Int, n: Int, k: Int, into output: Tensor) {
        requireSame(a, b, output, op: "matmul")
        let bBatched = b.count > k * n
        gemm(a: address(a), b: address(b), c: address(output), dtype: a.dtype, m: m, n: n, k: k,
             transposeA: transposeA, transposeB: transposeB, batch: batch,
             strideA: m * k, strideB: bBatched ? k * n : 0, strideC: m * n)
    }

    public func linearKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, into output: Tensor) {
        requireSame(input, weight, bias, op: "linear")
        let inFeatures = weight.shape[1], outFeatures = weight.shape[0]
        let rows = input.count / max(inFeatures, 1)
        if let bias {
            device.launchElementwise("bias_\(Self.suffix(output.dtype))", count: output.count,
                                     [argument(output), argument(bias), .long(rows), .long(outFeatures), .long(1)])
        }
        // out (rows × out) = input (rows × in) · weightᵀ
        gemm(a: address(input), b: address(weight), c: address(output), dtype: input.dtype, m: rows, n: outFeatures, k: inFeatures,
             transposeB: true, beta: bias == nil ? 0 : 1)
    }

    public func conv2dKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, parameters p: Conv2dParameters,
                             workspace: Tensor?, into output: Tensor) {
        requireSame(input, weight, bias, output, op: "conv2d")
        let (n, c, h, w) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        let (o, kh, kw) = (weight.shape[0], weight.shape[2], weight.shape[3])
        let (oh, ow) = (output.shape[2], output.shape[3])
        let pixels = oh * ow, rows = c * kh * kw
        let suffix = Self.suffix(input.dtype), size = input.dtype.size
        if let bias {
            device.launchElementwise("bias_\(suffix)", count: output.count,
                                     [argument(output), argument(bias), .long(n), .long(o), .long(pixels)])
        }
        let beta: Float = bias == nil ? 0 : 1
        if CUDAWorkspacePolicy.isPointwise(weight: weight.shape, parameters: p) {
            // out_i (O × HW) = W (O × C) · x_i (C × HW), all images in one batched call.
            gemm(a: address(weight), b: address(input), c: address(output), dtype: input.dtype, m: o, n: pixels, k: c,
                 batch: n, strideA: 0, strideB: c * pixels, strideC: o * pixels, beta: beta)
            return
        }
        guard let workspace else { fatalError("conv2d on CUDA needs its im2col workspace") }
        let band = CUDAWorkspacePolicy.bandPixels(rows: rows, pixels: pixels, bytes: workspace.byteCount, elementSize: size)
        let columns = address(workspace)
        for image in 0..<n {
            let source = address(input) + CUdeviceptr(image * c * h * w * size)
            let target = address(output) + CUdeviceptr(image * o * pixels * size)
            var start = 0
            while start < pixels {
                let count = min(band, pixels - start)
                device.launchElementwise("im2col_\(suffix)", count: rows * count,
                                         [.pointer(source), .pointer(columns), .int(c), .int(h), .int(w), .int(kh), .int(kw),
                                          .int(p.strideY), .int(p.strideX), .int(p.padTop), .int(p.padLeft), .int(oh), .int(ow),
                                          .long(start), .long(count)])
                // out[:, start..<start+count] (O × count) = W (O × rows) · columns (rows × count)
                gemm(a: address(weight), b: columns, c: target + CUdeviceptr(start * size), dtype: input.dtype,
                     m: o, n: count, k: rows, ldc: pixels, beta: beta)
                start += count
            }
        }
    }

    public func temporalConvKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, frames: Int,
                                   workspace: Tensor?, into output: Tensor) {
        requireSame(input, weight, bias, output, op: "temporalConv")
        let (images, c) = (input.shape[0], input.shape[1]), pixels = input.shape[2] * input.shape[3]
        let (o, taps) = (weight.shape[0], weight.shape[2])
        let clips = images / frames, half = taps / 2
        let suffix = Self.suffix(input.dtype), size = input.dtype.size
        guard let workspace else { fatalError("temporalConv on CUDA needs its workspace") }
        // Weight (O, C, kt) -> (kt, O, C): one O×C matrix per tap.
        device.launchElementwise("repack_\(suffix)", count: o * c * taps,
                                 [argument(weight), argument(workspace), .long(o), .long(c), .long(taps)])
        if let bias {
            device.launchElementwise("bias_\(suffix)", count: output.count,
                                     [argument(output), argument(bias), .long(images), .long(o), .long(pixels)])
        } else {
            device.makeCurrent()
            device.driver.must(device.driver.cuMemsetD8Async(address(output), 0, output.byteCount, device.stream), "cuMemsetD8Async")
        }
        for clip in 0..<clips {
            for t in 0..<taps {
                // Output frame f reads input frame f + t − half, where that frame exists (zero padding).
                let first = max(0, half - t), last = min(frames, frames + half - t)
                guard first < last else { continue }
                let source = address(input) + CUdeviceptr(((clip * frames + first + t - half) * c * pixels) * size)
                let target = address(output) + CUdeviceptr(((clip * frames + first) * o * pixels) * size)
                gemm(a: address(workspace) + CUdeviceptr(t * o * c * size), b: source, c: target, dtype: input.dtype,
                     m: o, n: pixels, k: c, batch: last - first, strideA: 0, strideB: c * pixels, strideC: o * pixels, beta: 1)
            }
        }
    }

    /// Attention for head dims beyond the fused kernels (the VAE's single 512-wide head): per query
    /// chunk, scores = scale · Q·Kᵀ in f32 by cuBLAS (all heads in one batched call), a row softmax
    /// into the storage type, then O = P·V by cuBLAS. Scores exist for one chunk at a time, in the
    /// workspace `CUDAWorkspacePolicy` sized.
    func chunkedAttention(query: Tensor, key: Tensor, value: Tensor, geometry g: AttentionGeometry, scale: Float,
                          workspace: Tensor?, into output: Tensor) {
        guard let workspace else { fatalError("attention with head dim \(g.headDim) on CUDA needs its workspace") }
        let dtype = query.dtype, size = dtype.size, width = g.heads * g.headDim
        let scores = address(workspace)
        let probabilities = scores + CUdeviceptr(g.heads * g.queryChunk * g.keys * 4)
        for b in 0..<g.batch {
            var q0 = 0
            while q0 < g.queries {
                let count = min(g.queryChunk, g.queries - q0)
                let q = address(query) + CUdeviceptr(((b * g.queries + q0) * width) * size)
                let k = address(key) + CUdeviceptr((b * g.keys * width) * size)
                let v = address(value) + CUdeviceptr((b * g.keys * width) * size)
                let o = address(output) + CUdeviceptr(((b * g.queries + q0) * width) * size)
                // scores_h (count × Nk) = scale · Q_h (count × D) · K_hᵀ, heads h at column offsets h·D.
                gemm(a: q, b: k, c: scores, dtype: dtype, m: count, n: g.keys, k: g.headDim, transposeB: true,
                     lda: width, ldb: width, ldc: g.keys, batch: g.heads, strideA: g.headDim, strideB: g.headDim,
                     strideC: count * g.keys, alpha: scale, outputType: .f32)
                device.launch("softmaxf_\(Self.suffix(dtype))", grid: (g.heads * count, 1), block: 256,
                              [.pointer(scores), .pointer(probabilities), .long(g.keys)])
                // O_h (count × D) = P_h (count × Nk) · V_h (Nk × D)
                gemm(a: probabilities, b: v, c: o, dtype: dtype, m: count, n: g.headDim, k: g.keys,
                     lda: g.keys, ldb: width, ldc: width, batch: g.heads, strideA: count * g.keys, strideB: g.headDim,
                     strideC: g.headDim)
                q0 += count
            }
        }
    }
}
