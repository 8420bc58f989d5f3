// ffmpeg, run as a subprocess, reads Kinema's input images and writes its videos: this is how it is
// found and run, and how its failures become `MediaError`s.

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

/// ffmpeg as a subprocess: finding it, and running it with a time limit while feeding its standard input
/// and collecting its standard output and error.
public enum FFmpeg {
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
    public static func executable() throws -> String {
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
