// Input images are decoded by ffmpeg, run as a subprocess: it reads every format a user is likely to
// hand us (PNG, JPEG, WebP, BMP, TIFF, GIF, ...) and keeps Kinema free of image-codec libraries.
// The reference (diffusers' `load_image`) does `ImageOps.exif_transpose(image).convert("RGB")` in
// Pillow; the loader matches that as far as ffmpeg allows (see `ImageLoader.load`).

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads input images into `RGBImage`s.
public enum ImageLoader {
    /// How long ffmpeg may take to decode one image before it is killed; a still image takes milliseconds.
    static let timeout: TimeInterval = 60

    /// Decodes the first frame of any image ffmpeg reads (PNG, JPEG, WebP, BMP, TIFF, GIF, ...) to 8-bit RGB.
    ///
    /// Matches diffusers' `load_image` (Pillow's `exif_transpose` then `convert("RGB")`):
    /// - alpha is dropped, not blended: ffmpeg decodes to RGBA and the alpha byte is discarded, as Pillow does;
    /// - a JPEG's EXIF orientation is applied (ffmpeg autorotates);
    /// - only the first frame of an animated GIF is read; Debian 12's ffmpeg (5.1) cannot decode animated WebP;
    /// - lossless 8-bit formats decode to exactly Pillow's bytes. JPEG (and lossy WebP) differ from Pillow by a
    ///   few levels, because ffmpeg's IDCT and chroma upsampling are not libjpeg's; 16-bit PNGs may differ by
    ///   one level (Pillow keeps the high byte, ffmpeg rounds).
    /// - Throws: `MediaError` naming the file when it is missing, a directory, unreadable, empty or not an image
    ///   ffmpeg can decode, or when ffmpeg is not installed.
    public static func load(path: String) throws -> RGBImage {
        let absolutePath = URL(fileURLWithPath: path).path
        try checkReadable(absolutePath, named: path)
        let ffmpeg = try FFmpeg.executable()

        // ffmpeg's image2 demuxer reads a '%' in a file name as a frame-number pattern, so such a file is
        // handed over as a link with a plain name.
        var input = absolutePath
        var linkDirectory: URL?
        defer { if let linkDirectory { try? FileManager.default.removeItem(at: linkDirectory) } }
        if absolutePath.contains("%") {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-image-\(UUID().uuidString)")
            let fileExtension = URL(fileURLWithPath: absolutePath).pathExtension.replacingOccurrences(of: "%", with: "")
            let link = directory.appendingPathComponent(fileExtension.isEmpty ? "image" : "image.\(fileExtension)")
            do {
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
                try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: absolutePath)
            } catch {
                throw MediaError("\(path): could not prepare it for ffmpeg: \(error.localizedDescription)")
            }
            linkDirectory = directory
            input = link.path
        }

        let arguments = [
            "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
            "-i", "file:" + input,
            "-map", "0:v:0", "-frames:v", "1",
            // RGBA keeps the colour of transparent pixels intact (no blending); the alpha byte is dropped below.
            // full_chroma_int + accurate_rnd bring a 4:2:0 JPEG's chroma upsampling closer to libjpeg's.
            "-vf", "scale=flags=bicubic+full_chroma_int+accurate_rnd,format=rgba",
            // PAM carries the size in its header, so one ffmpeg run gives both size and pixels.
            "-f", "image2pipe", "-c:v", "pam", "pipe:1",
        ]
        let result = try FFmpeg.run(ffmpeg, arguments: arguments, timeout: timeout)
        if result.timedOut {
            throw MediaError("\(path): ffmpeg did not finish decoding it within \(Int(timeout)) s and was stopped")
        }
        guard result.succeeded else {
            let reason = FFmpeg.reason(result.standardError, naming: input, keep: .first)
            throw MediaError("\(path): not an image ffmpeg can decode" + (reason.isEmpty ? "" : " (\(reason))"))
        }
        guard let image = rgbImage(fromPAM: result.standardOutput) else {
            throw MediaError("\(path): not an image ffmpeg can decode (it produced no picture)")
        }
        return image
    }

    /// Throws a `MediaError` unless `path` is a regular file with at least one readable byte; ffmpeg's own
    /// messages for these cases are vaguer ("No such file or directory" for a directory, for one).
    static func checkReadable(_ path: String, named name: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw MediaError("\(name): no such file")
        }
        if isDirectory.boolValue {
            throw MediaError("\(name) is a directory, not an image file")
        }
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else {
            throw MediaError("\(name) cannot be read: \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        var firstByte: UInt8 = 0
        let count = read(descriptor, &firstByte, 1)
        if count < 0 {
            throw MediaError("\(name) cannot be read: \(String(cString: strerror(errno)))")
        }
        if count == 0 {
            throw MediaError("\(name) is empty (0 bytes), not an image")
        }
    }

    /// The RGB pixels of a binary PAM image (`P7`, MAXVAL 255, depth 3 or 4; a 4th channel is alpha and is
    /// dropped), or nil when `data` is not one.
    static func rgbImage(fromPAM data: Data) -> RGBImage? {
        let bytes = [UInt8](data)
        let end = Array("ENDHDR\n".utf8)
        guard bytes.count >= end.count, let headerEnd = firstIndex(of: end, in: bytes) else { return nil }
        let header = String(decoding: bytes[..<headerEnd], as: UTF8.self)
        var fields: [String: String] = [:]
        for line in header.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        guard header.hasPrefix("P7\n"),
              let width = fields["WIDTH"].flatMap({ Int($0) }), width > 0,
              let height = fields["HEIGHT"].flatMap({ Int($0) }), height > 0,
              let depth = fields["DEPTH"].flatMap({ Int($0) }), depth == 3 || depth == 4,
              fields["MAXVAL"] == "255" else { return nil }
        let bodyStart = headerEnd + end.count
        let pixelCount = width * height
        guard bytes.count - bodyStart >= pixelCount * depth else { return nil }
        var pixels = [UInt8](repeating: 0, count: pixelCount * 3)
        bytes.withUnsafeBufferPointer { source in
            pixels.withUnsafeMutableBufferPointer { target in
                for pixel in 0..<pixelCount {
                    let from = bodyStart + pixel * depth
                    target[pixel * 3] = source[from]
                    target[pixel * 3 + 1] = source[from + 1]
                    target[pixel * 3 + 2] = source[from + 2]
                }
            }
        }
        return RGBImage(validatedWidth: width, height: height, pixels: pixels)
    }

    /// The index where `needle` first starts in `bytes`.
    private static func firstIndex(of needle: [UInt8], in bytes: [UInt8]) -> Int? {
        guard bytes.count >= needle.count else { return nil }
        for start in 0...(bytes.count - needle.count) where bytes[start] == needle[0] {
            if Array(bytes[start..<(start + needle.count)]) == needle { return start }
        }
        return nil
    }
}
