import Foundation
import KinemaCore
import KinemaCPU
import KinemaModels
import XCTest

/// CLIPTextModel and CLIPVisionModelWithProjection against transformers 5.24 (fixtures from
/// tools/make_clip_fixtures.py), their configs, strict weight loading and the meta dry run.
final class CLIPModelTests: XCTestCase {
    private static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/clip")

    private static func fixture(_ name: String) -> String { fixtures.appendingPathComponent(name).path }

    private func reference(_ name: String) throws -> Tensor {
        try SafeTensorsFile(path: Self.fixture("reference.safetensors")).tensor(name)
    }

    /// The fixture text model in `folder` (config and weights), loaded strictly.
    private func textModel(_ folder: String, _ backend: Backend) throws -> CLIPTextModel {
        let config = try CLIPTextConfig(contentsOf: Self.fixture("\(folder)/config.json"))
        let weights = try CLIPTextModel.weightReader(
            files: [SafeTensorsFile(path: Self.fixture("\(folder)/model.safetensors"))], backend: backend)
        let model = CLIPTextModel(config: config, weights: weights)
        try weights.finish()
        return model
    }

    private func visionModel(_ backend: Backend) throws -> CLIPVisionModelWithProjection {
        let config = try CLIPVisionConfig(contentsOf: Self.fixture("vision/config.json"))
        let weights = try CLIPVisionModelWithProjection.weightReader(
            files: [SafeTensorsFile(path: Self.fixture("vision/model.safetensors"))], backend: backend)
        let model = CLIPVisionModelWithProjection(config: config, weights: weights)
        try weights.finish()
        return model
    }

    private func referenceIds() throws -> [[Int]] {
        let ids = try reference("text_ids")
        let values = ids.floats().map { Int($0) }
        return (0..<ids.shape[0]).map { Array(values[$0 * ids.shape[1]..<($0 + 1) * ids.shape[1]]) }
    }

    // MARK: Parity with transformers

    func testPromptEmbeddingsMatchTransformersWithTransformers5Keys() throws {
        let backend = CPUBackend()
        let embeds = try textModel("text_v5", backend).promptEmbeddings(ids: referenceIds(), backend)
        let expected = try reference("prompt_embeds")
        XCTAssertEqual(embeds.shape, expected.shape)
        XCTAssertLessThanOrEqual(maxDifference(embeds.floats(), expected.floats()), 1e-5)
    }

    func testPromptEmbeddingsMatchTransformersWithTransformers4PrefixedFloat16Keys() throws {
        let backend = CPUBackend()
        let embeds = try textModel("text_v4", backend).promptEmbeddings(ids: referenceIds(), backend)
        let expected = try reference("prompt_embeds")
        XCTAssertEqual(embeds.shape, expected.shape)
        XCTAssertLessThanOrEqual(maxDifference(embeds.floats(), expected.floats()), 1e-5)
    }

    func testImageEmbeddingsMatchTransformers() throws {
        let backend = CPUBackend()
        let pixels = try backend.upload(reference("pixel_values"))
        let embeds = try visionModel(backend).imageEmbeddings(pixels, backend)
        let expected = try reference("image_embeds")
        XCTAssertEqual(embeds.shape, expected.shape)
        XCTAssertLessThanOrEqual(maxDifference(embeds.floats(), expected.floats()), 1e-5)
    }

    // MARK: Behaviour on fresh random inputs

    func testPromptEmbeddingsAreCausal() throws {
        var random = SeededRandom()
        let backend = CPUBackend()
        let model = try textModel("text_v5", backend)
        let ids = (0..<77).map { _ in random.int(below: 1000) }
        var changed = ids
        changed[60] = (ids[60] + 1 + random.int(below: 998)) % 1000
        let original = model.promptEmbeddings(ids: [ids], backend).floats()
        let altered = model.promptEmbeddings(ids: [changed], backend).floats()
        let width = model.config.hiddenSize
        XCTAssertLessThanOrEqual(maxDifference(Array(original[..<(60 * width)]), Array(altered[..<(60 * width)])), 1e-6,
                                 "tokens before the change must not see it (seed \(random.seed))")
        XCTAssertGreaterThan(maxDifference(Array(original[(60 * width)...]), Array(altered[(60 * width)...])), 1e-3,
                             "tokens from the change on must see it (seed \(random.seed))")
    }

