// An 8-bit RGB image, the form every input image takes before preprocessing: the pipeline's reference
// (diffusers' I2VGenXLPipeline) does all of its image preprocessing on PIL "RGB" images.

/// An 8-bit RGB image: `pixels` holds `height` rows of `width` pixels, each pixel three bytes R, G, B.
public struct RGBImage: Sendable, Equatable {
    /// Width in pixels.
    public let width: Int
    /// Height in pixels.
    public let height: Int
    /// `width * height * 3` bytes, RGB interleaved, row-major, top row first.
    public var pixels: [UInt8]

    /// Wraps `pixels` (RGB interleaved, row-major) as a `width` x `height` image.
    /// - Throws: `RGBImageError` when a size is negative or `pixels` does not hold `width * height * 3` bytes.
    public init(width: Int, height: Int, pixels: [UInt8]) throws {
        guard width >= 0, height >= 0 else {
            throw RGBImageError.negativeSize(width: width, height: height)
        }
        guard pixels.count == width * height * 3 else {
            throw RGBImageError.pixelCountMismatch(width: width, height: height, byteCount: pixels.count)
        }
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// For the library's own results, whose byte counts are right by construction.
    init(validatedWidth width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3)
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The region `x0..<x1`, `y0..<y1`, as PIL's `Image.crop((x0, y0, x1, y1))`: the parts of the
    /// region outside the image are 0 (black), so a negative offset pads the top or left.
    /// - Precondition: `x1 >= x0` and `y1 >= y0` (PIL raises a ValueError otherwise).
    public func cropped(x0: Int, y0: Int, x1: Int, y1: Int) -> RGBImage {
        precondition(x1 >= x0 && y1 >= y0, "crop box (\(x0), \(y0), \(x1), \(y1)) has its right/lower edge before its left/upper edge")
        let outWidth = x1 - x0
        let outHeight = y1 - y0
        var out = [UInt8](repeating: 0, count: outWidth * outHeight * 3)
        // The source columns and rows that fall inside the crop box.
        let (left, right) = (max(x0, 0), min(x1, width))
        let (top, bottom) = (max(y0, 0), min(y1, height))
        if left < right && top < bottom {
            let rowBytes = (right - left) * 3
            pixels.withUnsafeBufferPointer { source in
                out.withUnsafeMutableBufferPointer { target in
                    for y in top..<bottom {
                        let from = (y * width + left) * 3
                        let to = ((y - y0) * outWidth + (left - x0)) * 3
                        for i in 0..<rowBytes {
                            target[to + i] = source[from + i]
                        }
                    }
                }
            }
        }
        return RGBImage(validatedWidth: outWidth, height: outHeight, pixels: out)
    }
}

/// Why a buffer cannot be an `RGBImage`.
public enum RGBImageError: Error, Equatable, CustomStringConvertible {
    /// A width or height below zero.
    case negativeSize(width: Int, height: Int)
    /// The buffer is not `width * height * 3` bytes long.
    case pixelCountMismatch(width: Int, height: Int, byteCount: Int)
    /// A (3, height, width) float tensor that does not hold `3 * width * height` values.
    case floatCountMismatch(width: Int, height: Int, valueCount: Int)

    /// A message that says what was expected.
    public var description: String {
        switch self {
        case let .negativeSize(width, height):
            return "image size \(width)x\(height) is negative; width and height must be 0 or more"
        case let .pixelCountMismatch(width, height, byteCount):
            return "an RGB image of \(width)x\(height) needs \(width * height * 3) bytes (3 per pixel), got \(byteCount)"
        case let .floatCountMismatch(width, height, valueCount):
            return "a (3, \(height), \(width)) image tensor needs \(width * height * 3) floats, got \(valueCount)"
        }
    }
}
