// The I2VGen-XL pipeline's two image branches, exactly as diffusers' I2VGenXLPipeline prepares its
// conditioning image on the CPU with PIL (design note I2VGEN_XL.md §2.3):
//   CLIP branch: center-crop-wide to a square of side `width`, BILINEAR resize to the feature
//                extractor's crop size S, /255, (x - mean) / std        -> (3, S, S)
//   VAE branch:  center-crop-wide to (width, height), /255, 2x - 1     -> (3, height, width)
// Both branches quantize to uint8 at every PIL step, so they are computed on `RGBImage` with
// Pillow-exact resampling and only converted to float at the end.

/// The I2VGen-XL pipeline's image preprocessing: from the user's RGB image to the pixel tensors of the
/// CLIP image encoder and of the VAE encoder.
public enum ImagePreprocessing {
    /// diffusers' `_center_crop_wide(image, (width, height))`: scale the image with PIL BOX resampling
    /// until it covers `width` x `height`, then crop the center. Reference quirk: the scaled size is
    /// computed with float floor division, so it can come out one pixel short of the target; the crop
    /// offset is then -1 and the result has a black top row or left column, as in PIL.
    /// - Precondition: `image` is not empty and `width`, `height` are at least 1.
    public static func centerCropWide(_ image: RGBImage, width: Int, height: Int) -> RGBImage {
        let (resizedWidth, resizedHeight) = centerCropWideResizedSize(
            imageWidth: image.width, imageHeight: image.height, width: width, height: height)
        let resized = image.resized(width: resizedWidth, height: resizedHeight, filter: .box)
        let x0 = floorDivide(resizedWidth - width, 2)
        let y0 = floorDivide(resizedHeight - height, 2)
        return resized.cropped(x0: x0, y0: y0, x1: x0 + width, y1: y0 + height)
    }

    /// CLIP branch: the image encoder's input, (3, cropSize, cropSize) float32 channel-major,
    /// `(pixel / 255 - mean[c]) / std[c]`. `width` is the video width (the crop is a square of side
    /// `width`, not `height`, as in the reference); `cropSize` is the feature extractor's `crop_size`
    /// (224 for the released model). `mean` and `std` default to CLIP's.
    public static func clipPixels(
        _ image: RGBImage, width: Int, cropSize: Int,
        mean: [Float] = [0.48145466, 0.4578275, 0.40821073],
        std: [Float] = [0.26862954, 0.26130258, 0.27577711]
    ) -> [Float] {
        precondition(mean.count == 3 && std.count == 3, "CLIP mean and std need one value per RGB channel")
        let square = clipImage(image, width: width, cropSize: cropSize)
        // The feature extractor normalizes in float32: (x - mean) / std.
        let table = byteTable { channel, x in (x - mean[channel]) / std[channel] }
        return channelMajor(square, table: table)
    }

    /// VAE branch: the VAE encoder's input, (3, height, width) float32 channel-major in [-1, 1],
    /// `2 * (pixel / 255) - 1` on the image center-cropped-wide to `width` x `height`.
    public static func vaePixels(_ image: RGBImage, width: Int, height: Int) -> [Float] {
        let cropped = centerCropWide(image, width: width, height: height)
        // VaeImageProcessor normalizes in float32: 2x - 1.
        let table = byteTable { _, x in 2 * x - 1 }
        return channelMajor(cropped, table: table)
    }

    /// diffusers' `_convert_pt_to_pil` on one (3, height, width) float tensor nominally in [0, 1]:
    /// `uint8(round(x * 255))` with float32 arithmetic and round-half-to-even. Reference quirk: there is
    /// no clamp, so values outside [0, 1] wrap modulo 256 like numpy's `astype(uint8)` (e.g. -1/255 -> 255).
    /// Kinema always starts from 8-bit images; this exists to reproduce references made from float tensors.
    /// - Throws: `RGBImageError` when `channelMajor` does not hold `3 * width * height` values.
    public static func image(fromUnitFloats channelMajor: [Float], width: Int, height: Int) throws -> RGBImage {
        guard width >= 0, height >= 0 else {
            throw RGBImageError.negativeSize(width: width, height: height)
        }
        let plane = width * height
        guard channelMajor.count == 3 * plane else {
            throw RGBImageError.floatCountMismatch(width: width, height: height, valueCount: channelMajor.count)
        }
        var pixels = [UInt8](repeating: 0, count: 3 * plane)
        for channel in 0..<3 {
            for i in 0..<plane {
                let scaled = (channelMajor[channel * plane + i] * 255).rounded(.toNearestOrEven)
                // x86's float -> int conversion, which numpy uses: the low byte of the integer, and 0 for
                // NaN or magnitudes of 2^31 and more (a float32 that large is a multiple of 256 anyway).
                let inRange = scaled.isFinite && abs(scaled) < 2_147_483_648
                pixels[i * 3 + channel] = inRange ? UInt8(truncatingIfNeeded: Int32(scaled)) : 0
            }
        }
        return RGBImage(validatedWidth: width, height: height, pixels: pixels)
    }