    func testPromptsInABatchAreEncodedIndependently() throws {
        var random = SeededRandom()
        let backend = CPUBackend()
        let model = try textModel("text_v5", backend)
        let prompts = (0..<3).map { _ in (0..<77).map { _ in random.int(below: 1000) } }
        let batch = model.promptEmbeddings(ids: prompts, backend)
        XCTAssertEqual(batch.shape, [3, 77, model.config.hiddenSize])
        for (row, prompt) in prompts.enumerated() {
            let alone = model.promptEmbeddings(ids: [prompt], backend)
            XCTAssertLessThanOrEqual(maxDifference(batch.slice(row..<row + 1).floats(), alone.floats()), 1e-5,
                                     "prompt \(row) (seed \(random.seed))")
        }
    }

    func testImagesInABatchAreEncodedIndependently() throws {
        var random = SeededRandom()
        let backend = CPUBackend()
        let model = try visionModel(backend)
        let pixels = backend.tensor(random.normal(3 * 3 * 30 * 30), shape: [3, 3, 30, 30])
        let batch = model.imageEmbeddings(pixels, backend)
        XCTAssertEqual(batch.shape, [3, model.config.projectionDim])
        for image in 0..<3 {
            let alone = model.imageEmbeddings(pixels.slice(image..<image + 1), backend)
            XCTAssertLessThanOrEqual(maxDifference(batch.slice(image..<image + 1).floats(), alone.floats()), 1e-5,
                                     "image \(image) (seed \(random.seed))")
        }
    }

    // MARK: Strict weight loading

    func testWeightErrorListsMissingUnexpectedAndMisshapedKeys() throws {
        let source = try SafeTensorsFile(path: Self.fixture("text_v5/model.safetensors"))
        var tensors = try Dictionary(uniqueKeysWithValues: source.names.map { ($0, try source.tensor($0)) })
        tensors["encoder.layers.1.mlp.fc2.bias"] = nil
        tensors["encoder.layers.3.mlp.fc1.weight"] = try source.tensor("encoder.layers.2.mlp.fc1.weight")
        tensors["final_layer_norm.weight"] = try source.tensor("final_layer_norm.weight").slice(0..<23)
        let path = try temporaryDirectory().appendingPathComponent("broken.safetensors").path
        try SafeTensorsWriter.write(tensors, to: path)

        let config = try CLIPTextConfig(contentsOf: Self.fixture("text_v5/config.json"))
        let weights = try CLIPTextModel.weightReader(files: [SafeTensorsFile(path: path)], backend: CPUBackend())
        _ = CLIPTextModel(config: config, weights: weights)
        XCTAssertThrowsError(try weights.finish()) { error in
            guard let error = error as? WeightError else { return XCTFail("\(error) is not a WeightError") }
            XCTAssertEqual(error.missing, ["text_model.encoder.layers.1.mlp.fc2.bias"])
            XCTAssertEqual(error.unexpected, ["encoder.layers.3.mlp.fc1.weight"])
            XCTAssertEqual(error.misshaped, ["text_model.final_layer_norm.weight expected [24], found [23]"])
        }
    }

    func testImageEncoderWeightsForAnotherImageSizeAreRejected() throws {
        var config = try CLIPVisionConfig(contentsOf: Self.fixture("vision/config.json"))
        config.imageSize = 36
        let weights = try CLIPVisionModelWithProjection.weightReader(
            files: [SafeTensorsFile(path: Self.fixture("vision/model.safetensors"))], backend: CPUBackend())
        _ = CLIPVisionModelWithProjection(config: config, weights: weights)
        XCTAssertThrowsError(try weights.finish()) { error in
            XCTAssertEqual((error as? WeightError)?.misshaped,
                           ["vision_model.embeddings.position_embedding.weight expected [37, 24], found [26, 24]"])
        }
    }

    func testSavedPositionIdsBufferIsIgnored() throws {
        let source = try SafeTensorsFile(path: Self.fixture("text_v4/model.safetensors"))
        var tensors = try Dictionary(uniqueKeysWithValues: source.names.map { ($0, try source.tensor($0)) })
        let backend = CPUBackend()
        tensors["text_model.embeddings.position_ids"] = backend.tensor((0..<77).map(Float.init), shape: [1, 77])
        let path = try temporaryDirectory().appendingPathComponent("with_position_ids.safetensors").path
        try SafeTensorsWriter.write(tensors, to: path)

        let config = try CLIPTextConfig(contentsOf: Self.fixture("text_v4/config.json"))
        let weights = try CLIPTextModel.weightReader(files: [SafeTensorsFile(path: path)], backend: backend)
        _ = CLIPTextModel(config: config, weights: weights)
        XCTAssertNoThrow(try weights.finish())
    }

