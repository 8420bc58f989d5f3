import KinemaCore

/// How the CPU runs one conv2d. Large outputs: im2col bands of whole output rows of one image,
/// each multiplied by the (O, C·kh·kw) weight matrix with one sgemm. Small outputs (the UNet's
/// deep levels, a few pixels per frame): the columns of several images side by side, so one
/// sgemm covers them all instead of one tiny product per image. Pointwise convolutions on large
/// outputs need no columns at all.
struct ConvolutionPlan {
    let channels: Int, height: Int, width: Int
    let kernelH: Int, kernelW: Int
    let outputChannels: Int
    let outputH: Int, outputW: Int
    let parameters: Conv2dParameters
    /// Rows of the column matrix: C·kh·kw.
    let columnRows: Int
    /// Output rows per band (one image at a time), when `imagesPerGroup` is 1.
    let bandRows: Int
    /// Images whose columns share one sgemm (1 for large outputs).
    let imagesPerGroup: Int
    let isPointwise: Bool
    /// Stride-1 kernels on large outputs: no im2col columns, but one sgemm per kernel tap on a
    /// zero-padded copy of the input, the output computed over the padded width (its extra
    /// columns dropped afterwards). It writes the input once instead of kh·kw times.
    let isShifted: Bool
    /// Output rows per band on the shifted path.
    let shiftedBandRows: Int
    var paddedWidth: Int { width + parameters.padLeft + parameters.padRight }

    /// Below this many output pixels per image, images are grouped.
    static let groupingThreshold = 1024

    var outputPixels: Int { outputH * outputW }
    var bandPixels: Int { bandRows * outputW }
    /// Scratch floats: columns (and, when grouped, the group's output before it is scattered).
    var workspaceFloats: Int {
        if imagesPerGroup > 1 { return (columnRows + outputChannels) * imagesPerGroup * outputPixels }
        if isShifted { return shiftedFloats(rows: shiftedBandRows) }
        return isPointwise ? 0 : columnRows * bandPixels
    }

    /// Taps of the weight (kh·kw, O, C), a padded input band and its output over the padded width.
    func shiftedFloats(rows: Int) -> Int {
        kernelH * kernelW * outputChannels * channels + channels * (rows + kernelH - 1) * paddedWidth + kernelW
            + outputChannels * rows * paddedWidth
    }

    init(input: [Int], weight: [Int], parameters: Conv2dParameters, bandBytes: Int) {
        channels = input[1]; height = input[2]; width = input[3]
        outputChannels = weight[0]; kernelH = weight[2]; kernelW = weight[3]
        self.parameters = parameters
        (outputH, outputW) = parameters.outputSize(height: height, width: width, kernelH: kernelH, kernelW: kernelW)
        let p = parameters
        isPointwise = kernelH == 1 && kernelW == 1 && p.strideX == 1 && p.strideY == 1
            && p.padTop == 0 && p.padLeft == 0 && p.padBottom == 0 && p.padRight == 0
        columnRows = channels * kernelH * kernelW
        let pixels = outputH * outputW
        if pixels < Self.groupingThreshold && input[0] > 1 {
            let wanted = (Self.groupingThreshold + pixels - 1) / max(pixels, 1)
            let fit = bandBytes / max(1, (columnRows + outputChannels) * pixels * 4)
            imagesPerGroup = max(1, min(input[0], wanted, fit))
        } else {
            imagesPerGroup = 1
        }
        let rowsThatFit = bandBytes / max(1, columnRows * outputW * 4)
        bandRows = max(1, min(outputH, rowsThatFit))
        // Measured on the CPU: faster than im2col up to 64 input channels, slower at 320.
        isShifted = !isPointwise && imagesPerGroup == 1 && p.strideX == 1 && p.strideY == 1 && kernelH * kernelW > 1 && channels <= 64
        let perRow = (channels + outputChannels) * (width + p.padLeft + p.padRight) * 4
        shiftedBandRows = max(1, min(outputH, bandBytes / max(1, perRow)))
    }

