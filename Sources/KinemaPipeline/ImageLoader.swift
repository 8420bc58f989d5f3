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

/// A failure to read an image or write a video, with a message that names the file and says what is wrong.
public struct MediaError: Error, CustomStringConvertible, Equatable {
    /// What went wrong: the file, the problem and, where ffmpeg failed, ffmpeg's own reason.
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}

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

/// ffmpeg as a subprocess: finding it, and running it with a time limit while feeding its standard input
/// and collecting its standard output and error.
enum FFmpeg {
    /// What one ffmpeg run left behind.
    struct Result {
        /// The exit status, or the signal number when `exitedNormally` is false.
        var status: Int32
        /// False when ffmpeg was ended by a signal (including the time limit's kill).
        var exitedNormally: Bool
        /// True when ffmpeg ran past its time limit and was killed.
        var timedOut: Bool
        /// Everything ffmpeg wrote to its standard output.
        var standardOutput: Data
        /// Everything ffmpeg wrote to its standard error.
        var standardError: Data

        /// True when ffmpeg exited with status 0 within its time limit.
        var succeeded: Bool { exitedNormally && status == 0 && !timedOut }
    }

    /// Which of ffmpeg's error lines a message keeps: the first (the root cause, for decoding) or the last
    /// (what finally failed, for encoding).
    enum Lines {
        case first
        case last
    }

    /// The ffmpeg to run: `KINEMA_FFMPEG` when set, else the first `ffmpeg` on `PATH`.
    static func executable() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        if let override = environment["KINEMA_FFMPEG"], !override.isEmpty {
            guard isExecutableFile(override) else {
                throw MediaError("KINEMA_FFMPEG is \(override), which is not an executable file; point it at ffmpeg or unset it")
            }
            return override
        }
        for directory in (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(directory)/ffmpeg"
            if isExecutableFile(candidate) { return candidate }
        }
        throw MediaError(
            "ffmpeg was not found on PATH; Kinema runs it to read images and write videos. "
                + "Install it (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg) or set KINEMA_FFMPEG to its path")
    }

    private static func isExecutableFile(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
            && FileManager.default.isExecutableFile(atPath: path)
    }

    /// Runs `executable` with `arguments`, writing `input` (if any) to its standard input, and kills it
    /// when it runs longer than `timeout` seconds.
    /// - Throws: `MediaError` only when the process cannot be started; a failing run is a `Result`.
    static func run(_ executable: String, arguments: [String], input: [UInt8]? = nil, timeout: TimeInterval) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let outputPipe = Pipe()
        let errorPipe = Pipe()
        let inputPipe = input.map { _ in Pipe() }
        process.standardOutput = outputPipe
        process.standardError = errorPipe
        process.standardInput = inputPipe ?? FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw MediaError("could not start ffmpeg at \(executable): \(error.localizedDescription)")
        }

        // Both output pipes are drained concurrently so that ffmpeg never blocks on a full pipe while this
        // thread is busy writing its input.
        let collected = Collected()
        let readers = DispatchGroup()
        DispatchQueue.global().async(group: readers) {
            collected.standardOutput = outputPipe.fileHandleForReading.readDataToEndOfFile()
        }
        DispatchQueue.global().async(group: readers) {
            collected.standardError = errorPipe.fileHandleForReading.readDataToEndOfFile()
        }
        // The kill also ends a write blocked on a pipe that ffmpeg stopped reading.
        let processIdentifier = process.processIdentifier
        let watchdog = DispatchWorkItem {
            collected.lock.lock()
            defer { collected.lock.unlock() }
            if process.isRunning {
                collected.timedOut = true
                kill(processIdentifier, SIGKILL)
            }
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)

        if let input, let inputPipe {
            writeIgnoringBrokenPipe(input, to: inputPipe.fileHandleForWriting.fileDescriptor)
            try? inputPipe.fileHandleForWriting.close()
        }
        readers.wait()
        process.waitUntilExit()
        watchdog.cancel()
        collected.lock.lock()
        let timedOut = collected.timedOut
        collected.lock.unlock()
        return Result(status: process.terminationStatus,
                      exitedNormally: process.terminationReason == .exit,
                      timedOut: timedOut,
                      standardOutput: collected.standardOutput,
                      standardError: collected.standardError)
    }

    /// What the reader threads and the watchdog hand back. `DispatchGroup.wait` orders the readers' writes
    /// before `run` reads them; the watchdog can fire while `run` finishes, so `timedOut` is under `lock`.
    private final class Collected: @unchecked Sendable {
        var standardOutput = Data()
        var standardError = Data()
        let lock = NSLock()
        var timedOut = false
    }

    /// Writes all of `bytes` to `descriptor`, stopping early when the reader has gone away (ffmpeg exited
    /// or was killed). The SIGPIPE that such a write raises would kill this whole process, so it is
    /// blocked on this thread for the duration and any pending one is consumed before unblocking.
    private static func writeIgnoringBrokenPipe(_ bytes: [UInt8], to descriptor: Int32) {
        #if os(Linux)
        var brokenPipe = sigset_t()
        sigemptyset(&brokenPipe)
        sigaddset(&brokenPipe, SIGPIPE)
        var previousMask = sigset_t()
        pthread_sigmask(SIG_BLOCK, &brokenPipe, &previousMask)
        defer {
            var pending = sigset_t()
            sigpending(&pending)
            if sigismember(&pending, SIGPIPE) == 1 {
                var noWait = timespec(tv_sec: 0, tv_nsec: 0)
                _ = sigtimedwait(&brokenPipe, nil, &noWait)
            }
            pthread_sigmask(SIG_SETMASK, &previousMask, nil)
        }
        #else
        _ = fcntl(descriptor, F_SETNOSIGPIPE, 1)
        #endif
        bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            var offset = 0
            while offset < raw.count {
                let written = write(descriptor, base + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }

    /// ffmpeg's error lines as one short line for a message: each line without its `[codec @ 0x...]`
    /// prefix and without the input's name (the message names the file itself), repeats removed, at most
    /// `limit` lines taken from the start or the end, and at most 300 characters.
    static func reason(_ standardError: Data, naming file: String? = nil, keep: Lines, limit: Int = 2) -> String {
        var lines: [String] = []
        for rawLine in String(decoding: standardError, as: UTF8.self).split(whereSeparator: \.isNewline) {
            var line = Substring(rawLine)
            if line.hasPrefix("["), let close = line.range(of: "] "), line[..<close.lowerBound].contains(" @ ") {
                line = line[close.upperBound...]
            }
            var text = String(line).trimmingCharacters(in: .whitespaces)
            if let file {
                for name in ["file:" + file + ": ", "file:" + file] {
                    text = text.replacingOccurrences(of: name, with: "")
                }
            }
            if !text.isEmpty && !lines.contains(text) { lines.append(text) }
        }
        let kept = keep == .first ? lines.prefix(limit) : lines.suffix(limit)
        let joined = kept.joined(separator: "; ")
        return joined.count > 300 ? String(joined.prefix(299)) + "…" : joined
    }
}
