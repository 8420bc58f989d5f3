// Generated frames leave Kinema through this file: as a browser-playable H.264 MP4, a GIF or animated
// WebP preview, PNG frames (all encoded by ffmpeg, run as a subprocess), or the raw floats as a NumPy
// `.npy` file, written here.

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The kinds of file a video can be written as, chosen by the destination path.
public enum VideoFormat: Equatable, Sendable {
    /// H.264 in MP4, yuv420p with the index at the front (`+faststart`): plays in browsers as it downloads.
    case mp4
    /// Animated GIF with a palette computed from the whole clip, looping forever.
    case gif
    /// Animated lossy WebP, looping forever.
    case webp
    /// The float frames themselves, `[frames, height, width, 3]` float32 in [0, 1] (diffusers' `output_type="np"`).
    case npy
    /// A directory of `frame_0000.png`, `frame_0001.png`, ...
    case pngFrames
    /// One PNG of the first frame (a poster image).
    case poster

    /// The format a path asks for by its extension (`.mp4`, `.gif`, `.webp`, `.npy`, any case); a path with
    /// no extension or ending in "/" names a directory of PNG frames. Nil for any other extension.
    public init?(path: String) {
        guard !path.isEmpty else { return nil }
        if path.hasSuffix("/") {
            self = .pngFrames
            return
        }
        switch URL(fileURLWithPath: path).pathExtension.lowercased() {
        case "": self = .pngFrames
        case "mp4": self = .mp4
        case "gif": self = .gif
        case "webp": self = .webp
        case "npy": self = .npy
        case "png": self = .poster
        default: return nil
        }
    }
}

/// Writes generated frames to disk.
public enum VideoWriter {
    /// How long ffmpeg may take to encode a video before it is killed; a 16-frame 1280x704 clip takes seconds.
    static let timeout: TimeInterval = 600

    /// Writes `count` frames of `width` x `height` to `path`, in the format its extension names (`VideoFormat`).
    ///
    /// `frames` holds `[count][height][width][3]` floats in [0, 1] as one flat array, the layout of diffusers'
    /// `output_type="np"`. `.npy` stores them unchanged; every other format stores `round(x * 255)` (round half
    /// to even, after clamping to [0, 1]; NaN becomes 0), the 8-bit values of diffusers' `"pil"` output.
    ///
    /// MP4 needs even sizes (yuv420p halves the chroma planes), so an odd width or height is padded by one
    /// black column or row on the right or bottom. Its colours are converted and tagged as BT.709, so that
    /// players do not have to guess the matrix.
    ///
    /// The write is atomic: everything goes to a hidden temporary file (for PNG frames, a temporary directory)
    /// beside the destination, renamed into place only when complete. On any failure nothing is left behind
    /// and whatever was at `path` is untouched. An existing file is replaced; an existing directory is replaced
    /// only when it is empty or holds nothing but `frame_NNNN.png` files (an earlier run's frames).
    /// - Throws: `MediaError` for an unknown extension, sizes that do not match `frames.count`, a missing
    ///   destination directory, a destination that cannot be replaced, or when ffmpeg is missing or fails
    ///   (the message ends with ffmpeg's last error lines).
    public static func write(frames: [Float], count: Int, width: Int, height: Int, fps: Int, to path: String) throws {
        guard let format = VideoFormat(path: path) else {
            throw MediaError("\(path): unknown video format; use a path ending in .mp4, .gif, .webp, .npy or .png (the first frame), "
                + "or a directory path (no extension, or ending in /) for PNG frames")
        }
        try checkSizes(frames: frames, count: count, width: width, height: height, fps: fps)
        let destination = URL(fileURLWithPath: path).standardizedFileURL
        try checkDestination(destination, format: format, named: path)

        let staging = destination.deletingLastPathComponent().appendingPathComponent(".kinema-\(UUID().uuidString).partial")
        do {
            if format == .npy {
                do {
                    try npyData(frames: frames, count: count, width: width, height: height).write(to: staging)
                } catch {
                    throw MediaError("could not write \(path): \(error.localizedDescription)")
                }
            } else {
                try encode(eightBit(frames), format: format, width: width, height: height, fps: fps,
                           into: staging, named: path)
            }
            try moveIntoPlace(staging, destination, isDirectory: format == .pngFrames, named: path)
        } catch {
            try? FileManager.default.removeItem(at: staging)
            throw error
        }
    }