    /// The released checkpoints' key lists (from the design notes) as files of the right layout
    /// whose data is a hole, read on the meta backend: every key and shape must match exactly.
    func testModelsAskForExactlyTheReleasedKeysAndShapes() throws {
        let meta = MetaBackend(emulating: CPUBackend().workspacePolicy)
        let textFile = try sparseCheckpoint(keys: "released_text_keys.tsv")
        let textWeights = try CLIPTextModel.weightReader(files: [textFile], backend: meta)
        _ = try CLIPTextModel(config: CLIPTextConfig(contentsOf: Self.fixture("released_text_config.json")), weights: textWeights)
        XCTAssertNoThrow(try textWeights.finish())

        let imageFile = try sparseCheckpoint(keys: "released_image_keys.tsv")
        let imageWeights = try CLIPVisionModelWithProjection.weightReader(files: [imageFile], backend: meta)
        _ = try CLIPVisionModelWithProjection(config: CLIPVisionConfig(contentsOf: Self.fixture("released_image_config.json")),
                                              weights: imageWeights)
        XCTAssertNoThrow(try imageWeights.finish())
    }

    // MARK: Configs

    func testReleasedTextConfigParses() throws {
        let config = try CLIPTextConfig(contentsOf: Self.fixture("released_text_config.json"))
        XCTAssertEqual(config, CLIPTextConfig(vocabSize: 49408, hiddenSize: 1024, intermediateSize: 4096, projectionDim: 1024,
                                              numHiddenLayers: 24, numAttentionHeads: 16, maxPositionEmbeddings: 77,
                                              hiddenAct: .gelu, layerNormEps: 1e-5))
    }

    func testReleasedImageConfigParses() throws {
        let config = try CLIPVisionConfig(contentsOf: Self.fixture("released_image_config.json"))
        XCTAssertEqual(config, CLIPVisionConfig(hiddenSize: 1280, intermediateSize: 5120, projectionDim: 1024, numHiddenLayers: 32,
                                                numAttentionHeads: 16, numChannels: 3, imageSize: 224, patchSize: 14,
                                                hiddenAct: .gelu, layerNormEps: 1e-5))
        XCTAssertEqual(config.numPositions, 257)
    }

    func testTransformers5ConfigsParse() throws {
        let text = try CLIPTextConfig(contentsOf: Self.fixture("text_v5/config.json"))
        XCTAssertEqual(text, CLIPTextConfig(vocabSize: 1000, hiddenSize: 24, intermediateSize: 37, projectionDim: 16,
                                            numHiddenLayers: 3, numAttentionHeads: 4, maxPositionEmbeddings: 77,
                                            hiddenAct: .gelu, layerNormEps: 1e-5))
        let vision = try CLIPVisionConfig(contentsOf: Self.fixture("vision/config.json"))
        XCTAssertEqual(vision, CLIPVisionConfig(hiddenSize: 24, intermediateSize: 40, projectionDim: 16, numHiddenLayers: 2,
                                                numAttentionHeads: 3, numChannels: 3, imageSize: 30, patchSize: 6,
                                                hiddenAct: .quickGelu, layerNormEps: 1e-3))
    }

    func testAbsentAndNullKeysTakeTransformersDefaults() throws {
        XCTAssertEqual(try CLIPTextConfig(json: Data("{}".utf8)), CLIPTextConfig())
        XCTAssertEqual(try CLIPVisionConfig(json: Data("{}".utf8)), CLIPVisionConfig())
        let nulls = #"{"hidden_act": null, "layer_norm_eps": null, "hidden_size": null, "future_key": [1, {"a": 2}]}"#
        let text = try CLIPTextConfig(json: Data(nulls.utf8))
        XCTAssertEqual(text.hiddenAct, .quickGelu)
        XCTAssertEqual(text.layerNormEps, 1e-5)
        XCTAssertEqual(text.hiddenSize, 512)
        XCTAssertEqual(try CLIPVisionConfig(json: Data(nulls.utf8)).hiddenAct, .quickGelu)
    }

