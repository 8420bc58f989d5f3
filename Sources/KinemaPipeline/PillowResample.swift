// Pillow's BOX and BILINEAR resampling of 8-bit images, byte for byte (Pillow 13.0, libImaging/Resample.c).
// The I2VGen-XL pipeline resizes on PIL images, so its conditioning depends on Pillow's exact integer
// arithmetic; torch-style bilinear interpolation gives different bytes.
//
// Pillow resizes in two separable passes through an 8-bit intermediate image: horizontal then vertical, except
// that Pillow 13 runs the vertical pass first when the height shrinks much more than the width.
// Each output pixel is a weighted sum of the input pixels under the filter, stretched by the downscale factor
// so that a reduction averages over the whole covered area. Weights are normalized in double precision, then
// quantized to 22 fractional bits; sums start at one half (1 << 21) and are shifted and clamped to 0...255.

/// A resampling filter of Pillow's `Image.resize`, for 8-bit images.
public enum PillowResample: Sendable {
    /// `Image.BOX`: each output pixel is the mean of the input pixels its area covers.
    case box
    /// `Image.BILINEAR`: a triangle filter, widened by the downscale factor when reducing.
    case bilinear

    /// Half the filter's width in input pixels at scale 1 (Pillow's `support`).
    var support: Double {
        switch self {
        case .box: return 0.5
        case .bilinear: return 1.0
        }
    }

    /// The filter's weight at distance `x` (Pillow's `box_filter` / `bilinear_filter`).
    func weight(_ x: Double) -> Double {
        switch self {
        case .box:
            return x > -0.5 && x <= 0.5 ? 1.0 : 0.0
        case .bilinear:
            let distance = abs(x)
            return distance < 1.0 ? 1.0 - distance : 0.0
        }
    }
}

/// The fixed-point weights of one resampling pass: output pixel `i` is the weighted sum of the
/// `counts[i]` input pixels from `starts[i]`, with weights `weights[i * stride ..< i * stride + counts[i]]`.
struct ResampleCoefficients {
    /// First input pixel of each output pixel.
    var starts: [Int]
    /// Number of input pixels of each output pixel.
    let counts: [Int]
    /// Weights in 1/2^22 units, `stride` per output pixel.
    let weights: [Int32]
    /// Weights per output pixel in `weights` (Pillow's `ksize`).
    let stride: Int

    /// Pillow's fixed-point precision: 32 bits less 8 for the value and 2 for overshoot.
    static let precisionBits = 22

    /// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the whole input
    /// (`box` = (0, inSize)).
    init(inSize: Int, outSize: Int, filter: PillowResample) {
        // Pillow computes the scale from a float box edge; sizes are exact in Float up to 2^24.
        let scale = Double(Float(inSize)) / Double(outSize)
        let filterScale = max(scale, 1.0)
        let support = filter.support * filterScale
        let stride = Int(support.rounded(.up)) * 2 + 1
        let inverseFilterScale = 1.0 / filterScale
        var starts = [Int](repeating: 0, count: outSize)
        var counts = [Int](repeating: 0, count: outSize)
        var weights = [Int32](repeating: 0, count: outSize * stride)
        var row = [Double](repeating: 0, count: stride)
        for outIndex in 0..<outSize {
            let center = (Double(outIndex) + 0.5) * scale
            // C's (int) cast truncates toward zero; Swift's Int(_:) does the same.
            let first = max(Int(center - support + 0.5), 0)
            let end = min(Int(center + support + 0.5), inSize)
            let count = end - first
            var total = 0.0
            for k in 0..<count {
                let w = filter.weight((Double(k + first) - center + 0.5) * inverseFilterScale)
                row[k] = w
                total += w
            }
            for k in 0..<count {
                let normalized = total != 0 ? row[k] / total : row[k]
                // normalize_coeffs_8bpc: round half away from zero by truncating value ± 0.5.
                let fixed = normalized * Double(1 << Self.precisionBits)
                weights[outIndex * stride + k] = Int32(normalized < 0 ? fixed - 0.5 : fixed + 0.5)
            }
            starts[outIndex] = first
            counts[outIndex] = count
        }
        self.starts = starts
        self.counts = counts
        self.weights = weights
        self.stride = stride
    }
}

/// Pillow's `clip8`: drop the 22 fractional bits and clamp to a byte.
@inline(__always)
private func clip8(_ sum: Int32) -> UInt8 {
    let value = sum >> Int32(ResampleCoefficients.precisionBits)
    return value < 0 ? 0 : value > 255 ? 255 : UInt8(truncatingIfNeeded: value)
}