    /// Fills the columns of output rows `rows` of one image into `columns`, whose rows are
    /// `rowStride` floats apart.
    func fillColumns(_ image: UnsafePointer<Float>, rows: Range<Int>, _ columns: UnsafeMutablePointer<Float>,
                     rowStride: Int, threads: Int) {
        let p = parameters
        parallelFor(columnRows, threads: threads, minimumPerThread: 8) { range in
            for row in range {
                let c = row / (kernelH * kernelW), ky = (row / kernelW) % kernelH, kx = row % kernelW
                let plane = image + c * height * width
                let destination = columns + row * rowStride
                for (bandRow, oy) in rows.enumerated() {
                    let out = destination + bandRow * outputW
                    let iy = oy * p.strideY - p.padTop + ky
                    guard iy >= 0 && iy < height else { out.update(repeating: 0, count: outputW); continue }
                    let source = plane + iy * width
                    if p.strideX == 1 {
                        // Valid ox: 0 <= ox - padLeft + kx < width.
                        let shift = kx - p.padLeft
                        let first = max(0, -shift), last = min(outputW, width - shift)
                        if first > 0 { out.update(repeating: 0, count: min(first, outputW)) }
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
        let plan = ConvolutionPlan(input: input.shape, weight: weight.shape, parameters: parameters, bandBytes: policy.convolutionBandBytes)
        let images = input.shape[0], outChannels = weight.shape[0], outPixels = plan.outputPixels
        let x = input.pointer(Float.self), w = weight.pointer(Float.self), out = output.pointer(Float.self)
        let imageSize = input.count / max(images, 1)
        if plan.imagesPerGroup > 1 {
            groupedConvolution(plan, x, imageSize: imageSize, images: images, w, bias, out, workspace!.pointer(Float.self))
            return
        }
        // Bias first, so each sgemm accumulates onto it.
        if let bias {
            let b = bias.pointer(Float.self)
            parallelFor(images * outChannels, threads: threads, minimumPerThread: max(1, 16384 / max(outPixels, 1))) { range in
                for i in range { (out + i * outPixels).update(repeating: b[i % outChannels], count: outPixels) }
            }
        }
        let beta: Float = bias == nil ? 0 : 1
        if plan.isPointwise {
            // out[n] (O, HW) = W (O, C) · x[n] (C, HW).
            for n in 0..<images {
                BLAS.sgemm(transposeA: false, transposeB: false, m: outChannels, n: outPixels, k: input.shape[1],
                           a: w, lda: input.shape[1], b: x + n * imageSize, ldb: outPixels,
                           beta: beta, c: out + n * outChannels * outPixels, ldc: outPixels)
            }
            return
        }
        if plan.isShifted {
            shiftedConvolution(plan, x, imageSize: imageSize, images: images, w, out, beta: beta, workspace!.pointer(Float.self))
            return
        }
        let columns = workspace!.pointer(Float.self)
        for n in 0..<images {
            var row = 0
            while row < plan.outputH {
                let rows = row..<min(plan.outputH, row + plan.bandRows)
                let pixels = rows.count * plan.outputW
                plan.fillColumns(x + n * imageSize, rows: rows, columns, rowStride: pixels, threads: threads)
                // out[n][:, band] (O, pixels) += W (O, C·kh·kw) · columns (C·kh·kw, pixels)
                BLAS.sgemm(transposeA: false, transposeB: false, m: outChannels, n: pixels, k: plan.columnRows,
                           a: w, lda: plan.columnRows, b: columns, ldb: pixels,
                           beta: beta, c: out + n * outChannels * outPixels + row * plan.outputW, ldc: outPixels)
                row = rows.upperBound
            }
        }
    }

    /// Stride-1 convolution as kh·kw sgemm calls over shifted views of a zero-padded input band:
    /// band (C, rows + kh − 1, Wp); tap (ky, kx) reads it from offset ky·Wp + kx, so output pixel
    /// (y, x) of the padded-width product sees input (y + ky, x + kx). Columns x ≥ OW are dropped.
    private func shiftedConvolution(_ plan: ConvolutionPlan, _ x: UnsafePointer<Float>, imageSize: Int, images: Int,
                                    _ w: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, beta: Float,
                                    _ workspace: UnsafeMutablePointer<Float>) {
        let (c, o, kh, kw) = (plan.channels, plan.outputChannels, plan.kernelH, plan.kernelW)
        let wp = plan.paddedWidth, p = plan.parameters
        let taps = workspace
        // Weight (O, C, kh, kw) -> (kh·kw) matrices (O, C).
        for oc in 0..<o { for ci in 0..<c { for t in 0..<(kh * kw) { taps[(t * o + oc) * c + ci] = w[(oc * c + ci) * kh * kw + t] } } }
        let band = taps + kh * kw * o * c
        let bandPlane = (plan.shiftedBandRows + kh - 1) * wp
        let product = band + c * bandPlane + kw
        let outPixels = plan.outputPixels
        for n in 0..<images {
            let image = x + n * imageSize
            var row = 0
            while row < plan.outputH {
                let rows = min(plan.shiftedBandRows, plan.outputH - row)
                let inputRows = rows + kh - 1
                // Zero-padded input rows [row − padTop, row − padTop + inputRows) of every channel.
                parallelFor(c, threads: threads) { range in
                    for ci in range {
                        let plane = band + ci * bandPlane
                        for r in 0..<inputRows {
                            let line = plane + r * wp, iy = row + r - p.padTop
                            guard iy >= 0 && iy < plan.height else { line.update(repeating: 0, count: wp); continue }
                            if p.padLeft > 0 { line.update(repeating: 0, count: p.padLeft) }
                            (line + p.padLeft).update(from: image + (ci * plan.height + iy) * plan.width, count: plan.width)
                            if p.padRight > 0 { (line + p.padLeft + plan.width).update(repeating: 0, count: p.padRight) }
                        }
                    }
                }
                (band + c * bandPlane).update(repeating: 0, count: kw)  // read past the last plane by garbage columns
                let pixels = rows * wp
                for t in 0..<(kh * kw) {
                    let ky = t / kw, kx = t % kw
                    // product (O, rows·Wp) (+)= W_t (O, C) · band shifted by (ky, kx) (C, rows·Wp)
                    BLAS.sgemm(transposeA: false, transposeB: false, m: o, n: pixels, k: c, a: taps + t * o * c, lda: c,
                               b: band + ky * wp + kx, ldb: bandPlane, beta: t == 0 ? 0 : 1, c: product, ldc: pixels)
                }
                // Drop the padded-width columns; add onto the bias already in `out`.
                let base = out + n * o * outPixels + row * plan.outputW
                parallelFor(o, threads: threads) { range in
                    for oc in range {
                        for y in 0..<rows {
                            let source = product + oc * pixels + y * wp, target = base + oc * outPixels + y * plan.outputW
                            if beta == 0 {
                                target.update(from: source, count: plan.outputW)
                            } else {
                                for i in 0..<plan.outputW { target[i] += source[i] }
                            }
                        }
                    }
                }
                row += rows
            }
        }
    }

    /// Several small images per sgemm: columns (C·kh·kw, g·P) → product (O, g·P) → each image's
    /// (O, P) block scattered to its place, plus bias.
    private func groupedConvolution(_ plan: ConvolutionPlan, _ x: UnsafePointer<Float>, imageSize: Int, images: Int,
                                    _ w: UnsafePointer<Float>, _ bias: Tensor?, _ out: UnsafeMutablePointer<Float>,
                                    _ workspace: UnsafeMutablePointer<Float>) {
        let pixels = plan.outputPixels, outChannels = plan.outputChannels
        let columns = workspace, product = workspace + plan.columnRows * plan.imagesPerGroup * pixels
        var first = 0
        while first < images {
            let group = min(plan.imagesPerGroup, images - first)
            let stride = group * pixels
            for i in 0..<group {
                let image = x + (first + i) * imageSize
                if plan.isPointwise {
                    for c in 0..<plan.channels { (columns + c * stride + i * pixels).update(from: image + c * pixels, count: pixels) }
                } else {
                    plan.fillColumns(image, rows: 0..<plan.outputH, columns + i * pixels, rowStride: stride, threads: threads)
                }
            }
            BLAS.sgemm(transposeA: false, transposeB: false, m: outChannels, n: stride, k: plan.columnRows,
                       a: w, lda: plan.columnRows, b: columns, ldb: stride, beta: 0, c: product, ldc: stride)
            scatterGroupProduct(product, images: group, from: first, outChannels: outChannels, pixels: pixels,
                                bias: bias?.pointer(Float.self), into: out)
            first += group
        }
    }

    /// Scatters a grouped sgemm's product (O, g·P) into images `first..<first + g` of `out` (N, O, P),
    /// adding `bias` (O) when there is one.
    private func scatterGroupProduct(_ product: UnsafePointer<Float>, images group: Int, from first: Int, outChannels: Int,
                                     pixels: Int, bias: UnsafePointer<Float>?, into out: UnsafeMutablePointer<Float>) {
        let stride = group * pixels
        parallelFor(group * outChannels, threads: threads, minimumPerThread: max(1, 16384 / max(pixels, 1))) { range in
            for task in range {
                let image = task / outChannels, o = task % outChannels
                let source = product + o * stride + image * pixels
                let target = out + ((first + image) * outChannels + o) * pixels
                if let bias {
                    let v = Vector(repeating: bias[o])
                    mapVectors(source, target, pixels) { $0 + v }
                } else {
                    target.update(from: source, count: pixels)
                }
            }
        }
    }

    public func temporalConvKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, frames: Int,
                                   workspace: Tensor?, into output: Tensor) {
        requireF32(input, weight, bias, op: "temporalConv")
        let plan = TemporalConvolutionPlan(input: input.shape, weight: weight.shape, frames: frames, bandBytes: policy.convolutionBandBytes)
        let outChannels = weight.shape[0], channels = weight.shape[1], taps = weight.shape[2]
        let pixels = plan.pixels, clips = input.shape[0] / frames
        let x = input.pointer(Float.self), out = output.pointer(Float.self), w = weight.pointer(Float.self)
        let imageIn = channels * pixels, imageOut = outChannels * pixels
        let columns = workspace!.pointer(Float.self)
        if plan.clipsPerGroup > 0 {
            // Columns (C·kt, clips·F·P) with row c·kt + t holding frame f + t − kt/2 of channel c
            // (zero outside the clip): the stored weight (O, C, kt) is then the left matrix as is.
            let product = columns + plan.columnRows * plan.clipsPerGroup * frames * pixels
            var firstClip = 0
            while firstClip < clips {
                let group = min(plan.clipsPerGroup, clips - firstClip), stride = group * frames * pixels
                parallelFor(plan.columnRows, threads: threads, minimumPerThread: 4) { range in
                    for row in range {
                        let c = row / taps, t = row % taps
                        for clip in 0..<group {
                            for f in 0..<frames {
                                let target = columns + row * stride + (clip * frames + f) * pixels
                                let source = f + t - taps / 2
                                if source < 0 || source >= frames { target.update(repeating: 0, count: pixels); continue }
                                target.update(from: x + ((firstClip + clip) * frames + source) * imageIn + c * pixels, count: pixels)
                            }
                        }
                    }
                }
                BLAS.sgemm(transposeA: false, transposeB: false, m: outChannels, n: stride, k: plan.columnRows,
                           a: w, lda: plan.columnRows, b: columns, ldb: stride, beta: 0, c: product, ldc: stride)
                scatterGroupProduct(product, images: group * frames, from: firstClip * frames, outChannels: outChannels,
                                    pixels: pixels, bias: bias?.pointer(Float.self), into: out)
                firstClip += group
            }
            return
        }
        // Large frames: one sgemm per frame and tap, on the weight split into kt (O, C) matrices.
        let taps3 = columns
        for o in 0..<outChannels {
            for c in 0..<channels {
                for t in 0..<taps { taps3[(t * outChannels + o) * channels + c] = w[(o * channels + c) * taps + t] }
            }
        }
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

/// How the CPU runs a temporal (kt,1,1) convolution: for small frames, one sgemm over the
/// frame-shifted columns of whole clips; for large frames, one sgemm per frame and tap.
struct TemporalConvolutionPlan {
    let pixels: Int, frames: Int
    let columnRows: Int, outputChannels: Int
    /// Clips per sgemm on the small-frame path; 0 selects the per-frame path.
    let clipsPerGroup: Int

    init(input: [Int], weight: [Int], frames: Int, bandBytes: Int) {
        pixels = input[2] * input[3]
        self.frames = frames
        outputChannels = weight[0]
        columnRows = weight[1] * weight[2]
        let clips = input[0] / max(frames, 1)
        let perClip = (columnRows + outputChannels) * frames * pixels * 4
        clipsPerGroup = pixels < ConvolutionPlan.groupingThreshold ? max(1, min(clips, bandBytes / max(perClip, 1))) : 0
    }

    var workspaceFloats: Int {
        clipsPerGroup > 0 ? (columnRows + outputChannels) * clipsPerGroup * frames * pixels : outputChannels * columnRows
    }
}
