import Foundation
import XCTest
@testable import KinemaPipeline

/// Pillow-exact resampling and the I2VGen-XL pipeline's two image branches, against references from
/// Pillow / diffusers / transformers written by `tools/make_image_fixtures.py` into `Fixtures/images/`.
final class ImagePreprocessingTests: XCTestCase {

    // MARK: - Reference fixtures

    func testBoxResizeMatchesPillowByteForByte() throws {
        try checkResizes(filterName: "box", filter: .box)
    }

    func testBilinearResizeMatchesPillowByteForByte() throws {
        try checkResizes(filterName: "bilinear", filter: .bilinear)
    }

    func testCropMatchesPillowWithZerosOutsideTheImage() throws {
        let fixtures = try ImageFixtures.load()
        XCTAssertFalse(fixtures.index.crop.isEmpty)
        for c in fixtures.index.crop {
            let source = try fixtures.source(c.source)
            let out = source.cropped(x0: c.box[0], y0: c.box[1], x1: c.box[2], y1: c.box[3])
            XCTAssertEqual(out, try fixtures.image(c.slice, width: c.width, height: c.height), "crop \(c.source) \(c.box)")
        }
    }

    func testCenterCropWideMatchesDiffusers() throws {
        let fixtures = try ImageFixtures.load()
        XCTAssertFalse(fixtures.index.centerCropWide.isEmpty)
        for c in fixtures.index.centerCropWide {
            let source = try fixtures.source(c.source)
            let size = ImagePreprocessing.centerCropWideResizedSize(
                imageWidth: source.width, imageHeight: source.height, width: c.width, height: c.height)
            XCTAssertEqual(size.width, c.resizedWidth, "\(c.source) -> \(c.width)x\(c.height)")
            XCTAssertEqual(size.height, c.resizedHeight, "\(c.source) -> \(c.width)x\(c.height)")
            let out = ImagePreprocessing.centerCropWide(source, width: c.width, height: c.height)
            XCTAssertEqual(out, try fixtures.image(c.slice, width: c.width, height: c.height), "\(c.source) -> \(c.width)x\(c.height)")
        }
    }