extension RGBImage {
    /// This image resized to `width` x `height` with `filter`, byte-identical to PIL's
    /// `Image.resize((width, height), filter)` on an "RGB" image. The same size returns the image
    /// unchanged, as PIL returns a copy.
    /// - Precondition: this image and the requested size are at least 1x1 (PIL raises otherwise).
    public func resized(width outWidth: Int, height outHeight: Int, filter: PillowResample) -> RGBImage {
        if outWidth == width && outHeight == height {
            return self
        }
        precondition(outWidth >= 1 && outHeight >= 1, "resize to \(outWidth)x\(outHeight): width and height must be at least 1")
        precondition(width >= 1 && height >= 1, "cannot resize an empty \(width)x\(height) image")

        // Pillow's ImagingResampleInner: a pass runs only when its size changes.
        var vertical = outHeight != height ? ResampleCoefficients(inSize: height, outSize: outHeight, filter: filter) : nil
        let horizontal = outWidth != width ? ResampleCoefficients(inSize: width, outSize: outWidth, filter: filter) : nil
        var image = self
        if outHeight < height && height - outHeight > 2 * (width - outWidth) {
            // Pillow 13 runs the vertical pass first when the height loses more than twice as many pixels as
            // the width (python-pillow/Pillow#9549; Pillow 12 and older never do). The rule is inferred from
            // Pillow 13.0.0's output on several hundred size pairs around the boundary, both filters.
            if let vertical {
                image = image.resampledVertically(to: outHeight, vertical)
            }
            if let horizontal {
                image = image.resampledHorizontally(rows: 0..<outHeight, to: outWidth, horizontal)
            }
            return image
        }
        if let horizontal {
            // The horizontal pass converts only the rows the vertical pass reads.
            var rowsRead = 0..<height
            if let v = vertical {
                rowsRead = v.starts[0]..<(v.starts[outHeight - 1] + v.counts[outHeight - 1])
                vertical!.starts = v.starts.map { $0 - rowsRead.lowerBound }
            }
            image = resampledHorizontally(rows: rowsRead, to: outWidth, horizontal)
        }
        if let vertical {
            image = image.resampledVertically(to: outHeight, vertical)
        }
        return image
    }

    /// Pillow's `ImagingResampleHorizontal_8bpc` on `rows`: a `outWidth` x `rows.count` image.
    private func resampledHorizontally(rows: Range<Int>, to outWidth: Int, _ coefficients: ResampleCoefficients) -> RGBImage {
        var out = [UInt8](repeating: 0, count: outWidth * rows.count * 3)
        let stride = coefficients.stride
        let half = Int32(1) << Int32(ResampleCoefficients.precisionBits - 1)
        pixels.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer { target in
                coefficients.starts.withUnsafeBufferPointer { starts in
                    coefficients.counts.withUnsafeBufferPointer { counts in
                        coefficients.weights.withUnsafeBufferPointer { weights in
                            for (outRow, y) in rows.enumerated() {
                                let line = y * width * 3
                                let outLine = outRow * outWidth * 3
                                for x in 0..<outWidth {
                                    var r = half, g = half, b = half
                                    let first = starts[x]
                                    // Sums stay below 2^31: the weights add up to about 2^22 and values are at most 255.
                                    for k in 0..<counts[x] {
                                        let w = weights[x * stride + k]
                                        let p = line + (first + k) * 3
                                        r = r &+ Int32(source[p]) &* w
                                        g = g &+ Int32(source[p + 1]) &* w
                                        b = b &+ Int32(source[p + 2]) &* w
                                    }
                                    target[outLine + x * 3] = clip8(r)
                                    target[outLine + x * 3 + 1] = clip8(g)
                                    target[outLine + x * 3 + 2] = clip8(b)
                                }
                            }
                        }
                    }
                }
            }
        }
        return RGBImage(validatedWidth: outWidth, height: rows.count, pixels: out)
    }

    /// Pillow's `ImagingResampleVertical_8bpc`: a `width` x `outHeight` image.
    private func resampledVertically(to outHeight: Int, _ coefficients: ResampleCoefficients) -> RGBImage {
        let rowBytes = width * 3
        var out = [UInt8](repeating: 0, count: rowBytes * outHeight)
        let stride = coefficients.stride
        let half = Int32(1) << Int32(ResampleCoefficients.precisionBits - 1)
        pixels.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer { target in
                coefficients.starts.withUnsafeBufferPointer { starts in
                    coefficients.counts.withUnsafeBufferPointer { counts in
                        coefficients.weights.withUnsafeBufferPointer { weights in
                            for y in 0..<outHeight {
                                let first = starts[y]
                                let count = counts[y]
                                let outLine = y * rowBytes
                                // Each byte of a row (R, G and B alike) is filtered down its column.
                                for i in 0..<rowBytes {
                                    var sum = half
                                    for k in 0..<count {
                                        sum = sum &+ Int32(source[(first + k) * rowBytes + i]) &* weights[y * stride + k]
                                    }
                                    target[outLine + i] = clip8(sum)
                                }
                            }
                        }
                    }
                }
            }
        }
        return RGBImage(validatedWidth: width, height: outHeight, pixels: out)
    }
}