    func testUnsupportedActivationIsRejectedWhenTheConfigIsRead() {
        XCTAssertThrowsError(try CLIPTextConfig(json: Data(#"{"hidden_act": "gelu_new"}"#.utf8))) { error in
            XCTAssertTrue("\(error)".contains("hidden_act \"gelu_new\""), "\(error)")
        }
        XCTAssertThrowsError(try CLIPVisionConfig(json: Data(#"{"hidden_act": "relu"}"#.utf8)))
    }

    func testMalformedConfigValuesAreRejectedNamingTheKey() {
        let cases: [(String, String)] = [
            (#"{"hidden_size": "big"}"#, "hidden_size"),
            (#"{"num_hidden_layers": 0}"#, "num_hidden_layers"),
            (#"{"vocab_size": 2.5}"#, "vocab_size"),
            (#"{"layer_norm_eps": -1}"#, "layer_norm_eps"),
            (#"{"hidden_size": 30, "num_attention_heads": 4}"#, "num_attention_heads"),
            (#"{"model_type": "clip_vision_model"}"#, "model_type"),
            ("[1, 2]", "not a JSON object"),
        ]
        for (json, key) in cases {
            XCTAssertThrowsError(try CLIPTextConfig(json: Data(json.utf8)), json) { error in
                XCTAssertTrue(error is CLIPConfigError && "\(error)".contains(key), "\(json): \(error)")
            }
        }
        XCTAssertThrowsError(try CLIPVisionConfig(json: Data(#"{"image_size": 10, "patch_size": 14}"#.utf8))) { error in
            XCTAssertTrue("\(error)".contains("patch_size"), "\(error)")
        }
    }

    // MARK: Meta dry run

    func testReleasedTextEncoderDryRunsOnTheMetaBackend() throws {
        let meta = MetaBackend(emulating: CPUBackend().workspacePolicy)
        let config = try CLIPTextConfig(contentsOf: Self.fixture("released_text_config.json"))
        let weights = WeightReader(shapesOnlyFor: "text_encoder", backend: meta)
        let model = CLIPTextModel(config: config, weights: weights)
        try weights.finish()
        XCTAssertEqual(meta.allocator.meter.current, 352_984_064 * 4, "the released text encoder's parameters in f32")
        let embeds = model.promptEmbeddings(ids: [Array(repeating: 0, count: 77)], meta)
        XCTAssertEqual(embeds.shape, [1, 77, 1024])
    }

    func testReleasedImageEncoderDryRunsOnTheMetaBackend() throws {
        let meta = MetaBackend(emulating: CPUBackend().workspacePolicy)
        let config = try CLIPVisionConfig(contentsOf: Self.fixture("released_image_config.json"))
        let weights = WeightReader(shapesOnlyFor: "image_encoder", backend: meta)
        let model = CLIPVisionModelWithProjection(config: config, weights: weights)
        try weights.finish()
        XCTAssertEqual(meta.allocator.meter.current, 632_076_800 * 4, "the released image encoder's parameters in f32")
        let embeds = model.imageEmbeddings(meta.empty([1, 3, 224, 224]), meta)
        XCTAssertEqual(embeds.shape, [1, 1024])
    }

    // MARK: Helpers

    private func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-clip-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// A safetensors file with the keys and shapes of a "key<TAB>[shape]" list, as f16, whose data
    /// is a hole in a sparse file: the full layout without the gigabytes.
    private func sparseCheckpoint(keys list: String) throws -> SafeTensorsFile {
        let lines = try String(contentsOfFile: Self.fixture(list), encoding: .utf8).split(separator: "\n")
        var entries: [String] = []
        var offset = 0
        for line in lines {
            let fields = line.split(separator: "\t")
            let shape = fields[1].dropFirst().dropLast().split(separator: ",")
                .map { Int($0.trimmingCharacters(in: .whitespaces))! }
            let bytes = shape.reduce(2, *)
            entries.append("\"\(fields[0])\":{\"dtype\":\"F16\",\"shape\":\(shape),\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
        header += Array(repeating: UInt8(ascii: " "), count: (8 - header.count % 8) % 8)
        let path = try temporaryDirectory().appendingPathComponent(list + ".safetensors").path
        var length = UInt64(header.count).littleEndian
        var bytes = Data(bytes: &length, count: 8)
        bytes.append(contentsOf: header)
        try bytes.write(to: URL(fileURLWithPath: path))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: UInt64(8 + header.count + offset))
        try handle.close()
        return try SafeTensorsFile(path: path)
    }
}

/// The largest absolute difference between two equally long arrays (infinity if their lengths differ).
private func maxDifference(_ a: [Float], _ b: [Float]) -> Float {
    guard a.count == b.count else { return .infinity }
    return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

/// Fresh random inputs per run from a printed seed (SplitMix64), so a failure can be replayed.
private struct SeededRandom: RandomNumberGenerator {
    let seed: UInt64
    private var state: UInt64

    init(seed: UInt64 = .random(in: 1...UInt64.max)) {
        self.seed = seed
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func int(below bound: Int) -> Int { Int.random(in: 0..<bound, using: &self) }

    /// Standard-normal values (Box–Muller).
    mutating func normal(_ count: Int) -> [Float] {
        (0..<count).map { _ in
            let u1 = Float.random(in: Float.ulpOfOne..<1, using: &self)
            let u2 = Float.random(in: 0..<1, using: &self)
            return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        }
    }
}
