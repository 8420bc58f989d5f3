import KinemaCore

/// How the CPU runs one conv2d: as im2col bands of whole output rows, each multiplied by the
/// (O, C·kh·kw) weight matrix with one sgemm. Pointwise convolutions need no columns at all.
struct ConvolutionPlan {
    let channels: Int, height: Int, width: Int
    let kernelH: Int, kernelW: Int
    let outputH: Int, outputW: Int
    let parameters: Conv2dParameters
    /// Rows of the column matrix: C·kh·kw.
    let columnRows: Int
    /// Output rows per band.
    let bandRows: Int
    var bandPixels: Int { bandRows * outputW }

    /// nil when no columns are needed (1×1, stride 1, no padding).
    init?(input: [Int], weight: [Int], parameters: Conv2dParameters, bandBytes: Int) {
        channels = input[1]; height = input[2]; width = input[3]
        kernelH = weight[2]; kernelW = weight[3]
        self.parameters = parameters
        (outputH, outputW) = parameters.outputSize(height: height, width: width, kernelH: kernelH, kernelW: kernelW)
        let p = parameters
        if kernelH == 1 && kernelW == 1 && p.strideX == 1 && p.strideY == 1
            && p.padTop == 0 && p.padLeft == 0 && p.padBottom == 0 && p.padRight == 0 { return nil }
        columnRows = channels * kernelH * kernelW
        let rowsThatFit = bandBytes / max(1, columnRows * outputW * 4)
        bandRows = max(1, min(outputH, rowsThatFit))
    }

    /// Fills `columns` (columnRows × bandPixels) for output rows `rows` of one image.
    func fillColumns(_ image: UnsafePointer<Float>, rows: Range<Int>, _ columns: UnsafeMutablePointer<Float>,
                     threads: Int) {
        let pixels = rows.count * outputW
        let p = parameters
        parallelFor(columnRows, threads: threads, minimumPerThread: 8) { range in
            for row in range {
                let c = row / (kernelH * kernelW), ky = (row / kernelW) % kernelH, kx = row % kernelW
                let plane = image + c * height * width
                let destination = columns + row * pixels
                for (bandRow, oy) in rows.enumerated() {
                    let out = destination + bandRow * outputW
                    let iy = oy * p.strideY - p.padTop + ky
                    guard iy >= 0 && iy < height else { out.update(repeating: 0, count: outputW); continue }
                    let source = plane + iy * width
                    if p.strideX == 1 {
                        // Valid ox: 0 <= ox - padLeft + kx < width.
                        let shift = kx - p.padLeft
                        let first = max(0, -shift), last = min(outputW, width - shift)
                        if first > 0 { out.update(repeating: 0, count: first) }
                        if last > first { (out + first).update(from: source + first + shift, count: last - first) }
                        if last < outputW { (out + max(last, first)).update(repeating: 0, count: outputW - max(last, first)) }
                    } else {
                        for ox in 0..<outputW {
                            let ix = ox * p.strideX - p.padLeft + kx
                            out[ox] = ix >= 0 && ix < width ? source[ix] : 0
                        }
                    }
                }
            }
        }
    }
}

extension CPUBackend {
    public func conv2dKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, parameters: Conv2dParameters,
                             workspace: Tensor?, into output: Tensor) {
        requireF32(input, weight, bias, op: "conv2d")
        let images = input.shape[0], outChannels = weight.shape[0]
        let outPixels = output.shape[2] * output.shape[3]
        let x = input.pointer(Float.self), w = weight.pointer(Float.self), out = output.pointer(Float.self)
        let imageSize = input.count / max(images, 1)
        // Bias first, so each sgemm accumulates onto it.
        if let bias {
            let b = bias.pointer(Float.self)
            parallelFor(images * outChannels, threads: threads, minimumPerThread: max(1, 16384 / max(outPixels, 1))) { range in
                for i in range { (out + i * outPixels).update(repeating: b[i % outChannels], count: outPixels) }
            }
        }
        let beta: Float = bias == nil ? 0 : 1
        guard let plan = ConvolutionPlan(input: input.shape, weight: weight.shape, parameters: parameters,
                                         bandBytes: policy.convolutionBandBytes) else {
            // Pointwise: out[n] (O, HW) = W (O, C) · x[n] (C, HW).
            for n in 0..<images {
                BLAS.sgemm(transposeA: false, transposeB: false, m: outChannels, n: outPixels, k: input.shape[1],
                           a: w, lda: input.shape[1], b: x + n * imageSize, ldb: outPixels,
                           beta: beta, c: out + n * outChannels * outPixels, ldc: outPixels)
            }
            return
        }
        let columns = workspace!.pointer(Float.self)
        for n in 0..<images {
            var row = 0
            while row < plan.outputH {
                let rows = row..<min(plan.outputH, row + plan.bandRows)
                plan.fillColumns(x + n * imageSize, rows: rows, columns, threads: threads)
                let pixels = rows.count * plan.outputW
                // out[n][:, band] (O, pixels) += W (O, C·kh·kw) · columns (C·kh·kw, pixels)
                BLAS.sgemm(transposeA: false, transposeB: false, m: outChannels, n: pixels, k: plan.columnRows,
                           a: w, lda: plan.columnRows, b: columns, ldb: pixels,
                           beta: beta, c: out + n * outChannels * outPixels + row * plan.outputW, ldc: outPixels)
                row = rows.upperBound
            }
        }
    }

    public func temporalConvKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, frames: Int,
                                   workspace: Tensor?, into output: Tensor) {
        requireF32(input, weight, bias, op: "temporalConv")
        let outChannels = weight.shape[0], channels = weight.shape[1], taps = weight.shape[2]
        let pixels = input.shape[2] * input.shape[3]
        let clips = input.shape[0] / frames
        let x = input.pointer(Float.self), out = output.pointer(Float.self)
        // Weight (O, C, kt) -> kt matrices (O, C), so each tap is one sgemm.
        let w = weight.pointer(Float.self), taps3 = workspace!.pointer(Float.self)
        for o in 0..<outChannels {
            for c in 0..<channels {
                for t in 0..<taps { taps3[(t * outChannels + o) * channels + c] = w[(o * channels + c) * taps + t] }
            }
        }
        let imageIn = channels * pixels, imageOut = outChannels * pixels
        if let bias {
            let b = bias.pointer(Float.self)
            for i in 0..<(input.shape[0] * outChannels) { (out + i * pixels).update(repeating: b[i % outChannels], count: pixels) }
        }
        var first = bias == nil
        for t in 0..<taps {
            // out[b, f] += W_t · x[b, f + t - taps/2], zero outside the clip.
            for clip in 0..<clips {
                for f in 0..<frames {
                    let source = f + t - taps / 2
                    let target = out + (clip * frames + f) * imageOut
                    if source < 0 || source >= frames {
                        if first { target.update(repeating: 0, count: imageOut) }
                        continue
                    }
                    BLAS.sgemm(transposeA: false, transposeB: false, m: outChannels, n: pixels, k: channels,
                               a: taps3 + t * outChannels * channels, lda: channels,
                               b: x + (clip * frames + source) * imageIn, ldb: pixels,
                               beta: first ? 0 : 1, c: target, ldc: pixels)
                }
            }
            first = false
        }
    }
}