    /// The frames as 8-bit values, as diffusers' `numpy_to_pil`: `(images * 255).round().astype("uint8")` in
    /// float32, where numpy rounds half to even. The pipeline has already clamped to [0, 1]; this clamps again
    /// so that no value can wrap around.
    static func eightBit(_ frames: [Float]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: frames.count)
        frames.withUnsafeBufferPointer { source in
            bytes.withUnsafeMutableBufferPointer { target in
                for i in 0..<source.count {
                    let value = source[i]
                    // `value > 0` is false for NaN, which therefore becomes 0.
                    let clamped: Float = value > 0 ? (value < 1 ? value : 1) : 0
                    target[i] = UInt8((clamped * 255).rounded(.toNearestOrEven))
                }
            }
        }
        return bytes
    }

    /// An `.npy` file (NumPy format 1.0) holding `frames` as little-endian float32 of shape
    /// `(count, height, width, 3)`; the header is padded with spaces to a multiple of 64 bytes, as numpy does.
    static func npyData(frames: [Float], count: Int, width: Int, height: Int) -> Data {
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(count), \(height), \(width), 3), }"
        // magic (6) + version (2) + header length (2) + header + "\n", rounded up to 64 bytes.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        let headerLength = UInt16(header.utf8.count)
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(headerLength & 0xff), UInt8(headerLength >> 8)])
        data.append(contentsOf: Array(header.utf8))
        let littleEndian = frames.map { $0.bitPattern.littleEndian }
        littleEndian.withUnsafeBytes { data.append(contentsOf: $0) }
        return data
    }

    /// The ffmpeg arguments that read raw rgb24 frames from standard input and encode them as `format`
    /// into `output` (a file, or for PNG frames a directory that exists).
    static func ffmpegArguments(format: VideoFormat, width: Int, height: Int, fps: Int, output: URL) -> [String] {
        let input = [
            "-hide_banner", "-nostats", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "\(width)x\(height)", "-r", "\(fps)", "-i", "pipe:0",
        ]
        // "file:" keeps ffmpeg from reading a ':' in the path as a protocol name.
        let file = "file:" + output.path
        switch format {
        case .mp4:
            let pad = width % 2 == 1 || height % 2 == 1 ? "pad=ceil(iw/2)*2:ceil(ih/2)*2," : ""
            return input + [
                "-vf", pad + "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
                "-c:v", "libx264", "-preset", "medium", "-crf", "17", "-pix_fmt", "yuv420p",
                "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv",
                "-movflags", "+faststart", "-f", "mp4", "-y", file,
            ]
        case .gif:
            return input + [
                "-vf", "split[a][b];[a]palettegen[p];[b][p]paletteuse",
                "-loop", "0", "-f", "gif", "-y", file,
            ]
        case .webp:
            // "webp" picks the first WebP encoder this ffmpeg has: libwebp_anim, or else libwebp, whose
            // frames the webp muxer assembles into the same kind of animation.
            return input + [
                "-c:v", "webp", "-lossless", "0", "-q:v", "80",
                "-loop", "0", "-f", "webp", "-y", file,
            ]
        case .pngFrames:
            // The image2 muxer expands '%' sequences in the whole path; "%%" is a literal '%'.
            let pattern = output.path.replacingOccurrences(of: "%", with: "%%") + "/frame_%04d.png"
            return input + ["-c:v", "png", "-f", "image2", "-start_number", "0", "-y", "file:" + pattern]
        case .poster:
            return input + ["-frames:v", "1", "-c:v", "png", "-f", "image2", "-update", "1", "-y", file]
        case .npy:
            preconditionFailure(".npy is written without ffmpeg")
        }
    }

    /// Runs ffmpeg to encode `pixels` (rgb24 frames) as `format` into `staging`.
    private static func encode(_ pixels: [UInt8], format: VideoFormat, width: Int, height: Int, fps: Int,
                               into staging: URL, named path: String) throws {
        let ffmpeg = try FFmpeg.executable()
        if format == .pngFrames {
            do {
                try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: false)
            } catch {
                throw MediaError("could not write \(path): \(error.localizedDescription)")
            }
        }
        let arguments = ffmpegArguments(format: format, width: width, height: height, fps: fps, output: staging)
        let result = try FFmpeg.run(ffmpeg, arguments: arguments, input: pixels, timeout: timeout)
        if result.timedOut {
            throw MediaError("could not write \(path): ffmpeg did not finish within \(Int(timeout)) s and was stopped")
        }
        guard result.succeeded else {
            let ending = result.exitedNormally ? "exited with status \(result.status)" : "was killed by signal \(result.status)"
            let reason = FFmpeg.reason(result.standardError, keep: .last, limit: 3)
            throw MediaError("could not write \(path): ffmpeg (\(ffmpeg)) \(ending)"
                + (reason.isEmpty ? " and printed no reason" : ": \(reason)"))
        }
    }

    private static func checkSizes(frames: [Float], count: Int, width: Int, height: Int, fps: Int) throws {
        guard count > 0, width > 0, height > 0 else {
            throw MediaError("cannot write \(count) frames of \(width)x\(height): frame count, width and height must be at least 1")
        }
        guard fps > 0 else {
            throw MediaError("cannot write a video at \(fps) fps: fps must be at least 1")
        }
        let (pixels, overflow1) = width.multipliedReportingOverflow(by: height)
        let (values, overflow2) = pixels.multipliedReportingOverflow(by: count * 3)
        guard !overflow1, !overflow2, values == frames.count else {
            throw MediaError("\(count) frames of \(width)x\(height) RGB need \(overflow1 || overflow2 ? "more" : "\(values)") floats, "
                + "but \(frames.count) were given")
        }
    }

    /// Fails early, before any encoding, when the destination's directory is missing or what is at the
    /// destination cannot be replaced by `format`'s output.
    private static func checkDestination(_ destination: URL, format: VideoFormat, named path: String) throws {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        let parent = destination.deletingLastPathComponent()
        guard manager.fileExists(atPath: parent.path, isDirectory: &isDirectory) else {
            throw MediaError("cannot write \(path): directory \(parent.path) does not exist")
        }
        guard isDirectory.boolValue else {
            throw MediaError("cannot write \(path): \(parent.path) is a file, not a directory")
        }
        guard manager.fileExists(atPath: destination.path, isDirectory: &isDirectory) else { return }
        switch (format, isDirectory.boolValue) {
        case (.pngFrames, false):
            throw MediaError("cannot write PNG frames to \(path): it exists and is not a directory")
        case (.pngFrames, true):
            let contents = (try? manager.contentsOfDirectory(atPath: destination.path)) ?? []
            if let stranger = contents.first(where: { !isFrameName($0) }) {
                throw MediaError("cannot write PNG frames to \(path): the directory already holds \(stranger); "
                    + "only an empty directory or one of earlier frame_NNNN.png files is replaced")
            }
        case (_, true):
            throw MediaError("cannot write \(path): it is a directory")
        case (_, false):
            return
        }
    }

    /// True for the names this writer gives PNG frames: `frame_` + digits + `.png`.
    static func isFrameName(_ name: String) -> Bool {
        guard name.hasPrefix("frame_"), name.hasSuffix(".png") else { return false }
        let digits = name.dropFirst("frame_".count).dropLast(".png".count)
        return !digits.isEmpty && digits.allSatisfy { $0.isASCII && $0.isNumber }
    }

    /// Renames the finished `staging` to `destination`. A file replaces any file there in one rename; a
    /// directory cannot be renamed over a non-empty one, so an earlier frames directory is first moved aside,
    /// and moved back if the rename fails.
    private static func moveIntoPlace(_ staging: URL, _ destination: URL, isDirectory: Bool, named path: String) throws {
        func failure(_ action: String) -> MediaError {
            MediaError("could not \(action) \(path): \(String(cString: strerror(errno)))")
        }
        guard isDirectory, FileManager.default.fileExists(atPath: destination.path) else {
            guard rename(staging.path, destination.path) == 0 else { throw failure("move the finished output to") }
            return
        }
        let previous = destination.deletingLastPathComponent().appendingPathComponent(".kinema-\(UUID().uuidString).replaced")
        guard rename(destination.path, previous.path) == 0 else { throw failure("replace the earlier frames in") }
        guard rename(staging.path, destination.path) == 0 else {
            let error = failure("move the finished frames to")
            _ = rename(previous.path, destination.path)
            throw error
        }
        try? FileManager.default.removeItem(at: previous)
    }
}