    func testLargerResizesMatchPillowOnBothSidesOfThePassOrderBoundary() throws {
        let cases = try ImageFixtures.load().index.hashed.filter { $0.kind == "resize" }
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let filter: PillowResample = c.filter == "box" ? .box : .bilinear
            let out = Self.patternImage(width: c.sourceWidth, height: c.sourceHeight).resized(width: c.width, height: c.height!, filter: filter)
            XCTAssertEqual(Self.fnv1a64(out.pixels), c.fnv1a64, "\(c.filter!) \(c.sourceWidth)x\(c.sourceHeight) -> \(c.width)x\(c.height!)")
        }
    }

    func testFixturesIncludeOnePixelShortCenterCrops() throws {
        let cases = try ImageFixtures.load().index.centerCropWide
        XCTAssertTrue(cases.contains { $0.resizedWidth < $0.width && $0.resizedHeight < $0.height })
        XCTAssertTrue(cases.contains { $0.resizedWidth < $0.width && $0.resizedHeight >= $0.height })
        XCTAssertTrue(cases.contains { $0.resizedWidth >= $0.width && $0.resizedHeight < $0.height })
    }

    func testCenterCropWideMatchesDiffusersAtReleasedModelSizes() throws {
        let cases = try ImageFixtures.load().index.hashed.filter { $0.kind == "center_crop_wide" }
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let source = Self.patternImage(width: c.sourceWidth, height: c.sourceHeight)
            let out = ImagePreprocessing.centerCropWide(source, width: c.width, height: c.height!)
            XCTAssertEqual(Self.fnv1a64(out.pixels), c.fnv1a64, "\(c.sourceWidth)x\(c.sourceHeight) -> \(c.width)x\(c.height!)")
        }
    }

    func testClipImageMatchesPipelineAtReleasedModelSizes() throws {
        let cases = try ImageFixtures.load().index.hashed.filter { $0.kind == "clip_image" }
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let source = Self.patternImage(width: c.sourceWidth, height: c.sourceHeight)
            let out = ImagePreprocessing.clipImage(source, width: c.width, cropSize: c.cropSize!)
            XCTAssertEqual(Self.fnv1a64(out.pixels), c.fnv1a64, "\(c.sourceWidth)x\(c.sourceHeight), width \(c.width)")
        }
    }

    func testClipPixelsMatchPipelineForCropSize32() throws {
        let fixtures = try ImageFixtures.load()
        XCTAssertFalse(fixtures.index.clip.isEmpty)
        for c in fixtures.index.clip {
            let out = ImagePreprocessing.clipPixels(try fixtures.source(c.source), width: c.width, cropSize: c.cropSize)
            let expected = try fixtures.floats(c.slice)
            XCTAssertEqual(out.count, 3 * c.cropSize * c.cropSize)
            assertClose(out, expected, "CLIP \(c.source), width \(c.width), S \(c.cropSize)")
        }
    }

    func testClipPixelsMatchPipelineForCropSize224() throws {
        let fixtures = try ImageFixtures.load()
        // The reference output is exactly table[c][pixel] of the hashed 224x224 image (checked by the script).
        let table = try fixtures.floats(fixtures.index.clipTable)
        XCTAssertEqual(table.count, 3 * 256)
        XCTAssertFalse(fixtures.index.clip224.isEmpty)
        for c in fixtures.index.clip224 {
            let source = try fixtures.source(c.source)
            let image = ImagePreprocessing.clipImage(source, width: c.width, cropSize: c.cropSize)
            XCTAssertEqual(Self.fnv1a64(image.pixels), c.fnv1a64, "CLIP image \(c.source), width \(c.width)")
            let plane = c.cropSize * c.cropSize
            var expected = [Float](repeating: 0, count: 3 * plane)
            for channel in 0..<3 {
                for i in 0..<plane {
                    expected[channel * plane + i] = table[channel * 256 + Int(image.pixels[i * 3 + channel])]
                }
            }
            let out = ImagePreprocessing.clipPixels(source, width: c.width, cropSize: c.cropSize)
            assertClose(out, expected, "CLIP \(c.source), width \(c.width), S \(c.cropSize)")
        }
    }

    func testClipPixelsUseTheGivenMeanAndStd() throws {
        let source = Self.randomImage(width: 20, height: 14)
        let mean: [Float] = [0.5, 0.25, 0.125]
        let std: [Float] = [0.5, 2, 4]
        let image = ImagePreprocessing.clipImage(source, width: 16, cropSize: 8)
        let out = ImagePreprocessing.clipPixels(source, width: 16, cropSize: 8, mean: mean, std: std)
        for channel in 0..<3 {
            for i in 0..<64 {
                let x = Float(image.pixels[i * 3 + channel]) / 255
                XCTAssertEqual(out[channel * 64 + i], (x - mean[channel]) / std[channel])
            }
        }
    }

    func testVaePixelsMatchPipeline() throws {
        let fixtures = try ImageFixtures.load()
        XCTAssertFalse(fixtures.index.vae.isEmpty)
        for c in fixtures.index.vae {
            let out = ImagePreprocessing.vaePixels(try fixtures.source(c.source), width: c.width, height: c.height)
            XCTAssertEqual(out.count, 3 * c.width * c.height)
            assertClose(out, try fixtures.floats(c.slice), "VAE \(c.source) -> \(c.width)x\(c.height)")
        }
    }

    func testFloatTensorConversionMatchesDiffusers() throws {
        let fixtures = try ImageFixtures.load()
        XCTAssertFalse(fixtures.index.unitFloats.isEmpty)
        for c in fixtures.index.unitFloats {
            let out = try ImagePreprocessing.image(fromUnitFloats: try fixtures.floats(c.floats), width: c.width, height: c.height)
            XCTAssertEqual(out, try fixtures.image(c.pixels, width: c.width, height: c.height))
        }
    }

    // MARK: - The floor-division quirk of `_center_crop_wide`

    func testFloorDivisionFollowsPython() {
        // Left: Python's `a // b`.
        let cases: [(Double, Double, Double)] = [
            (512, 0.4, 1279), (1024, 0.8, 1279), (576, 0.8, 719), (1, 0.1, 9), (0.7, 0.1, 6), (5, 0.5, 10),
            (-7.5, 2, -4), (7, -2, -4), (1e300, 1e-10, .infinity),
        ]
        for (a, b, expected) in cases {
            XCTAssertEqual(ImagePreprocessing.pythonFloorDivide(a, b), expected, "\(a) // \(b)")
        }
        XCTAssertEqual(ImagePreprocessing.pythonFloorDivide(-0.0, 3).sign, .minus)
    }

    func testCenterCropWideResizesOnePixelShortLikeTheReference() {
        let square = ImagePreprocessing.centerCropWideResizedSize(imageWidth: 512, imageHeight: 512, width: 1280, height: 1280)
        XCTAssertEqual(square.width, 1279)
        XCTAssertEqual(square.height, 1279)
        let wide = ImagePreprocessing.centerCropWideResizedSize(imageWidth: 1024, imageHeight: 576, width: 1280, height: 704)
        XCTAssertEqual(wide.width, 1279)
        XCTAssertEqual(wide.height, 719)
    }

    func testOnePixelShortSquareGetsBlackTopRowAndLeftColumn() {
        let out = ImagePreprocessing.centerCropWide(Self.randomImage(width: 512, height: 512, minimum: 1), width: 1280, height: 1280)
        XCTAssertEqual(out.width, 1280)
        XCTAssertEqual(out.height, 1280)
        XCTAssertTrue(Self.row(0, of: out).allSatisfy { $0 == 0 })
        XCTAssertTrue(Self.column(0, of: out).allSatisfy { $0 == 0 })
        // The box average of bytes of at least 1 is at least 1: only the padding is black.
        XCTAssertTrue(Self.row(1, of: out).dropFirst(3).allSatisfy { $0 != 0 })
        XCTAssertTrue(Self.column(1, of: out).dropFirst(3).allSatisfy { $0 != 0 })
    }

    func testOnePixelShortWideImageGetsBlackLeftColumnOnly() {
        let out = ImagePreprocessing.centerCropWide(Self.randomImage(width: 1024, height: 576, minimum: 1), width: 1280, height: 704)
        XCTAssertEqual(out.width, 1280)
        XCTAssertEqual(out.height, 704)
        XCTAssertTrue(Self.column(0, of: out).allSatisfy { $0 == 0 })
        XCTAssertTrue(Self.row(0, of: out).dropFirst(3).allSatisfy { $0 != 0 })
        XCTAssertTrue(Self.column(1, of: out).allSatisfy { $0 != 0 })
    }

    // MARK: - Properties on fresh random images

    func testResizeToTheSameSizeReturnsTheSamePixels() {
        let image = Self.randomImage(width: Int.random(in: 1...40), height: Int.random(in: 1...40))
        for filter in [PillowResample.box, .bilinear] {
            XCTAssertEqual(image.resized(width: image.width, height: image.height, filter: filter), image)
        }
    }

    func testResizeOfRandomImagesToRandomSizesHasTheRequestedSize() {
        for _ in 0..<40 {
            let image = Self.randomImage(width: Int.random(in: 1...48), height: Int.random(in: 1...48))
            let width = Int.random(in: 1...96)
            let height = Int.random(in: 1...96)
            for filter in [PillowResample.box, .bilinear] {
                let out = image.resized(width: width, height: height, filter: filter)
                XCTAssertEqual(out.width, width)
                XCTAssertEqual(out.height, height)
                XCTAssertEqual(out.pixels.count, width * height * 3)
            }
        }
    }

    func testResizeKeepsAUniformColor() throws {
        let color = (0..<3).map { _ in UInt8.random(in: 1...255) }
        let (width, height) = (Int.random(in: 1...30), Int.random(in: 1...30))
        let image = try RGBImage(width: width, height: height, pixels: Array((0..<width * height).map { _ in color }.joined()))
        for filter in [PillowResample.box, .bilinear] {
            let out = image.resized(width: Int.random(in: 1...70), height: Int.random(in: 1...70), filter: filter)
            for i in 0..<out.width * out.height {
                XCTAssertEqual(Array(out.pixels[i * 3..<i * 3 + 3]), color, "\(filter)")
            }
        }
    }

    func testCropInsideTheImageCopiesItsPixels() {
        let image = Self.randomImage(width: 9, height: 7)
        let out = image.cropped(x0: 2, y0: 3, x1: 6, y1: 5)
        for y in 0..<2 {
            for x in 0..<4 {
                let from = ((y + 3) * 9 + x + 2) * 3
                XCTAssertEqual(Array(out.pixels[(y * 4 + x) * 3..<(y * 4 + x) * 3 + 3]), Array(image.pixels[from..<from + 3]))
            }
        }
    }

    func testImageRejectsAWrongByteCount() {
        XCTAssertThrowsError(try RGBImage(width: 2, height: 2, pixels: [UInt8](repeating: 7, count: 11))) { error in
            XCTAssertEqual(error as? RGBImageError, .pixelCountMismatch(width: 2, height: 2, byteCount: 11))
        }
        XCTAssertThrowsError(try ImagePreprocessing.image(fromUnitFloats: [0.5, 0.5], width: 1, height: 1))
    }

    // MARK: - Helpers

    private func checkResizes(filterName: String, filter: PillowResample) throws {
        let fixtures = try ImageFixtures.load()
        let cases = fixtures.index.resize.filter { $0.filter == filterName }
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let out = try fixtures.source(c.source).resized(width: c.width, height: c.height, filter: filter)
            XCTAssertEqual(out, try fixtures.image(c.slice, width: c.width, height: c.height), "\(filterName) \(c.source) -> \(c.width)x\(c.height)")
        }
    }

    private func assertClose(_ actual: [Float], _ expected: [Float], _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, message, file: file, line: line)
        let worst = zip(actual, expected).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst, 1e-6, message, file: file, line: line)
    }

    /// `make_image_fixtures.py`'s `pattern_image`: texture, gradients and edges from a formula.
    static func patternImage(width: Int, height: Int) -> RGBImage {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<3 {
                    pixels[(y * width + x) * 3 + c] = UInt8(((x * 37 + y * 91 + c * 53) ^ ((x * y) >> 3)) & 255)
                }
            }
        }
        return RGBImage(validatedWidth: width, height: height, pixels: pixels)
    }

    static func fnv1a64(_ bytes: [UInt8]) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    static func randomImage(width: Int, height: Int, minimum: UInt8 = 0) -> RGBImage {
        var generator = SystemRandomNumberGenerator()
        let pixels = (0..<width * height * 3).map { _ in UInt8.random(in: minimum...255, using: &generator) }
        return RGBImage(validatedWidth: width, height: height, pixels: pixels)
    }

    static func row(_ y: Int, of image: RGBImage) -> ArraySlice<UInt8> {
        image.pixels[y * image.width * 3..<(y + 1) * image.width * 3]
    }

    static func column(_ x: Int, of image: RGBImage) -> [UInt8] {
        var bytes: [UInt8] = []
        for y in 0..<image.height {
            let start = (y * image.width + x) * 3
            bytes += image.pixels[start..<start + 3]
        }
        return bytes
    }
}

