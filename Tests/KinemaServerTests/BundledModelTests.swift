import Foundation
import KinemaPipeline
import XCTest

/// The bundled default model (`Models/kinema-tiny`), run as a user runs it: `kinema generate` with no
/// `--model`, from the package folder, on a picture it never saw in training. Uses the release build
/// (a debug build is far too slow for a real model).
final class BundledModelTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func generate(prompt: String, seed: Int, output: URL) throws {
        let process = Process()
        process.executableURL = try ServerProcess.executable
        process.currentDirectoryURL = Self.root
        var environment = ProcessInfo.processInfo.environment
        environment["KINEMA_MODEL"] = nil
        process.environment = environment
        process.arguments = ["generate", "--image", "examples/village.png", "--prompt", prompt, "--steps", "10", "--seed", "\(seed)",
                             "--quiet", "--output", output.path]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = err
        try process.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, text)
    }

    func testTheBundledModelIsTheDefaultAndItsFirstFrameIsThePicture() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-bundled-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // A folder of frame_NNNN.png, read back with the pipeline's own image loader.
        let output = directory.appendingPathComponent("left")
        try generate(prompt: "the camera pans to the left", seed: Int.random(in: 0..<1_000_000), output: output)
        let names = try FileManager.default.contentsOfDirectory(atPath: output.path).filter { $0.hasSuffix(".png") }
        XCTAssertEqual(names.count, 16)   // the model's kinema.json settings: 16 frames of 128×128
        let first = try ImageLoader.load(path: output.appendingPathComponent("frame_0000.png").path)
        let last = try ImageLoader.load(path: output.appendingPathComponent("frame_0015.png").path)
        XCTAssertEqual([first.width, first.height, last.width, last.height], [128, 128, 128, 128])

        // Frame 0 reproduces the picture the pipeline was given (a random-weight model gives ~10 dB).
        let picture = try ImageLoader.load(path: Self.root.appendingPathComponent("examples/village.png").path)
        let expected = ImagePreprocessing.vaePixels(picture, width: 128, height: 128)   // (3, H, W) in [-1, 1]
        var squared: Double = 0
        for y in 0..<128 { for x in 0..<128 { for c in 0..<3 {
            let want = (Double(expected[(c * 128 + y) * 128 + x]) + 1) / 2
            let got = Double(first.pixels[(y * 128 + x) * 3 + c]) / 255
            squared += (want - got) * (want - got)
        } } }
        let psnr = 10 * log10(1 / (squared / Double(128 * 128 * 3)))
        XCTAssertGreaterThan(psnr, 20, "first-frame PSNR \(psnr) dB")

        // The video moves: the last frame differs clearly from the first.
        let change = zip(first.pixels, last.pixels).map { abs(Double($0) - Double($1)) / 255 }.reduce(0, +) / Double(first.pixels.count)
        XCTAssertGreaterThan(change, 0.03, "mean |last − first| \(change)")
    }
}
