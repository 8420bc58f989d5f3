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

    /// Below this many output pixels per image, images are grouped.
    static let groupingThreshold = 1024

    var outputPixels: Int { outputH * outputW }
    var bandPixels: Int { bandRows * outputW }
    /// Scratch floats: columns (and, when grouped, the group's output before it is scattered).
    var workspaceFloats: Int {
        if imagesPerGroup > 1 { return (columnRows + outputChannels) * imagesPerGroup * outputPixels }
        return isPointwise ? 0 : columnRows * bandPixels
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