    /// The CLIP branch before normalization: the `cropSize` x `cropSize` 8-bit image
    /// (`_resize_bilinear(_center_crop_wide(image, (width, width)), (S, S))`).
    static func clipImage(_ image: RGBImage, width: Int, cropSize: Int) -> RGBImage {
        let square = centerCropWide(image, width: width, height: width)
        return square.resized(width: cropSize, height: cropSize, filter: .bilinear)
    }

    /// The size `_center_crop_wide` resizes a `imageWidth` x `imageHeight` image to before cropping
    /// `width` x `height`: `round(w // scale)` with `scale = min(w / width, h / height)` in Python floats.
    static func centerCropWideResizedSize(imageWidth: Int, imageHeight: Int, width: Int, height: Int) -> (width: Int, height: Int) {
        precondition(imageWidth >= 1 && imageHeight >= 1, "cannot center-crop an empty \(imageWidth)x\(imageHeight) image")
        precondition(width >= 1 && height >= 1, "center-crop target \(width)x\(height): width and height must be at least 1")
        let w = Double(imageWidth)
        let h = Double(imageHeight)
        let scale = min(w / Double(width), h / Double(height))
        // Python's round() of a float is round-half-to-even; the floor division already made it integral.
        let resizedWidth = pythonFloorDivide(w, scale).rounded(.toNearestOrEven)
        let resizedHeight = pythonFloorDivide(h, scale).rounded(.toNearestOrEven)
        return (Int(resizedWidth), Int(resizedHeight))
    }

    /// Python's `float.__floordiv__` (CPython `_float_div_mod`): the floor of the quotient derived from
    /// `fmod`, which is why 512 // 0.4 is 1279.0 although 512 / 0.4 is 1280.0.
    static func pythonFloorDivide(_ a: Double, _ b: Double) -> Double {
        precondition(b != 0, "float floor division by zero")
        let mod = a.truncatingRemainder(dividingBy: b)  // C's fmod, exact
        var quotient = (a - mod) / b
        if mod != 0 && (b < 0) != (mod < 0) {
            quotient -= 1
        }
        guard quotient != 0 else {
            return Double(signOf: a / b, magnitudeOf: 0)
        }
        var floored = quotient.rounded(.down)
        if quotient - floored > 0.5 {
            floored += 1
        }
        return floored
    }

    /// Python's integer `//`: the floor of the quotient, so -1 // 2 is -1.
    static func floorDivide(_ a: Int, _ b: Int) -> Int {
        let quotient = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? quotient - 1 : quotient
    }

    /// `normalize(channel, byte / 255)` for every channel and byte value, at `channel * 256 + byte`;
    /// `byte / 255` is float32 as in `pil_to_numpy`.
    private static func byteTable(_ normalize: (Int, Float) -> Float) -> [Float] {
        var table = [Float](repeating: 0, count: 3 * 256)
        for channel in 0..<3 {
            for byte in 0..<256 {
                table[channel * 256 + byte] = normalize(channel, Float(byte) / 255)
            }
        }
        return table
    }

    /// `image` as (3, height, width) float32, channel-major, byte `v` of channel `c` becoming
    /// `table[c * 256 + v]` (`pil_to_numpy` then NCHW, with the branch's normalization folded into `table`).
    private static func channelMajor(_ image: RGBImage, table: [Float]) -> [Float] {
        let plane = image.width * image.height
        var out = [Float](repeating: 0, count: 3 * plane)
        image.pixels.withUnsafeBufferPointer { pixels in
            table.withUnsafeBufferPointer { table in
                out.withUnsafeMutableBufferPointer { target in
                    // (height, width, 3) -> (3, height, width)
                    for channel in 0..<3 {
                        for i in 0..<plane {
                            target[channel * plane + i] = table[channel * 256 + Int(pixels[i * 3 + channel])]
                        }
                    }
                }
            }
        }
        return out
    }
}
