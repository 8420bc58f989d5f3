import Foundation
import KinemaCore
import KinemaCPU
import KinemaModels
import XCTest

/// AutoencoderKL against diffusers (`tools/make_vae_fixtures.py`): "two_blocks" runs the asymmetric
/// downsample and the upsample and clamps a log-variance channel at -30; "tiny" is the I2VGen-XL
/// tiny test VAE and clamps one at 20.
final class AutoencoderKLTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/vae")
    static let models = ["two_blocks", "tiny"]

    // MARK: Parity with diffusers

    func testEncodeMomentsMatchDiffusers() throws {
        for name in Self.models {
            let cpu = CPUBackend()
            let fixture = try Fixture(name, on: cpu)
            let (mean, logVariance) = fixture.vae.encodeMoments(try fixture.reference("image"), cpu)
            try assertClose(mean, fixture.reference("mean"), within: 1e-4, "\(name) mean")
            try assertClose(logVariance, fixture.reference("logvar"), within: 1e-4, "\(name) logvar")
        }
    }

    func testLogVarianceIsClampedToDiffusersRange() throws {
        for (name, channel, bound) in [("two_blocks", 1, Float(-30)), ("tiny", 2, Float(20))] {
            let cpu = CPUBackend()
            let fixture = try Fixture(name, on: cpu)
            let logVariance = fixture.vae.encodeMoments(try fixture.reference("image"), cpu).logVariance
            let plane = logVariance.shape[2] * logVariance.shape[3]
            let values = logVariance.floats()[channel * plane ..< (channel + 1) * plane]
            XCTAssertTrue(values.allSatisfy { $0 == bound }, "\(name): log-variance channel \(channel) should be clamped to \(bound)")
        }
    }

    func testSampleMatchesDiffusers() throws {
        for name in Self.models {
            let cpu = CPUBackend()
            let fixture = try Fixture(name, on: cpu)
            let latent = fixture.vae.sample(mean: try fixture.reference("mean"), logVariance: try fixture.reference("logvar"),
                                            noise: try fixture.reference("noise"), cpu)
            // The tiny model's std is exp(10) on its clamped channel: compare relative to the size there.
            try assertClose(latent, fixture.reference("latent"), within: 1e-4, relativeAboveOne: true, "\(name) latent")
        }
    }

    func testDecodeMatchesDiffusers() throws {
        for name in Self.models {
            let cpu = CPUBackend()
            let fixture = try Fixture(name, on: cpu)
            let images = fixture.vae.decode(try fixture.reference("decode_latents"), cpu)
            try assertClose(images, fixture.reference("decoded"), within: 1e-4, "\(name) decoded")
        }
    }

    // MARK: Batching

    func testDecodingFramesTogetherEqualsDecodingThemOneAtATime() throws {
        let cpu = CPUBackend()
        let vae = try Fixture("two_blocks", on: cpu).vae
        var random = SeededNormal()
        let latents = cpu.tensor(random.values(2 * 4 * 7 * 6), shape: [2, 4, 7, 6])
        let together = vae.decode(latents, cpu)
        let apart = (0..<2).map { vae.decode(latents.slice($0 ..< $0 + 1), cpu) }
        XCTAssertEqual(together.shape, [2, 3, 14, 12])
        // Equal up to float rounding: batched frames may share one sgemm with a different blocking.
        assertClose(together.floats(), apart.flatMap { $0.floats() }, within: 1e-5, "seed \(random.seed)")
    }

    // MARK: Weights

    func testMissingWeightIsReported() throws {
        let error = try weightError { tensors in tensors["decoder.conv_out.bias"] = nil }
        XCTAssertEqual(error.missing, ["decoder.conv_out.bias"])
        XCTAssertEqual(error.unexpected, [])
        XCTAssertEqual(error.misshaped, [])
    }

    func testUnexpectedWeightIsReported() throws {
        let error = try weightError { tensors in tensors["encoder.extra.weight"] = tensors["quant_conv.bias"] }
        XCTAssertEqual(error.missing, [])
        XCTAssertEqual(error.unexpected, ["encoder.extra.weight"])
        XCTAssertEqual(error.misshaped, [])
    }

    func testMisshapedWeightIsReported() throws {
        let error = try weightError { tensors in
            tensors["encoder.mid_block.attentions.0.to_q.weight"] = tensors["encoder.mid_block.attentions.0.to_q.weight"]!.reshaped([64])
        }
        XCTAssertEqual(error.missing, [])
        XCTAssertEqual(error.unexpected, [])
        XCTAssertEqual(error.misshaped, ["encoder.mid_block.attentions.0.to_q.weight expected [8, 8], found [64]"])
    }

    func testDisabledQuantConvsAndMidAttentionAskForNoWeights() throws {
        var config = try AutoencoderKLConfig(contentsOf: Self.fixtures.appendingPathComponent("tiny/config.json").path)
        config.useQuantConv = false
        config.usePostQuantConv = false
        config.midBlockAddAttention = false
        let cpu = CPUBackend()
        let file = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("tiny/diffusion_pytorch_model.safetensors").path)
        let weights = try WeightReader(component: "vae", files: [file], backend: cpu)
        _ = AutoencoderKL(config: config, weights: weights)
        XCTAssertThrowsError(try weights.finish()) { error in
            let unexpected = (error as? WeightError)?.unexpected ?? []
            XCTAssertEqual(unexpected.filter { !$0.contains(".attentions.0.") },
                           ["post_quant_conv.bias", "post_quant_conv.weight", "quant_conv.bias", "quant_conv.weight"])
            XCTAssertEqual(unexpected.filter { $0.contains(".attentions.0.") }.count, 2 * 10, "\(unexpected)")
        }
    }

    func testLegacyAttentionKeyNamesLoadThroughAliases() throws {
        let directory = try temporaryCopy { tensors in
            for (current, legacy) in [("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")] {
                for part in ["encoder", "decoder"] {
                    for suffix in ["weight", "bias"] {
                        let key = "\(part).mid_block.attentions.0.\(current).\(suffix)"
                        tensors["\(part).mid_block.attentions.0.\(legacy).\(suffix)"] = tensors.removeValue(forKey: key)
                    }
                }
            }
        }
        let cpu = CPUBackend()
        let file = try SafeTensorsFile(path: directory.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        let weights = try WeightReader(component: "vae", files: [file], backend: cpu, aliases: AutoencoderKL.weightKeyAliases)
        let config = try AutoencoderKLConfig(contentsOf: Self.fixtures.appendingPathComponent("tiny/config.json").path)
        let vae = AutoencoderKL(config: config, weights: weights)
        try weights.finish()
        let reference = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("tiny/reference.safetensors").path)
        try assertClose(vae.decode(reference.tensor("decode_latents"), cpu), reference.tensor("decoded"), within: 1e-4, "legacy names")
    }

    // MARK: Configuration

    func testReleasedConfigParses() throws {
        let config = try AutoencoderKLConfig(contentsOf: Self.fixtures.appendingPathComponent("released_config.json").path)
        XCTAssertEqual(config.scalingFactor, 0.18125)
        XCTAssertEqual(config.blockOutChannels, [128, 256, 512, 512])
        XCTAssertEqual(config.layersPerBlock, 2)
        XCTAssertEqual(config.normNumGroups, 32)
        XCTAssertEqual(config.latentChannels, 4)
        XCTAssertEqual(config.sampleSize, 768)
        XCTAssertEqual(config.downscaleFactor, 8)
        XCTAssertTrue(config.useQuantConv && config.usePostQuantConv && config.midBlockAddAttention, "absent keys take diffusers' defaults")
        XCTAssertNil(config.shiftFactor)
    }

    func testConfigIgnoresUnknownKeysAndTakesDefaultsForNull() throws {
        let json = #"{"_class_name": "AutoencoderKL", "latents_mean": null, "someday": [1, {"a": 2}], "scaling_factor": null,"#
            + #" "block_out_channels": [8.0, 16], "norm_num_groups": 4, "sample_size": [64, 48], "use_quant_conv": false,"#
            + #" "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]}"#
        let config = try AutoencoderKLConfig(json: Data(json.utf8))
        XCTAssertEqual(config.scalingFactor, 0.18215)
        XCTAssertEqual(config.blockOutChannels, [8, 16])
        XCTAssertEqual(config.sampleSize, 64)
        XCTAssertFalse(config.useQuantConv)
        XCTAssertTrue(config.usePostQuantConv)
    }

    func testConfigRejectsUnsupportedActivation() {
        assertConfigError(#"{"act_fn": "gelu", "block_out_channels": [32]}"#, mentions: "act_fn")
    }

    func testConfigRejectsWrongValueTypes() {
        assertConfigError(#"{"layers_per_block": "two"}"#, mentions: "layers_per_block")
        assertConfigError(#"{"layers_per_block": 1.5}"#, mentions: "layers_per_block")
        assertConfigError(#"{"use_quant_conv": 1}"#, mentions: "use_quant_conv")
    }

    func testConfigRejectsBlockTypesItCannotBuild() {
        assertConfigError(#"{"down_block_types": ["AttnDownEncoderBlock2D"]}"#, mentions: "AttnDownEncoderBlock2D")
        assertConfigError(#"{"block_out_channels": [32, 64]}"#, mentions: "down_block_types")
        assertConfigError(#"{"block_out_channels": [48], "norm_num_groups": 32}"#, mentions: "norm_num_groups")
    }

    // MARK: Meta backend

    func testReleasedVAEDryRunsOnTheMetaBackend() throws {
        let config = try AutoencoderKLConfig(contentsOf: Self.fixtures.appendingPathComponent("released_config.json").path)
        let meta = MetaBackend(emulating: CPUBackend().workspacePolicy)
        let weights = WeightReader(shapesOnlyFor: "vae", backend: meta)
        let vae = AutoencoderKL(config: config, weights: weights)
        try weights.finish()
        let images = vae.decode(meta.empty([1, 4, 16, 16]), meta)
        XCTAssertEqual(images.shape, [1, 3, 128, 128])
        let (mean, logVariance) = vae.encodeMoments(meta.empty([1, 3, 64, 48]), meta)
        XCTAssertEqual(mean.shape, [1, 4, 8, 6])
        XCTAssertEqual(vae.sample(mean: mean, logVariance: logVariance, noise: meta.empty([1, 4, 8, 6]), meta).shape, [1, 4, 8, 6])
        XCTAssertGreaterThan(meta.allocator.meter.peak, 0)
    }

    func testMetaDryRunAllocatesExactlyWhatTheCPURunAllocates() throws {
        let cpu = CPUBackend()
        let meta = cpu.metaTwin()
        let folder = Self.fixtures.appendingPathComponent("two_blocks")
        let config = try AutoencoderKLConfig(contentsOf: folder.appendingPathComponent("config.json").path)
        let file = try SafeTensorsFile(path: folder.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        let real = AutoencoderKL(config: config, weights: try WeightReader(component: "vae", files: [file], backend: cpu))
        let dry = AutoencoderKL(config: config, weights: WeightReader(shapesOnlyFor: "vae", backend: meta))
        XCTAssertEqual(cpu.allocator.meter.current, meta.allocator.meter.current, "weights")
        for meter in [cpu.allocator.meter, meta.allocator.meter] {
            meter.recordsEvents = true
            meter.clearEvents()
        }
        var random = SeededNormal()
        let pixels = random.values(3 * 24 * 20), noise = random.values(4 * 12 * 10), latents = random.values(2 * 4 * 6 * 5)
        func run(_ vae: AutoencoderKL, _ b: Backend) -> [[Int]] {
            let (mean, logVariance) = vae.encodeMoments(b.tensor(pixels, shape: [1, 3, 24, 20]), b)
            let latent = vae.sample(mean: mean, logVariance: logVariance, noise: b.tensor(noise, shape: [1, 4, 12, 10]), b)
            return [latent.shape, vae.decode(b.tensor(latents, shape: [2, 4, 6, 5]), b).shape]
        }
        XCTAssertEqual(run(real, cpu), run(dry, meta))
        XCTAssertEqual(cpu.allocator.meter.events, meta.allocator.meter.events)
        XCTAssertEqual(cpu.allocator.meter.peak, meta.allocator.meter.peak)
    }

    // MARK: Helpers

    /// One fixture model on `backend` with its reference tensors.
    private struct Fixture {
        let vae: AutoencoderKL
        let references: SafeTensorsFile
        let backend: Backend

        init(_ name: String, on backend: Backend) throws {
            let folder = AutoencoderKLTests.fixtures.appendingPathComponent(name)
            let config = try AutoencoderKLConfig(contentsOf: folder.appendingPathComponent("config.json").path)
            let file = try SafeTensorsFile(path: folder.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
            let weights = try WeightReader(component: "vae", files: [file], backend: backend)
            vae = AutoencoderKL(config: config, weights: weights)
            try weights.finish()
            references = try SafeTensorsFile(path: folder.appendingPathComponent("reference.safetensors").path)
            self.backend = backend
        }

        func reference(_ name: String) throws -> Tensor { backend.upload(try references.tensor(name)) }
    }

    /// The `WeightError` of building the tiny VAE from a copy of its weights changed by `edit`.
    private func weightError(_ edit: (inout [String: Tensor]) -> Void) throws -> WeightError {
        let directory = try temporaryCopy(edit)
        let file = try SafeTensorsFile(path: directory.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        let weights = try WeightReader(component: "vae", files: [file], backend: CPUBackend())
        let config = try AutoencoderKLConfig(contentsOf: Self.fixtures.appendingPathComponent("tiny/config.json").path)
        _ = AutoencoderKL(config: config, weights: weights)
        var thrown: Error?
        do { try weights.finish() } catch { thrown = error }
        return try XCTUnwrap(thrown as? WeightError, "the edited weights were accepted, or another error was thrown: \(String(describing: thrown))")
    }

    /// A temporary folder holding the tiny VAE's weights changed by `edit`; removed after the test.
    private func temporaryCopy(_ edit: (inout [String: Tensor]) -> Void) throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-vae-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        let original = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("tiny/diffusion_pytorch_model.safetensors").path)
        var tensors = Dictionary(uniqueKeysWithValues: try original.names.map { ($0, try original.tensor($0)) })
        edit(&tensors)
        try SafeTensorsWriter.write(tensors, to: directory.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        return directory
    }

    private func assertConfigError(_ json: String, mentions text: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try AutoencoderKLConfig(json: Data(json.utf8)), file: file, line: line) { error in
            XCTAssertTrue(error is AutoencoderKLConfigError && "\(error)".contains(text), "\(error)", file: file, line: line)
        }
    }

    /// Max-abs comparison of two tensors; with `relativeAboveOne` the error allowed grows with |expected| beyond 1.
    private func assertClose(_ actual: Tensor, _ expected: Tensor, within tolerance: Float, relativeAboveOne: Bool = false,
                             _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.shape, expected.shape, what, file: file, line: line)
        guard actual.shape == expected.shape else { return }
        assertClose(actual.floats(), expected.floats(), within: tolerance, relativeAboveOne: relativeAboveOne, what, file: file, line: line)
    }

    private func assertClose(_ actual: [Float], _ expected: [Float], within tolerance: Float, relativeAboveOne: Bool = false,
                             _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, what, file: file, line: line)
        var worst = (error: Float(0), index: 0)
        for i in 0..<min(actual.count, expected.count) {
            let scale = relativeAboveOne ? max(1, abs(expected[i])) : 1
            let error = abs(actual[i] - expected[i]) / scale
            if !(error <= worst.error) { worst = (error, i) }  // NaN counts as the worst
        }
        XCTAssertTrue(worst.error <= tolerance, "\(what): error \(worst.error) at \(worst.index) "
                      + "(\(actual[worst.index]) vs \(expected[worst.index])) exceeds \(tolerance)", file: file, line: line)
    }
}

/// Standard-normal values from a fresh random seed (SplitMix64 + Box–Muller); the seed goes into failure messages.
private struct SeededNormal {
    let seed = UInt64.random(in: 1 ... .max)
    private var state: UInt64

    init() { state = seed }

    private mutating func unit() -> Float {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Float((z ^ (z >> 31)) >> 40) / Float(1 << 24)
    }

    mutating func values(_ count: Int) -> [Float] {
        (0..<count).map { _ in
            let u1 = max(unit(), .ulpOfOne), u2 = unit()
            return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        }
    }
}
