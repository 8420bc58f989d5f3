import Foundation
import KinemaCore
import XCTest

/// The `kinema` executable run as a user runs it: exit status, stdout and stderr.
final class CLITests: XCTestCase {
    struct Run { let status: Int32; let stdout: String; let stderr: String }

    static var executable: URL {
        // The test bundle sits in the build products folder, beside the executable (on Linux
        // the bundle URL is that folder itself).
        let bundle = Bundle(for: CLITests.self).bundleURL
        let beside = bundle.appendingPathComponent("kinema")
        return FileManager.default.fileExists(atPath: beside.path) ? beside : bundle.deletingLastPathComponent().appendingPathComponent("kinema")
    }

    /// Runs `kinema` with `arguments` to completion.
    static func run(_ arguments: [String]) throws -> Run {
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: stdout, stderr: stderr)
    }

    func kinema(_ arguments: String...) throws -> Run { try Self.run(arguments) }

    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    func writeTensors(_ tensors: [String: [Int]], dtype: DType = .f32, to path: URL) throws {
        let allocator = HostAllocator()
        var made: [String: Tensor] = [:]
        for (name, shape) in tensors {
            let count = shape.reduce(1, *)
            let t = Tensor(shape: shape, dtype: .f32, storage: Storage(byteCount: count * 4, allocator: allocator))
            for i in 0..<count { t.pointer(Float.self)[i] = Float.random(in: -1...1) }
            if dtype == .f32 { made[name] = t; continue }
            let converted = Tensor(shape: shape, dtype: dtype, storage: Storage(byteCount: count * dtype.size, allocator: allocator))
            DType.convert(t.rawPointer, from: .f32, to: converted.rawPointer, dtype, count: count)
            made[name] = converted
        }
        try SafeTensorsWriter.write(made, to: path.path)
    }

    func testVersionAndHelp() throws {
        let version = try kinema("--version")
        XCTAssertEqual(version.status, 0)
        XCTAssertEqual(version.stdout.trimmingCharacters(in: .whitespacesAndNewlines), kinemaVersion)
        let help = try kinema("--help")
        XCTAssertEqual(help.status, 0)
        for subcommand in ["inspect", "selftest", "bench"] { XCTAssertTrue(help.stdout.contains(subcommand), subcommand) }
    }

    func testInspectListsEveryComponentOfADiffusersFolder() throws {
        let model = directory.appendingPathComponent("model")
        for component in ["unet", "vae"] {
            try FileManager.default.createDirectory(at: model.appendingPathComponent(component), withIntermediateDirectories: true)
        }
        try Data(#"{"_class_name": "I2VGenXLPipeline", "unet": ["diffusers", "I2VGenXLUNet"], "vae": ["diffusers", "AutoencoderKL"]}"#.utf8)
            .write(to: model.appendingPathComponent("model_index.json"))
        try writeTensors(["conv_in.weight": [8, 4, 3, 3], "conv_in.bias": [8]], to: model.appendingPathComponent("unet/diffusion_pytorch_model.safetensors"))
        try writeTensors(["conv_in.weight": [8, 4, 3, 3], "conv_in.bias": [8]], dtype: .f16,
                         to: model.appendingPathComponent("unet/diffusion_pytorch_model.fp16.safetensors"))
        try writeTensors(["decoder.conv_out.weight": [3, 5, 3, 3]], dtype: .bf16, to: model.appendingPathComponent("vae/diffusion_pytorch_model.safetensors"))
        let run = try kinema("inspect", model.path)
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stdout.contains("unet: diffusion_pytorch_model.safetensors"))
        XCTAssertTrue(run.stdout.contains("unet: diffusion_pytorch_model.fp16.safetensors"))
        XCTAssertTrue(run.stdout.contains("2 tensors, 296 parameters, 1.18 KB (f32)"), run.stdout)
        XCTAssertTrue(run.stdout.contains("2 tensors, 296 parameters, 592 B (f16)"), run.stdout)
        XCTAssertTrue(run.stdout.contains("decoder.conv_out.weight  [3, 5, 3, 3]  bf16"), run.stdout)

        let json = try kinema("inspect", model.path, "--json", "--summary")
        XCTAssertEqual(json.status, 0)
        let parsed = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(parsed.map { $0["parameters"] as? Int }, [296, 296, 135])
    }

    func testInspectReportsMissingAndCorruptFilesWithoutACrash() throws {
        let missing = try kinema("inspect", directory.appendingPathComponent("nope.safetensors").path)
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("no such file or folder"), missing.stderr)

        let corrupt = directory.appendingPathComponent("corrupt.safetensors")
        try writeTensors(["w": [4, 4]], to: corrupt)
        let data = try Data(contentsOf: corrupt)
        try data.prefix(data.count - 5).write(to: corrupt)
        let truncated = try kinema("inspect", corrupt.path)
        XCTAssertEqual(truncated.status, 1)
        XCTAssertTrue(truncated.stderr.contains(corrupt.path) && truncated.stderr.contains("truncated"), truncated.stderr)

        let empty = directory.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let none = try kinema("inspect", empty.path)
        XCTAssertNotEqual(none.status, 0)
        XCTAssertTrue(none.stderr.contains("no model_index.json and no .safetensors files"), none.stderr)
    }

    func testSelftestPassesOnTheCPUAndRefusesCUDAPlainlyWithoutAGPU() throws {
        let cpu = try kinema("selftest", "--device", "cpu")
        XCTAssertEqual(cpu.status, 0, cpu.stdout + cpu.stderr)
        XCTAssertTrue(cpu.stdout.contains("BLAS: OpenBLAS"), cpu.stdout)
        XCTAssertTrue(cpu.stdout.contains(" 0 failed"), cpu.stdout)
        let cuda = try kinema("selftest", "--device", "cuda")
        if cuda.status == 0 {
            // A machine with a GPU: every op of every storage type passed.
            XCTAssertTrue(cuda.stdout.contains("cuda backend on"), cuda.stdout)
            XCTAssertFalse(cuda.stdout.contains("FAIL"), cuda.stdout)
        } else {
            // No driver or no GPU: one line saying which call failed.
            XCTAssertTrue(cuda.stderr.contains("no CUDA device to test:"), cuda.stderr)
        }
    }

    func testBadArgumentsAreRejectedWithTheirName() throws {
        let runs = try kinema("bench", "ops", "--runs", "0")
        XCTAssertNotEqual(runs.status, 0)
        XCTAssertTrue(runs.stderr.contains("--runs must be at least 1"), runs.stderr)
        let op = try kinema("bench", "ops", "--only", "fft")
        XCTAssertNotEqual(op.status, 0)
        XCTAssertTrue(op.stderr.contains("unknown op fft"), op.stderr)
        let device = try kinema("selftest", "--device", "tpu")
        XCTAssertNotEqual(device.status, 0)
    }
}
