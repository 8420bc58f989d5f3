import Foundation
import KinemaCore
import XCTest

/// `kinema generate` end to end: seed parity through the CLI, and bad input that must fail
/// cleanly — a clear message, a non-zero exit and no output file.
final class GenerateCommandTests: XCTestCase {
    static let pipelines = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("KinemaPipelineTests/Fixtures/pipelines")
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-generate-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// The fixture pipeline `name`: its folder, its diffusers reference and its input image written as a PNG.
    func pipeline(_ name: String) throws -> (model: URL, reference: SafeTensorsFile, image: URL) {
        let model = Self.pipelines.appendingPathComponent(name)
        let reference = try SafeTensorsFile(path: model.appendingPathComponent("reference.safetensors").path)
        let image = directory.appendingPathComponent("input.png")
        try writePNG(reference, to: image)
        return (model, reference, image)
    }

    /// Writes the fixture's input image as a PNG with ffmpeg.
    func writePNG(_ reference: SafeTensorsFile, to path: URL) throws {
        let image = try reference.tensor("image")
        let bytes = Data(image.floats().map { UInt8($0) })
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "\(image.shape[1])x\(image.shape[0])",
                             "-i", "-", path.path]
        let input = Pipe()
        process.standardInput = input
        try process.run()
        input.fileHandleForWriting.write(bytes)
        try input.fileHandleForWriting.close()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "ffmpeg could not write the test PNG")
    }

    /// Reads a float32 .npy file: its shape and values.
    func readNPY(_ path: URL) throws -> ([Int], [Float]) {
        let data = try Data(contentsOf: path)
        let headerLength = Int(data[8]) | Int(data[9]) << 8
        let header = String(decoding: data[10..<(10 + headerLength)], as: UTF8.self)
        let shapeText = header.components(separatedBy: "'shape': (")[1].components(separatedBy: ")")[0]
        let shape = shapeText.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let values = data[(10 + headerLength)...].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        return (shape, values)
    }

    func testGenerateMatchesDiffusersSeedForSeed() throws {
        let (model, reference, image) = try pipeline("released_layout")
        let output = directory.appendingPathComponent("video.npy")
        let report = directory.appendingPathComponent("report.json")
        let run = try CLITests.run(["generate", "--model", model.path, "--image", image.path, "--prompt", "The boat sails away, camera slowly zooms in!",
                                    "--negative-prompt", "blurry, static", "--width", "48", "--height", "32", "--frames", "3", "--fps", "8",
                                    "--steps", "3", "--guidance", "6", "--decode-chunk", "2", "--seed", "1234", "--quiet",
                                    "--output", output.path, "--report", report.path])
        XCTAssertEqual(run.status, 0, run.stderr)
        let (shape, values) = try readNPY(output)
        let expected = try reference.tensor("frames")
        XCTAssertEqual(shape, expected.shape)
        let error = zip(values, expected.floats()).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThan(error, 2e-3)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any])
        XCTAssertEqual(object["seed"] as? Int, 1234)
        XCTAssertGreaterThan(object["measured_peak_bytes"] as? Int ?? 0, 0)
        XCTAssertNotNil((object["phase_seconds"] as? [String: Double])?["denoise"])
        // The dry run's prediction is the allocator's measurement, phase by phase.
        XCTAssertEqual(object["predicted_peak_bytes"] as? Int, object["measured_peak_bytes"] as? Int)
        XCTAssertEqual(object["predicted_phase_peak_bytes"] as? [String: Int], object["measured_phase_peak_bytes"] as? [String: Int])
        // `kinema plan` predicts the same bytes before anything runs.
        let plan = try CLITests.run(["plan", "--model", model.path, "--width", "48", "--height", "32", "--frames", "3", "--guidance", "6",
                                     "--decode-chunk", "2", "--json"])
        XCTAssertEqual(plan.status, 0, plan.stderr)
        let planned = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(plan.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(planned["predicted_peak_bytes"] as? Int, object["measured_peak_bytes"] as? Int)
    }

    func testAMemoryBudgetThatCannotFitIsRefusedBeforeAnyWorkOrDegradedOutLoud() throws {
        let (model, _, image) = try pipeline("tiny_no_guidance")
        let output = directory.appendingPathComponent("out.npy")
        let base = ["generate", "--model", model.path, "--image", image.path, "--prompt", "zoom in", "--width", "32", "--height", "32",
                    "--frames", "2", "--steps", "2", "--guidance", "1", "--quiet", "--output", output.path]
        let refused = try CLITests.run(base + ["--memory-budget", "100KB"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("no lossless plan fits") || refused.stderr.contains("no plan fits")
                      || refused.stderr.contains("below the weights of the UNet's largest block"), refused.stderr)
        let belowABlock = try CLITests.run(base + ["--memory-budget", "1KB", "--allow-degrade"])
        XCTAssertNotEqual(belowABlock.status, 0)
        XCTAssertTrue(belowABlock.stderr.contains("below the weights of the UNet's largest block"), belowABlock.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output.path))
        let unparsable = try CLITests.run(base + ["--memory-budget", "-1GB"])
        XCTAssertNotEqual(unparsable.status, 0)
        XCTAssertTrue(unparsable.stderr.contains("must be positive"), unparsable.stderr)
        let plenty = try CLITests.run(base + ["--memory-budget", "8GiB"])
        XCTAssertEqual(plenty.status, 0, plenty.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: output.path))
    }

    func testADegradedRunSaysWhatItChangedAndReportsItsPrediction() throws {
        let (model, _, image) = try pipeline("released_layout")
        let sizes = ["--width", "96", "--height", "96", "--frames", "3", "--guidance", "6", "--decode-chunk", "3"]
        let plan = try CLITests.run(["plan", "--model", model.path, "--json"] + sizes)
        XCTAssertEqual(plan.status, 0, plan.stderr)
        let planned = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(plan.stdout.utf8)) as? [String: Any])
        XCTAssertGreaterThan(planned["predicted_seconds"] as? Double ?? 0, 0)
        XCTAssertEqual(planned["cost_model"] as? String, "default")
        let leanest = try XCTUnwrap((planned["alternatives"] as? [[String: Any]])?.compactMap { $0["predicted_peak_bytes"] as? Int }.min())
        let output = directory.appendingPathComponent("out.npy"), report = directory.appendingPathComponent("report.json")
        let run = try CLITests.run(["generate", "--model", model.path, "--image", image.path, "--prompt", "zoom in", "--steps", "2", "--quiet",
                                    "--memory-budget", "\(leanest - 1)", "--allow-degrade", "--output", output.path, "--report", report.path] + sizes)
        XCTAssertEqual(run.status, 0, run.stderr)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any])
        let notes = try XCTUnwrap(object["degradations"] as? [String])
        XCTAssertFalse(notes.isEmpty)
        for note in notes { XCTAssertTrue(run.stderr.contains("degraded to fit the memory budget: \(note)"), run.stderr) }
        XCTAssertEqual((object["plan"] as? [String: Any])?["lossy"] as? Bool, true, "\(object)")
        XCTAssertEqual(object["predicted_peak_bytes"] as? Int, object["measured_peak_bytes"] as? Int)
        XCTAssertLessThan(object["measured_peak_bytes"] as? Int ?? .max, leanest)
        XCTAssertGreaterThan(object["predicted_seconds"] as? Double ?? 0, 0)
        XCTAssertNotNil((object["predicted_phase_seconds"] as? [String: Double])?["denoise"])
    }

    func testCalibrationIsStoredInTheDataDirectoryAndUsed() throws {
        let model = Self.pipelines.appendingPathComponent("tiny_no_guidance")
        let data = directory.appendingPathComponent("data")
        let calibrate = try CLITests.run(["bench", "calibrate", "--data-dir", data.path, "--runs", "1", "--threads", "1", "--ops-only", "--json"])
        XCTAssertEqual(calibrate.status, 0, calibrate.stderr)
        let stored = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: data.appendingPathComponent("calibration.json"))) as? [[String: Any]])
        XCTAssertEqual(stored.count, 1)
        XCTAssertGreaterThan(stored[0]["matmul_flops_per_second"] as? Double ?? 0, 0)
        let sizes = ["--width", "32", "--height", "32", "--frames", "2", "--json"]
        let calibrated = try CLITests.run(["plan", "--model", model.path, "--data-dir", data.path, "--threads", "1"] + sizes)
        XCTAssertEqual(calibrated.status, 0, calibrated.stderr)
        let answer = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(calibrated.stdout.utf8)) as? [String: Any])
        XCTAssertTrue((answer["cost_model"] as? String ?? "").hasPrefix("calibrated"), "\(answer)")
        XCTAssertGreaterThan(answer["predicted_seconds"] as? Double ?? 0, 0)
        let otherThreads = try CLITests.run(["plan", "--model", model.path, "--data-dir", data.path, "--threads", "2"] + sizes)
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(otherThreads.stdout.utf8)) as? [String: Any])?["cost_model"] as? String, "default")
    }

    func testEveryOutputFormatIsWritten() throws {
        let (model, _, image) = try pipeline("tiny_no_guidance")
        for name in ["v.mp4", "v.gif", "v.webp", "frames/"] {
            let output = directory.appendingPathComponent(name).path + (name.hasSuffix("/") ? "/" : "")
            let run = try CLITests.run(["generate", "--model", model.path, "--image", image.path, "--prompt", "zoom in", "--width", "32",
                                        "--height", "32", "--frames", "2", "--steps", "2", "--guidance", "1", "--output", output])
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssertTrue(run.stderr.contains("seed: "), "a seed chosen at random is printed: \(run.stderr)")
            XCTAssertTrue(FileManager.default.fileExists(atPath: output), name)
        }
    }

    func testBadInputFailsClearlyAndLeavesNoOutput() throws {
        let (model, _, image) = try pipeline("tiny_no_guidance")
        let text = directory.appendingPathComponent("notes.png")
        try Data("this is not a picture".utf8).write(to: text)
        let incomplete = directory.appendingPathComponent("incomplete-model")
        try FileManager.default.copyItem(at: model, to: incomplete)
        try FileManager.default.removeItem(at: incomplete.appendingPathComponent("unet"))
        let output = directory.appendingPathComponent("out.mp4")
        let base = ["generate", "--model", model.path, "--image", image.path, "--prompt", "zoom in", "--width", "32", "--height", "32",
                    "--frames", "2", "--steps", "2", "--output", output.path]
        func replacing(_ option: String, with value: String) -> [String] {
            var arguments = base
            arguments[arguments.firstIndex(of: option)! + 1] = value
            return arguments
        }
        let cases: [([String], String)] = [
            (replacing("--image", with: directory.appendingPathComponent("missing.png").path), "missing.png"),
            (replacing("--image", with: text.path), "notes.png"),
            (replacing("--model", with: directory.appendingPathComponent("no-model").path), "does not exist"),
            (replacing("--model", with: incomplete.path), "unet component is missing"),
            (replacing("--width", with: "30"), "multiples of 8"),
            (replacing("--height", with: "-8"), "multiples of 8"),
            (replacing("--frames", with: "0"), "frames must be at least 1"),
            (replacing("--steps", with: "0"), "steps must be at least 1"),
            (base + ["--guidance", "-2"], "guidance must be 0 or more"),
            (replacing("--output", with: directory.appendingPathComponent("out.avi").path), "cannot tell the format"),
        ]
        for (arguments, message) in cases {
            let run = try CLITests.run(arguments)
            XCTAssertNotEqual(run.status, 0, arguments.joined(separator: " "))
            XCTAssertTrue(run.stderr.contains(message), "expected “\(message)” in: \(run.stderr)")
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasPrefix("out") }
            XCTAssertEqual(leftovers, [], "no output file after: \(message)")
        }
    }
}
