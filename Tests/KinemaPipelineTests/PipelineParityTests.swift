import Foundation
import KinemaCore
import KinemaCPU
import KinemaModels
import KinemaPipeline
import XCTest

/// Whole generations against diffusers' I2VGenXLPipeline, seed for seed (`tools/make_fixtures.py`):
/// intermediates within 1e-4, final frames within 2e-3 (max abs).
final class PipelineParityTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/pipelines")

    struct Case {
        let model: I2VGenXLModel
        let reference: SafeTensorsFile
        let image: RGBImage
        let request: GenerationRequest
    }

    func load(_ name: String, backend: Backend) throws -> Case {
        let folder = Self.fixtures.appendingPathComponent(name)
        let model = try I2VGenXLModel.load(folder: folder.path, backend: backend)
        let reference = try SafeTensorsFile(path: folder.appendingPathComponent("reference.safetensors").path)
        let pixels = try reference.tensor("image")
        let image = try RGBImage(width: pixels.shape[1], height: pixels.shape[0], pixels: pixels.floats().map { UInt8($0) })
        func value(_ key: String) throws -> Any {
            try JSONSerialization.jsonObject(with: Data(XCTUnwrap(reference.metadata[key]).utf8), options: .fragmentsAllowed)
        }
        var request = GenerationRequest(prompt: try value("prompt") as! String, negativePrompt: try value("negative_prompt") as? String,
                                        seed: UInt64(try value("seed") as! Int))
        request.width = try value("width") as! Int
        request.height = try value("height") as! Int
        request.frames = try value("num_frames") as! Int
        request.fps = try value("target_fps") as! Int
        request.steps = try value("num_inference_steps") as! Int
        request.guidanceScale = Float(try value("guidance_scale") as! Double)
        request.decodeChunk = try value("decode_chunk_size") as! Int
        return Case(model: model, reference: reference, image: image, request: request)
    }

    func maxError(_ a: [Float], _ b: [Float]) -> Float {
        a.count == b.count ? zip(a, b).map { abs($0 - $1) }.max() ?? 0 : .infinity
    }

    func checkParity(_ name: String) throws {
        let cpu = CPUBackend()
        let c = try load(name, backend: cpu)
        var observed: [String: Tensor] = [:]
        var events: [GenerationProgress] = []
        let video = try ImageToVideoPipeline(model: c.model, backend: cpu).generate(
            image: c.image, request: c.request, progress: { events.append($0) }, observe: { observed[$0] = $1 })
        for key in ["prompt_embeds", "image_embeds", "image_latents", "unet_out", "first_decode"] {
            let expected = try c.reference.tensor(key)
            let actual = try XCTUnwrap(observed[key], key)
            XCTAssertEqual(actual.count, expected.count, "\(name) \(key) shape \(actual.shape) vs \(expected.shape)")
            XCTAssertLessThan(maxError(actual.floats(), expected.floats()), 1e-4, "\(name) \(key)")
        }
        let frames = try c.reference.tensor("frames")
        XCTAssertEqual([video.count, video.height, video.width, 3], frames.shape)
        let error = maxError(video.frames, frames.floats())
        XCTAssertLessThan(error, 2e-3, "\(name) frames: max abs error \(error)")
        XCTAssertEqual(events.filter { $0.phase == .denoise }.last, GenerationProgress(phase: .denoise, step: c.request.steps, totalSteps: c.request.steps))
        XCTAssertEqual(events.last?.phase, .decode)
    }

    func testReleasedLayoutPipelineMatchesDiffusers() throws { try checkParity("released_layout") }

    func testTinyPipelineWithoutGuidanceMatchesDiffusers() throws { try checkParity("tiny_no_guidance") }

    func testFourLevelPipelineWithTrailingSpacingMatchesDiffusers() throws { try checkParity("four_levels") }

    func testCancellationStopsBetweenSteps() throws {
        let cpu = CPUBackend()
        let c = try load("tiny_no_guidance", backend: cpu)
        var steps = 0
        XCTAssertThrowsError(try ImageToVideoPipeline(model: c.model, backend: cpu).generate(
            image: c.image, request: c.request, progress: { if $0.phase == .denoise { steps = $0.step } }, isCancelled: { steps >= 1 })) {
            XCTAssertEqual($0 as? GenerationError, .cancelled)
        }
        XCTAssertEqual(steps, 1)
    }

    func testInvalidRequestsAreRejectedBeforeAnyWork() throws {
        let cpu = CPUBackend()
        let c = try load("tiny_no_guidance", backend: cpu)
        let pipeline = ImageToVideoPipeline(model: c.model, backend: cpu)
        let cases: [(WritableKeyPath<GenerationRequest, Int>, Int, String)] = [
            (\.width, 30, "multiples of 8"), (\.height, 0, "multiples of 8"), (\.frames, 0, "frames"), (\.steps, 0, "steps"),
        ]
        for (path, value, message) in cases {
            var request = c.request
            request[keyPath: path] = value
            XCTAssertThrowsError(try pipeline.generate(image: c.image, request: request)) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
        var negative = c.request
        negative.guidanceScale = -1
        XCTAssertThrowsError(try pipeline.generate(image: c.image, request: negative)) { XCTAssertTrue("\($0)".contains("guidance"), "\($0)") }
    }

    func testMissingComponentIsNamed() throws {
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-model-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: copy) }
        try FileManager.default.copyItem(at: Self.fixtures.appendingPathComponent("tiny_no_guidance"), to: copy)
        try FileManager.default.removeItem(at: copy.appendingPathComponent("vae"))
        XCTAssertThrowsError(try I2VGenXLModel.load(folder: copy.path, backend: CPUBackend())) {
            XCTAssertTrue("\($0)".contains("the vae component is missing"), "\($0)")
        }
        XCTAssertThrowsError(try I2VGenXLModel.load(folder: copy.appendingPathComponent("nope").path, backend: CPUBackend())) {
            XCTAssertTrue("\($0)".contains("does not exist"), "\($0)")
        }
    }
}
