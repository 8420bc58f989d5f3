import Foundation
import KinemaPipeline
import XCTest

/// The bundled default model (`Models/kinema-tiny`), run as a user runs it: `kinema generate` with no
/// `--model`, from the package folder, on a picture it never saw in training. Uses the release build
/// (a debug build is far too slow for a real model).
final class BundledModelTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func generate(prompt: String, seed: Int, output: URL) throws -> String {
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
        return text
    }

    /// Reads the float32 [F, H, W, 3] array `kinema generate` writes for `.npy`.
    func frames(_ url: URL) throws -> (values: [Float], frames: Int, height: Int, width: Int) {
        let data = try Data(contentsOf: url)
        let headerLength = Int(data[8]) | Int(data[9]) << 8
        let header = String(decoding: data[10..<(10 + headerLength)], as: UTF8.self)
        let shape = header.components(separatedBy: "(")[1].components(separatedBy: ")")[0]
            .split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        XCTAssertEqual(shape.count, 4, header)
        let values = data[(10 + headerLength)...].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        XCTAssertEqual(values.count, shape.reduce(1, *))
        return (values, shape[0], shape[1], shape[2])
    }

    func testTheBundledModelIsTheDefaultAndItsFirstFrameIsThePicture() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-bundled-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let output = directory.appendingPathComponent("left.npy")
        _ = try generate(prompt: "the camera pans to the left", seed: Int.random(in: 0..<1_000_000), output: output)
        let video = try frames(output)
        XCTAssertEqual([video.frames, video.height, video.width], [16, 128, 128])   // the model's kinema.json settings

        // Frame 0 reproduces the picture the pipeline was given (a random-weight model gives ~10 dB).
        let picture = try ImageLoader.load(path: Self.root.appendingPathComponent("examples/village.png").path)
        let expected = ImagePreprocessing.vaePixels(picture, width: 128, height: 128)   // (3, H, W) in [-1, 1]
        var squared: Double = 0
        for y in 0..<128 { for x in 0..<128 { for c in 0..<3 {
            let want = (Double(expected[(c * 128 + y) * 128 + x]) + 1) / 2
            let got = Double(video.values[(y * 128 + x) * 3 + c])
            squared += (want - got) * (want - got)
        } } }
        let psnr = 10 * log10(1 / (squared / Double(128 * 128 * 3)))
        XCTAssertGreaterThan(psnr, 20, "first-frame PSNR \(psnr) dB")

        // The video moves: the last frame differs clearly from the first.
        let frameSize = 128 * 128 * 3
        let last = video.values[(15 * frameSize)...]
        let change = zip(video.values[0..<frameSize], last).map { abs(Double($0 - $1)) }.reduce(0, +) / Double(frameSize)
        XCTAssertGreaterThan(change, 0.03, "mean |last − first| \(change)")
    }
}
