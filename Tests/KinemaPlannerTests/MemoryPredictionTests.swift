import Foundation
import KinemaCore
import KinemaCPU
import KinemaPipeline
import KinemaPlanner
import XCTest

/// The meta dry run predicts the CPU allocator's peaks exactly, phase by phase.
final class MemoryPredictionTests: XCTestCase {
    static let pipelines = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("KinemaPipelineTests/Fixtures/pipelines")

    /// Runs `request` on the CPU and returns the allocator's peaks by phase.
    func measure(_ model: I2VGenXLModel, on cpu: CPUBackend, _ request: GenerationRequest) throws -> MemoryPrediction {
        let weights = cpu.allocator.meter.current
        var generator = SystemRandomNumberGenerator()
        let image = try RGBImage(width: 41, height: 29, pixels: (0..<(41 * 29 * 3)).map { _ in UInt8.random(in: 0...255, using: &generator) })
        let recorder = PhasePeakRecorder(meter: cpu.allocator.meter)
        _ = try ImageToVideoPipeline(model: model, backend: cpu).generate(image: image, request: request) { recorder.record($0) }
        recorder.close()
        return MemoryPrediction(weightBytes: weights, phasePeakBytes: recorder.peaks)
    }

    func testPredictedPeaksEqualMeasuredPeaksForTwentyFourRuns() throws {
        var runs = 0
        for name in ["tiny_no_guidance", "released_layout", "four_levels"] {
            let folder = Self.pipelines.appendingPathComponent(name).path
            let cpu = CPUBackend(), meta = cpu.metaTwin()
            let model = try I2VGenXLModel.load(folder: folder, backend: cpu)
            let dryModel = try I2VGenXLModel.load(folder: folder, backend: meta, weights: .shapesOnly)
            XCTAssertEqual(meta.allocator.meter.current, cpu.allocator.meter.current, "\(name): resident weights")
            for (width, height) in [(32, 32), (48, 24)] {
                for frames in [1, 3] {
                    for (guidance, chunk) in [(Float(1), 1), (Float(7.5), 2)] {
                        var request = GenerationRequest(prompt: "the camera pans to the left", seed: UInt64.random(in: 0...1000))
                        (request.width, request.height, request.frames, request.steps) = (width, height, frames, 1)
                        request.guidanceScale = guidance
                        request.decodeChunk = chunk
                        let measured = try measure(model, on: cpu, request)
                        let predicted = try MemoryPredictor.predict(model: dryModel, on: meta, request: request)
                        let label = "\(name) \(width)x\(height)x\(frames) guidance \(guidance) chunk \(chunk)"
                        XCTAssertEqual(predicted, measured, label)
                        XCTAssertEqual(Set(predicted.phasePeakBytes.keys), ["encode", "denoise", "decode"], label)
                        XCTAssertGreaterThan(predicted.peakBytes, predicted.weightBytes, label)
                        runs += 1
                    }
                }
            }
        }
        XCTAssertEqual(runs, 24)
    }

    func testPredictionNeedsNoWeightFiles() throws {
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-configs-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: copy) }
        try FileManager.default.copyItem(at: Self.pipelines.appendingPathComponent("released_layout"), to: copy)
        let enumerator = FileManager.default.enumerator(atPath: copy.path)!
        for case let file as String in enumerator where file.hasSuffix(".safetensors") {
            try FileManager.default.removeItem(at: copy.appendingPathComponent(file))
        }
        var request = GenerationRequest(prompt: "zoom in", seed: 1)
        (request.width, request.height, request.frames, request.steps) = (48, 32, 3, 2)
        let withoutWeights = try MemoryPredictor.predict(folder: copy.path, request: request, workspacePolicy: CPUWorkspacePolicy(threads: 2))
        let withWeights = try MemoryPredictor.predict(folder: Self.pipelines.appendingPathComponent("released_layout").path, request: request,
                                                      workspacePolicy: CPUWorkspacePolicy(threads: 2))
        XCTAssertEqual(withoutWeights, withWeights)
    }
}
