import Foundation
import XCTest
@testable import KinemaPipeline

/// ImageLoader and VideoWriter against ffmpeg itself: every output is decoded again (by ImageLoader, ffmpeg
/// or ffprobe, or parsed here for .npy and WebP) and compared with the fresh random frames that went in.
/// These tests need ffmpeg and ffprobe; without them they fail with `FFmpeg.executable()`'s install advice.
final class MediaTests: XCTestCase {
    private var scratch: URL!
    private var seed: UInt64 = 0

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-media-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        seed = UInt64.random(in: 1...UInt64.max)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }

    // MARK: - .npy

    func testNpyHoldsTheFloatsExactlyUnderANumpyHeader() throws {
        let (count, height, width) = (3, 5, 7)
        let frames = randomFrames(count: count, height: height, width: width)
        let path = scratch.appendingPathComponent("clip.npy").path
        try VideoWriter.write(frames: frames, count: count, width: width, height: height, fps: 8, to: path)

        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(bytes[0..<8]), [0x93] + Array("NUMPY".utf8) + [1, 0], "magic and version 1.0")
        let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        let dataStart = 10 + headerLength
        XCTAssertEqual(dataStart % 64, 0, "numpy pads the header to a multiple of 64 bytes")
        let header = String(decoding: bytes[10..<dataStart], as: UTF8.self)
        XCTAssertTrue(header.hasSuffix("\n"))
        XCTAssertEqual(header.trimmingCharacters(in: .whitespacesAndNewlines),
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 5, 7, 3), }")
        XCTAssertEqual(bytes.count - dataStart, frames.count * 4)
        let stored = (0..<frames.count).map { i -> Float in
            let at = dataStart + i * 4
            let bits = UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
            return Float(bitPattern: bits)
        }
        XCTAssertEqual(stored.map(\.bitPattern), frames.map(\.bitPattern), "seed \(seed)")
    }

    // MARK: - 8-bit conversion

    func testEightBitConversionRoundsHalfToEvenLikeNumpy() {
        // Values whose float32 product with 255 is exactly k + 0.5: numpy's round goes to the even neighbour.
        var halves: [(value: Float, expected: UInt8)] = []
        for k in 0..<255 {
            let value = Float(2 * k + 1) / 510
            let scaled = value * 255
            if scaled == Float(k) + 0.5 { halves.append((value, UInt8(k % 2 == 0 ? k : k + 1))) }
        }
        XCTAssertGreaterThan(halves.count, 10, "enough exact halves to test")
        XCTAssertEqual(VideoWriter.eightBit(halves.map(\.value)), halves.map(\.expected))
    }

    func testEightBitConversionClampsOutOfRangeAndNaN() {
        XCTAssertEqual(VideoWriter.eightBit([-0.25, 1.75, .nan, -.infinity, .infinity, 0.5, 1]), [0, 255, 0, 0, 255, 128, 255])
    }

    // MARK: - PNG frames

    func testPNGFramesHoldRoundedEightBitValues() throws {
        let (count, height, width) = (3, 9, 13)
        let frames = randomFrames(count: count, height: height, width: width)
        let directory = scratch.appendingPathComponent("frames")
        try VideoWriter.write(frames: frames, count: count, width: width, height: height, fps: 8, to: directory.path)

        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        XCTAssertEqual(names, ["frame_0000.png", "frame_0001.png", "frame_0002.png"])
        let frameValues = height * width * 3
        for (index, name) in names.enumerated() {
            let image = try ImageLoader.load(path: directory.appendingPathComponent(name).path)
            XCTAssertEqual(image.width, width)
            XCTAssertEqual(image.height, height)
            let expected = frames[(index * frameValues)..<((index + 1) * frameValues)].map { UInt8(($0 * 255).rounded(.toNearestOrEven)) }
            XCTAssertEqual(image.pixels, expected, "\(name), seed \(seed)")
        }
    }

    func testPNGPathWritesThePosterTheFirstFrameExactly() throws {
        let (count, height, width) = (Int.random(in: 2...4), Int.random(in: 3...12), Int.random(in: 3...12))
        let frames = randomFrames(count: count, height: height, width: width)
        let path = scratch.appendingPathComponent("poster.png").path
        try VideoWriter.write(frames: frames, count: count, width: width, height: height, fps: 8, to: path)
        let image = try ImageLoader.load(path: path)
        XCTAssertEqual([image.width, image.height], [width, height])
        XCTAssertEqual(image.pixels, VideoWriter.eightBit(Array(frames[0..<(height * width * 3)])), "seed \(seed)")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0.hasPrefix(".") }, [], "no staging file left")
    }

    func testPathEndingInSlashWritesPNGFrames() throws {
        let frames = randomFrames(count: 2, height: 4, width: 6)
        let directory = scratch.appendingPathComponent("slash").path + "/"
        try VideoWriter.write(frames: frames, count: 2, width: 6, height: 4, fps: 8, to: directory)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory).sorted(), ["frame_0000.png", "frame_0001.png"])
    }

    func testRewritingAFramesDirectoryReplacesTheEarlierFrames() throws {
        let directory = scratch.appendingPathComponent("frames").path
        try VideoWriter.write(frames: randomFrames(count: 3, height: 4, width: 6), count: 3, width: 6, height: 4, fps: 8, to: directory)
        let second = randomFrames(count: 2, height: 4, width: 6)
        try VideoWriter.write(frames: second, count: 2, width: 6, height: 4, fps: 8, to: directory)

        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory).sorted(), ["frame_0000.png", "frame_0001.png"])
        XCTAssertEqual(try ImageLoader.load(path: directory + "/frame_0001.png").pixels, VideoWriter.eightBit(Array(second[72...])))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path), ["frames"], "no staging or replaced directory left")
    }

    func testADirectoryHoldingOtherFilesIsNotReplaced() throws {
        let directory = scratch.appendingPathComponent("mine")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        try Data("keep me".utf8).write(to: directory.appendingPathComponent("notes.txt"))

        XCTAssertThrowsError(try VideoWriter.write(frames: randomFrames(count: 1, height: 2, width: 2), count: 1, width: 2,
                                                   height: 2, fps: 8, to: directory.path)) { error in
            XCTAssertTrue("\(error)".contains("already holds notes.txt"), "\(error)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["notes.txt"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path), ["mine"])
    }

    // MARK: - MP4

    func testMP4IsBrowserPlayableH264WithEveryFrameAtTheGivenRate() throws {
        let (count, height, width) = (5, 32, 48)
        let path = scratch.appendingPathComponent("clip.mp4").path
        try VideoWriter.write(frames: randomFrames(count: count, height: height, width: width), count: count,
                              width: width, height: height, fps: 8, to: path)

        let stream = try probeVideoStream(path)
        XCTAssertEqual(stream["codec_name"] as? String, "h264")
        XCTAssertEqual(stream["pix_fmt"] as? String, "yuv420p")
        XCTAssertEqual(stream["nb_read_frames"] as? String, "\(count)")
        XCTAssertEqual(stream["r_frame_rate"] as? String, "8/1")
        XCTAssertEqual(stream["width"] as? Int, width)
        XCTAssertEqual(stream["height"] as? Int, height)
        XCTAssertEqual(stream["color_space"] as? String, "bt709")
    }

    func testMP4HasItsIndexBeforeItsData() throws {
        let path = scratch.appendingPathComponent("clip.mp4").path
        try VideoWriter.write(frames: randomFrames(count: 3, height: 16, width: 16), count: 3, width: 16, height: 16, fps: 8, to: path)

        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let moov = try XCTUnwrap(offset(of: "moov", in: bytes), "no moov atom")
        let mdat = try XCTUnwrap(offset(of: "mdat", in: bytes), "no mdat atom")
        XCTAssertLessThan(moov, mdat, "+faststart puts moov before mdat")
    }

    func testMP4OfOddSizeIsPaddedByOnePixel() throws {
        let path = scratch.appendingPathComponent("odd.mp4").path
        try VideoWriter.write(frames: randomFrames(count: 2, height: 17, width: 23), count: 2, width: 23, height: 17, fps: 8, to: path)

        let stream = try probeVideoStream(path)
        XCTAssertEqual(stream["width"] as? Int, 24)
        XCTAssertEqual(stream["height"] as? Int, 18)
        XCTAssertEqual(stream["nb_read_frames"] as? String, "2")
    }

    /// Matched BT.709 conversion and tags decode within about 2.5 levels on average here; a mismatch (say, the
    /// tags left out) gives about 7.
    func testMP4ColoursDecodeCloseToTheInput() throws {
        let (count, height, width) = (2, 48, 64)
        let frames = randomFrames(count: count, height: height, width: width, noise: 0.005)
        let path = scratch.appendingPathComponent("colours.mp4").path
        try VideoWriter.write(frames: frames, count: count, width: width, height: height, fps: 8, to: path)

        let decoded = try decodeToRGB(path)
        XCTAssertEqual(decoded.count, frames.count)
        let expected = VideoWriter.eightBit(frames)
        let meanError = zip(decoded, expected).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) } / Double(expected.count)
        XCTAssertLessThan(meanError, 4, "seed \(seed)")
    }

    // MARK: - GIF and WebP

    func testGIFDecodesToEveryFrameAndLoopsForever() throws {
        let (count, height, width) = (4, 20, 30)
        let frames = randomFrames(count: count, height: height, width: width)
        let path = scratch.appendingPathComponent("preview.gif").path
        try VideoWriter.write(frames: frames, count: count, width: width, height: height, fps: 8, to: path)

        let decoded = try decodeToRGB(path)
        XCTAssertEqual(decoded.count, count * height * width * 3, "\(count) frames of \(width)x\(height)")
        let meanError = zip(decoded, VideoWriter.eightBit(frames)).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) } / Double(decoded.count)
        XCTAssertLessThan(meanError, 12, "a 256-colour palette stays close to the frames; seed \(seed)")
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let netscape = try XCTUnwrap(offset(of: "NETSCAPE2.0", in: bytes), "no looping extension")
        XCTAssertEqual(Array(bytes[(netscape + 11)..<(netscape + 15)]), [3, 1, 0, 0], "loop count 0: forever")
    }

    /// Debian's ffmpeg 5.1 cannot decode animated WebP, so the container is parsed here and each frame's
    /// bitstream is decoded on its own by ImageLoader.
    func testWebPIsAnAnimationWithOneDecodableFramePerInputFrame() throws {
        let (count, height, width) = (3, 20, 30)
        let frames = randomFrames(count: count, height: height, width: width, noise: 0.01)
        let path = scratch.appendingPathComponent("preview.webp").path
        try VideoWriter.write(frames: frames, count: count, width: width, height: height, fps: 8, to: path)

        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(String(decoding: bytes[0..<4], as: UTF8.self), "RIFF")
        XCTAssertEqual(String(decoding: bytes[8..<12], as: UTF8.self), "WEBP")
        var chunks: [(name: String, payload: ArraySlice<UInt8>)] = []
        var at = 12
        while at + 8 <= bytes.count {
            let size = Int(littleEndian: bytes, at: at + 4, width: 4)
            chunks.append((String(decoding: bytes[at..<(at + 4)], as: UTF8.self), bytes[(at + 8)..<min(at + 8 + size, bytes.count)]))
            at += 8 + size + size % 2
        }
        let header = try XCTUnwrap(chunks.first { $0.name == "VP8X" }?.payload)
        XCTAssertNotEqual(header[header.startIndex] & 0x02, 0, "animation flag")
        XCTAssertEqual(Int(littleEndian: Array(header), at: 4, width: 3) + 1, width)
        XCTAssertEqual(Int(littleEndian: Array(header), at: 7, width: 3) + 1, height)
        let animation = try XCTUnwrap(chunks.first { $0.name == "ANIM" }?.payload)
        XCTAssertEqual(Int(littleEndian: Array(animation), at: 4, width: 2), 0, "loop count 0: forever")
        let animationFrames = chunks.filter { $0.name == "ANMF" }
        XCTAssertEqual(animationFrames.count, count)

        for (index, frame) in animationFrames.enumerated() {
            // An ANMF payload is a 16-byte frame header followed by the frame's chunks; the "VP8 " chunk alone,
            // in a RIFF wrapper, is a still WebP.
            let frameBytes = Array(frame.payload)
            let frameWidth = Int(littleEndian: frameBytes, at: 6, width: 3) + 1
            let frameHeight = Int(littleEndian: frameBytes, at: 9, width: 3) + 1
            var still: [UInt8] = []
            var chunkAt = 16
            while chunkAt + 8 <= frameBytes.count {
                let size = Int(littleEndian: frameBytes, at: chunkAt + 4, width: 4)
                let name = String(decoding: frameBytes[chunkAt..<(chunkAt + 4)], as: UTF8.self)
                if name == "VP8 " || name == "VP8L" { still = Array(frameBytes[chunkAt..<(chunkAt + 8 + size + size % 2)]) }
                chunkAt += 8 + size + size % 2
            }
            XCTAssertFalse(still.isEmpty, "frame \(index) has a VP8 or VP8L bitstream")
            let riffSize = UInt32(4 + still.count)
            let file = Array("RIFF".utf8) + withUnsafeBytes(of: riffSize.littleEndian, Array.init) + Array("WEBP".utf8) + still
            let stillPath = scratch.appendingPathComponent("frame\(index).webp")
            try Data(file).write(to: stillPath)
            let image = try ImageLoader.load(path: stillPath.path)
            XCTAssertEqual(image.width, frameWidth)
            XCTAssertEqual(image.height, frameHeight)
            if index == 0 {
                XCTAssertEqual(image.width, width, "the first frame covers the canvas")
                let expected = VideoWriter.eightBit(Array(frames[0..<(height * width * 3)]))
                let meanError = zip(image.pixels, expected).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) } / Double(expected.count)
                XCTAssertLessThan(meanError, 6, "lossy quality 80; seed \(seed)")
            }
        }
    }

    // MARK: - VideoFormat

    func testFormatFollowsTheExtension() {
        XCTAssertEqual(VideoFormat(path: "out/clip.mp4"), .mp4)
        XCTAssertEqual(VideoFormat(path: "clip.MP4"), .mp4)
        XCTAssertEqual(VideoFormat(path: "a.gif"), .gif)
        XCTAssertEqual(VideoFormat(path: "a.webp"), .webp)
        XCTAssertEqual(VideoFormat(path: "a.npy"), .npy)
        XCTAssertEqual(VideoFormat(path: "out/frames"), .pngFrames)
        XCTAssertEqual(VideoFormat(path: "out/frames.d/"), .pngFrames)
        XCTAssertNil(VideoFormat(path: "clip.avi"))
        XCTAssertEqual(VideoFormat(path: "poster.PNG"), .poster)
        XCTAssertNil(VideoFormat(path: ""))
    }

    func testUnknownExtensionIsRejectedWithTheChoices() {
        XCTAssertThrowsError(try VideoWriter.write(frames: randomFrames(count: 1, height: 2, width: 2), count: 1, width: 2, height: 2,
                                                   fps: 8, to: scratch.appendingPathComponent("clip.avi").path)) { error in
            XCTAssertTrue("\(error)".contains(".mp4, .gif, .webp, .npy or .png (the first frame)"), "\(error)")
        }
    }

    func testFrameCountThatDoesNotMatchTheSizesIsRejected() {
        let path = scratch.appendingPathComponent("clip.npy").path
        XCTAssertThrowsError(try VideoWriter.write(frames: randomFrames(count: 2, height: 4, width: 4), count: 3, width: 4, height: 4,
                                                   fps: 8, to: path)) { error in
            XCTAssertTrue("\(error)".contains("3 frames of 4x4 RGB need 144 floats, but 96 were given"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }

    // MARK: - Atomic writes

    func testWritingIntoAMissingDirectoryFailsAndLeavesNothing() {
        for name in ["clip.mp4", "clip.npy", "frames"] {
            let path = scratch.appendingPathComponent("missing").appendingPathComponent(name).path
            XCTAssertThrowsError(try VideoWriter.write(frames: randomFrames(count: 1, height: 2, width: 2), count: 1, width: 2,
                                                       height: 2, fps: 8, to: path)) { error in
                XCTAssertTrue("\(error)".contains("missing does not exist"), "\(error)")
            }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path), [])
    }

    func testWritingBelowAFileFailsAndLeavesNothing() throws {
        let file = scratch.appendingPathComponent("plain")
        try Data("a file".utf8).write(to: file)
        XCTAssertThrowsError(try VideoWriter.write(frames: randomFrames(count: 1, height: 2, width: 2), count: 1, width: 2,
                                                   height: 2, fps: 8, to: file.appendingPathComponent("clip.mp4").path)) { error in
            XCTAssertTrue("\(error)".contains("\(file.path) is a file, not a directory"), "\(error)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path), ["plain"])
    }

    func testFailingFFmpegLeavesTheExistingFileUntouchedAndNoPartialFile() throws {
        let path = scratch.appendingPathComponent("clip.mp4").path
        let earlier = Data("an earlier video".utf8)
        try earlier.write(to: URL(fileURLWithPath: path))

        try withEnvironment("KINEMA_FFMPEG", "/bin/false") {
            XCTAssertThrowsError(try VideoWriter.write(frames: randomFrames(count: 2, height: 8, width: 8), count: 2, width: 8,
                                                       height: 8, fps: 8, to: path)) { error in
                XCTAssertTrue("\(error)".contains("ffmpeg (/bin/false) exited with status 1"), "\(error)")
            }
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), earlier)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path), ["clip.mp4"])
    }

    /// A fake ffmpeg that writes part of its output file, complains and fails, as a crashing encoder would.
    func testFFmpegFailingHalfwayLeavesNoPartialOutput() throws {
        let fake = scratch.appendingPathComponent("fake-ffmpeg")
        try Data("#!/bin/sh\nfor last; do :; done\necho partial > \"${last#file:}\"\necho 'Conversion failed!' >&2\nexit 1\n".utf8)
            .write(to: fake)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: fake.path)
        let framesDirectory = scratch.appendingPathComponent("frames")
        try FileManager.default.createDirectory(at: framesDirectory, withIntermediateDirectories: false)
        let earlierFrame = framesDirectory.appendingPathComponent("frame_0000.png")
        try Data("earlier frame".utf8).write(to: earlierFrame)

        try withEnvironment("KINEMA_FFMPEG", fake.path) {
            for name in ["clip.gif", "clip.webp", "clip.mp4", "frames"] {
                XCTAssertThrowsError(try VideoWriter.write(frames: randomFrames(count: 2, height: 8, width: 8), count: 2, width: 8,
                                                           height: 8, fps: 8, to: scratch.appendingPathComponent(name).path)) { error in
                    XCTAssertTrue("\(error)".hasSuffix("exited with status 1: Conversion failed!"), "\(error)")
                }
            }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted(), ["fake-ffmpeg", "frames"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: framesDirectory.path), ["frame_0000.png"])
        XCTAssertEqual(try Data(contentsOf: earlierFrame), Data("earlier frame".utf8))
    }

    func testAnExistingFileIsReplacedByACompleteWrite() throws {
        let path = scratch.appendingPathComponent("clip.gif").path
        try Data("an earlier preview".utf8).write(to: URL(fileURLWithPath: path))
        try VideoWriter.write(frames: randomFrames(count: 2, height: 8, width: 8), count: 2, width: 8, height: 8, fps: 8, to: path)
        XCTAssertEqual(String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)).prefix(6), as: UTF8.self), "GIF89a")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path), ["clip.gif"])
    }

    // MARK: - ImageLoader

    func testLoadsRGBPNGExactly() throws {
        let pixels = randomPixels(width: 21, height: 13, channels: 3)
        let path = try makeImage(pixels, pixelFormat: "rgb24", width: 21, height: 13, name: "rgb.png")
        XCTAssertEqual(try ImageLoader.load(path: path), try RGBImage(width: 21, height: 13, pixels: pixels))
    }

    /// Pillow's convert("RGB") keeps the colour of every pixel whatever its alpha (no blending against black).
    func testLoadDropsAlphaLikePillow() throws {
        var rgba = randomPixels(width: 16, height: 9, channels: 4)
        rgba[3] = 0
        rgba[7] = 1
        rgba[11] = 128
        let path = try makeImage(rgba, pixelFormat: "rgba", width: 16, height: 9, name: "rgba.png")
        let rgb = (0..<(16 * 9)).flatMap { rgba[($0 * 4)..<($0 * 4 + 3)] }
        XCTAssertEqual(try ImageLoader.load(path: path).pixels, rgb, "seed \(seed)")
    }

    func testLoadsBMPExactly() throws {
        let pixels = randomPixels(width: 11, height: 7, channels: 3)
        let path = try makeImage(pixels, pixelFormat: "rgb24", width: 11, height: 7, name: "image.bmp")
        XCTAssertEqual(try ImageLoader.load(path: path).pixels, pixels)
    }

    func testLoadsTIFFExactly() throws {
        let pixels = randomPixels(width: 11, height: 7, channels: 3)
        let path = try makeImage(pixels, pixelFormat: "rgb24", width: 11, height: 7, name: "image.tiff")
        XCTAssertEqual(try ImageLoader.load(path: path).pixels, pixels)
    }

    func testLoadsJPEGWithinItsLoss() throws {
        let (width, height) = (64, 48)
        let pixels = VideoWriter.eightBit(randomFrames(count: 1, height: height, width: width, noise: 0.01))
        let path = try makeImage(pixels, pixelFormat: "rgb24", width: width, height: height, name: "photo.jpg", options: ["-q:v", "2"])
        let image = try ImageLoader.load(path: path)
        XCTAssertEqual(image.width, width)
        XCTAssertEqual(image.height, height)
        let meanError = zip(image.pixels, pixels).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) } / Double(pixels.count)
        XCTAssertLessThan(meanError, 3, "seed \(seed)")
    }

    /// diffusers' load_image applies the EXIF orientation (ImageOps.exif_transpose); orientation 6 means
    /// "rotate 90 degrees clockwise to display".
    func testLoadAppliesTheEXIFOrientationOfAJPEG() throws {
        let (width, height) = (32, 16)
        // Stored image: left half white, right half black.
        let pixels = (0..<(width * height)).flatMap { i -> [UInt8] in i % width < width / 2 ? [255, 255, 255] : [0, 0, 0] }
        let path = try makeImage(pixels, pixelFormat: "rgb24", width: width, height: height, name: "plain.jpg", options: ["-q:v", "2"])
        var jpeg = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        // APP1 "Exif": a little-endian TIFF header and one IFD entry, Orientation (0x0112) = 6.
        let tiff: [UInt8] = [0x49, 0x49, 0x2A, 0x00, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]
        let exif = Array("Exif".utf8) + [0, 0] + tiff
        let segmentLength = exif.count + 2
        jpeg.insert(contentsOf: [0xFF, 0xE1, UInt8(segmentLength >> 8), UInt8(segmentLength & 0xff)] + exif, at: 2)
        let rotatedPath = scratch.appendingPathComponent("rotated.jpg").path
        try Data(jpeg).write(to: URL(fileURLWithPath: rotatedPath))

        let image = try ImageLoader.load(path: rotatedPath)
        XCTAssertEqual(image.width, height)
        XCTAssertEqual(image.height, width)
        // Rotated clockwise, the stored left half becomes the top half.
        XCTAssertGreaterThan(image.pixels[(4 * image.width + 8) * 3], 200, "top half white")
        XCTAssertLessThan(image.pixels[(28 * image.width + 8) * 3], 50, "bottom half black")
    }

    func testLoadsAFileWhoseNameHasAPercentSign() throws {
        let pixels = randomPixels(width: 5, height: 4, channels: 3)
        let path = try makeImage(pixels, pixelFormat: "rgb24", width: 5, height: 4, name: "shot%03d 100%.png")
        XCTAssertEqual(try ImageLoader.load(path: path).pixels, pixels)
    }

    func testMissingFileIsNamedInTheError() {
        let path = scratch.appendingPathComponent("absent.png").path
        assertLoadFails(path, saying: "\(path): no such file")
    }

    func testDirectoryIsNotAnImage() {
        assertLoadFails(scratch.path, saying: "\(scratch.path) is a directory, not an image file")
    }

    func testUnreadableFileIsReported() throws {
        let path = scratch.appendingPathComponent("locked.png").path
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: path))
        try FileManager.default.setAttributes([.posixPermissions: 0], ofItemAtPath: path)
        if FileManager.default.isReadableFile(atPath: path) {
            // Running as root, where permissions do not stop reads: /proc/self/mem fails its first read for everyone.
            assertLoadFails("/proc/self/mem", saying: "/proc/self/mem cannot be read: ")
        } else {
            assertLoadFails(path, saying: "\(path) cannot be read: Permission denied")
        }
    }

    func testEmptyFileIsReported() throws {
        let path = scratch.appendingPathComponent("empty.png").path
        try Data().write(to: URL(fileURLWithPath: path))
        assertLoadFails(path, saying: "\(path) is empty (0 bytes), not an image")
    }

    func testTextFileIsNotAnImage() throws {
        let path = scratch.appendingPathComponent("notes.png").path
        try Data(String(repeating: "not an image at all\n", count: 20).utf8).write(to: URL(fileURLWithPath: path))
        assertLoadFails(path, saying: "\(path): not an image ffmpeg can decode (")
    }

    func testRandomBytesAreNotAnImage() throws {
        let path = scratch.appendingPathComponent("noise.jpg").path
        var generator = SplitMix64(seed: seed)
        try Data((0..<4096).map { _ in UInt8(truncatingIfNeeded: generator.next()) }).write(to: URL(fileURLWithPath: path))
        assertLoadFails(path, saying: "\(path): not an image ffmpeg can decode")
    }

    func testTruncatedPNGIsNotAnImage() throws {
        let source = try makeImage(randomPixels(width: 40, height: 30, channels: 3), pixelFormat: "rgb24", width: 40, height: 30,
                                   name: "whole.png")
        let whole = try Data(contentsOf: URL(fileURLWithPath: source))
        let path = scratch.appendingPathComponent("truncated.png").path
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: path))
        assertLoadFails(path, saying: "\(path): not an image ffmpeg can decode (")
    }

    // MARK: - ffmpeg

    func testMissingFFmpegIsReportedWithInstallAdvice() throws {
        try withEnvironment("PATH", scratch.path) {
            XCTAssertThrowsError(try FFmpeg.executable()) { error in
                XCTAssertTrue("\(error)".contains("apt-get install ffmpeg"), "\(error)")
            }
            XCTAssertThrowsError(try ImageLoader.load(path: "/etc/hostname")) { error in
                XCTAssertTrue("\(error)".contains("ffmpeg was not found on PATH"), "\(error)")
            }
        }
        try withEnvironment("KINEMA_FFMPEG", scratch.appendingPathComponent("nowhere/ffmpeg").path) {
            XCTAssertThrowsError(try FFmpeg.executable()) { error in
                XCTAssertTrue("\(error)".contains("KINEMA_FFMPEG is"), "\(error)")
            }
        }
    }

    /// A stuck encoder that never reads its input is killed at the time limit, and the blocked write of its
    /// input returns instead of hanging or raising SIGPIPE.
    func testAStuckProcessIsKilledAtTheTimeLimit() throws {
        let start = Date()
        let result = try FFmpeg.run("/bin/sleep", arguments: ["30"], input: [UInt8](repeating: 7, count: 1 << 20), timeout: 0.5)
        XCTAssertTrue(result.timedOut)
        XCTAssertFalse(result.succeeded)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
    }

    // MARK: - Helpers

    /// `count` frames of smooth colour gradients that move from frame to frame, plus uniform noise of
    /// +-`noise`, clamped to [0, 1]: like real frames, never constant.
    private func randomFrames(count: Int, height: Int, width: Int, noise: Float = 0.05) -> [Float] {
        var generator = SplitMix64(seed: seed &+ UInt64(count * 1_000_003 + height * 1009 + width))
        let phase = Float(generator.next() % 1000) / 1000
        var frames = [Float]()
        frames.reserveCapacity(count * height * width * 3)
        for f in 0..<count {
            for y in 0..<height {
                for x in 0..<width {
                    let u = Float(x) / Float(max(width - 1, 1))
                    let v = Float(y) / Float(max(height - 1, 1))
                    let t = Float(f) / Float(max(count, 1))
                    let base: [Float] = [u, v, 0.5 + 0.5 * sin(2 * Float.pi * (0.5 * (u + v) + t + phase))]
                    for channel in 0..<3 {
                        let jitter = (Float(generator.next() % 10_000) / 10_000 * 2 - 1) * noise
                        frames.append(min(max(0.1 + 0.8 * base[channel] + jitter, 0), 1))
                    }
                }
            }
        }
        return frames
    }

    private func randomPixels(width: Int, height: Int, channels: Int) -> [UInt8] {
        var generator = SplitMix64(seed: seed &+ UInt64(width * 31 + height * 7 + channels))
        return (0..<(width * height * channels)).map { _ in UInt8(truncatingIfNeeded: generator.next() >> 17) }
    }

    /// Encodes raw `pixels` with ffmpeg into `scratch/name`; the format follows the extension.
    private func makeImage(_ pixels: [UInt8], pixelFormat: String, width: Int, height: Int, name: String,
                           options: [String] = []) throws -> String {
        let path = scratch.appendingPathComponent(name).path
        let result = try FFmpeg.run(try FFmpeg.executable(), arguments: [
            "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", pixelFormat, "-s", "\(width)x\(height)",
            "-i", "pipe:0", "-frames:v", "1", "-update", "1",
        ] + options + ["-y", "file:" + path], input: pixels, timeout: 60)
        XCTAssertTrue(result.succeeded, String(decoding: result.standardError, as: UTF8.self))
        XCTAssertTrue(FileManager.default.fileExists(atPath: path), "ffmpeg wrote \(name)")
        return path
    }

    /// Every frame of a video decoded by ffmpeg to rgb24, concatenated.
    private func decodeToRGB(_ path: String) throws -> [UInt8] {
        let result = try FFmpeg.run(try FFmpeg.executable(), arguments: [
            "-hide_banner", "-nostdin", "-loglevel", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        ], timeout: 60)
        XCTAssertTrue(result.succeeded, String(decoding: result.standardError, as: UTF8.self))
        return [UInt8](result.standardOutput)
    }

    /// ffprobe's description of the first video stream, frames counted by decoding.
    private func probeVideoStream(_ path: String) throws -> [String: Any] {
        let ffprobe = URL(fileURLWithPath: try FFmpeg.executable()).deletingLastPathComponent().appendingPathComponent("ffprobe").path
        guard FileManager.default.isExecutableFile(atPath: ffprobe) else {
            throw MediaError("ffprobe is not beside ffmpeg at \(ffprobe); install ffmpeg's full package (apt-get install ffmpeg)")
        }
        let result = try FFmpeg.run(ffprobe, arguments: [
            "-v", "error", "-count_frames", "-select_streams", "v:0", "-of", "json",
            "-show_entries", "stream=codec_name,pix_fmt,nb_read_frames,r_frame_rate,width,height,color_space", path,
        ], timeout: 60)
        XCTAssertTrue(result.succeeded, String(decoding: result.standardError, as: UTF8.self))
        let json = try JSONSerialization.jsonObject(with: result.standardOutput) as? [String: Any]
        let streams = try XCTUnwrap(json?["streams"] as? [[String: Any]], "ffprobe output")
        return try XCTUnwrap(streams.first, "no video stream in \(path)")
    }

    private func assertLoadFails(_ path: String, saying expected: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try ImageLoader.load(path: path), file: file, line: line) { error in
            XCTAssertTrue(error is MediaError, "\(type(of: error))", file: file, line: line)
            XCTAssertTrue("\(error)".hasPrefix(expected), "\"\(error)\" should start with \"\(expected)\"", file: file, line: line)
        }
    }

    private func withEnvironment(_ name: String, _ value: String, _ body: () throws -> Void) throws {
        let previous = getenv(name).map { String(cString: $0) }
        setenv(name, value, 1)
        defer {
            if let previous { setenv(name, previous, 1) } else { unsetenv(name) }
        }
        try body()
    }

    private func offset(of text: String, in bytes: [UInt8]) -> Int? {
        let needle = Array(text.utf8)
        guard bytes.count >= needle.count else { return nil }
        return (0...(bytes.count - needle.count)).first { bytes[$0..<($0 + needle.count)].elementsEqual(needle) }
    }
}

/// A small seeded generator, so that a failing case can be replayed from the seed in its message.
private struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private extension Int {
    /// The unsigned little-endian integer of `width` bytes at `offset` in `bytes`.
    init(littleEndian bytes: [UInt8], at offset: Int, width: Int) {
        self = (0..<width).reduce(0) { $0 | Int(bytes[offset + $1]) << (8 * $1) }
    }
}