/// `Fixtures/images/index.json` and the binary files its cases point into.
private struct ImageFixtures {
    struct Slice: Decodable {
        let file: String
        let offset: Int
        let length: Int
    }
    struct Source: Decodable {
        let width: Int
        let height: Int
        let file: String
        let offset: Int
        let length: Int
        var slice: Slice { Slice(file: file, offset: offset, length: length) }
    }
    struct ResizeCase: Decodable {
        let source: String, filter: String, width: Int, height: Int, file: String, offset: Int, length: Int
        var slice: Slice { Slice(file: file, offset: offset, length: length) }
    }
    struct CropCase: Decodable {
        let source: String, box: [Int], width: Int, height: Int, file: String, offset: Int, length: Int
        var slice: Slice { Slice(file: file, offset: offset, length: length) }
    }
    struct CenterCropCase: Decodable {
        let source: String, width: Int, height: Int, resizedWidth: Int, resizedHeight: Int
        let file: String, offset: Int, length: Int
        var slice: Slice { Slice(file: file, offset: offset, length: length) }
    }
    struct ClipCase: Decodable {
        let source: String, width: Int, cropSize: Int, file: String, offset: Int, length: Int
        var slice: Slice { Slice(file: file, offset: offset, length: length) }
    }
    struct Clip224Case: Decodable {
        let source: String, width: Int, cropSize: Int, fnv1a64: String
    }
    struct VaeCase: Decodable {
        let source: String, width: Int, height: Int, file: String, offset: Int, length: Int
        var slice: Slice { Slice(file: file, offset: offset, length: length) }
    }
    struct UnitFloatsCase: Decodable {
        let width: Int, height: Int, floats: Slice, pixels: Slice
    }
    struct HashedCase: Decodable {
        let kind: String, filter: String?, sourceWidth: Int, sourceHeight: Int, width: Int, height: Int?, cropSize: Int?
        let fnv1a64: String
    }
    struct Index: Decodable {
        let sources: [String: Source]
        let resize: [ResizeCase]
        let crop: [CropCase]
        let centerCropWide: [CenterCropCase]
        let clip: [ClipCase]
        let clipTable: Slice
        let clip224: [Clip224Case]
        let vae: [VaeCase]
        let unitFloats: [UnitFloatsCase]
        let hashed: [HashedCase]
    }

    let folder: URL
    let index: Index

    static func load() throws -> ImageFixtures {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/images")
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let index = try decoder.decode(Index.self, from: Data(contentsOf: folder.appendingPathComponent("index.json")))
        return ImageFixtures(folder: folder, index: index)
    }

    func bytes(_ slice: Slice) throws -> [UInt8] {
        let data = try Data(contentsOf: folder.appendingPathComponent(slice.file))
        return [UInt8](data[slice.offset..<slice.offset + slice.length])
    }

    func image(_ slice: Slice, width: Int, height: Int) throws -> RGBImage {
        try RGBImage(width: width, height: height, pixels: bytes(slice))
    }

    func source(_ name: String) throws -> RGBImage {
        guard let source = index.sources[name] else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "no source image \(name) in index.json"])
        }
        return try image(source.slice, width: source.width, height: source.height)
    }

    /// Little-endian float32 values.
    func floats(_ slice: Slice) throws -> [Float] {
        let raw = try bytes(slice)
        return (0..<raw.count / 4).map { i in
            let bits = (0..<4).reduce(UInt32(0)) { word, k in word | UInt32(raw[4 * i + k]) << UInt32(8 * k) }
            return Float(bitPattern: bits)
        }
    }
}
