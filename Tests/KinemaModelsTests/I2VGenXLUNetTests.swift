import Foundation
import KinemaCore
import KinemaCPU
import KinemaModels
import XCTest

/// The UNet against diffusers' I2VGenXLUNet (`tools/make_unet_fixtures.py`).
final class I2VGenXLUNetTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    func load(_ name: String, on backend: Backend) throws -> I2VGenXLUNet {
        let folder = Self.fixtures.appendingPathComponent("unet/\(name)")
        let config = try I2VGenXLUNetConfig(contentsOf: folder.appendingPathComponent("config.json").path)
        let file = try SafeTensorsFile(path: folder.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        let weights = try WeightReader(component: "unet", files: [file], backend: backend)
        let unet = I2VGenXLUNet(config: config, weights: weights)
        try weights.finish()
        return unet
    }

    func checkAgainstDiffusers(_ name: String) throws {
        let cpu = CPUBackend()
        let unet = try load(name, on: cpu)
        let reference = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("unet/\(name)/reference.safetensors").path)
        let out = unet(try reference.tensor("sample"), timestep: Int(reference.metadata["timestep"]!)!, fps: Int(reference.metadata["fps"]!)!,
                       textEmbeddings: try reference.tensor("text_embeddings"), imageLatents: try reference.tensor("image_latents"),
                       imageEmbeddings: try reference.tensor("image_embeddings"), cpu)
        let expected = try reference.tensor("out")
        XCTAssertEqual(out.shape, expected.shape)
        let maxError = zip(out.floats(), expected.floats()).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThan(maxError, 1e-4, "\(name): max abs error \(maxError)")
    }

    func testTinyUNetMatchesDiffusers() throws { try checkAgainstDiffusers("tiny") }

    func testThreeLevelUNetWithOddLatentSizeMatchesDiffusers() throws { try checkAgainstDiffusers("three_levels") }

    func testReleasedConfigDryRunsOnTheMetaBackend() throws {
        let config = try I2VGenXLUNetConfig(contentsOf: Self.fixtures.appendingPathComponent("released/unet_config.json").path)
        XCTAssertEqual(config.blockOutChannels, [320, 640, 1280, 1280])
        XCTAssertEqual(config.attentionHeadDim, 64)
        let meta = CPUBackend().metaTwin()
        let weights = WeightReader(shapesOnlyFor: "unet", backend: meta)
        let unet = I2VGenXLUNet(config: config, weights: weights)
        try weights.finish()
        // 1,420,469,224 parameters in f32 (I2VGEN_XL.md §1.10).
        XCTAssertEqual(meta.allocator.meter.current, 1_420_469_224 * 4)
        let latents = meta.empty([2, 4, 2, 8, 8])
        let out = unet(latents, timestep: 981, fps: 16, textEmbeddings: meta.empty([2, 77, 1024]), imageLatents: latents,
                       imageEmbeddings: meta.empty([2, 1024]), meta)
        XCTAssertEqual(out.shape, [2, 4, 2, 8, 8])
        XCTAssertGreaterThan(meta.allocator.meter.peak, 1_420_469_224 * 4)
    }

    func testMissingExtraAndMisshapedWeightsAreAllListed() throws {
        let folder = Self.fixtures.appendingPathComponent("unet/tiny")
        let original = try SafeTensorsFile(path: folder.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        var tensors: [String: Tensor] = [:]
        for name in original.names where name != "conv_in.bias" { tensors[name] = try original.tensor(name) }
        let cpu = CPUBackend()
        tensors["conv_out.weight"] = cpu.tensor([Float](repeating: 0.5, count: 4 * 4 * 3 * 2), shape: [4, 4, 3, 2])
        tensors["extra.weight"] = cpu.tensor([1, 2], shape: [2])
        let broken = FileManager.default.temporaryDirectory.appendingPathComponent("broken-unet-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: broken) }
        try SafeTensorsWriter.write(tensors, to: broken.path)
        let config = try I2VGenXLUNetConfig(contentsOf: folder.appendingPathComponent("config.json").path)
        let weights = try WeightReader(component: "unet", files: [try SafeTensorsFile(path: broken.path)], backend: cpu)
        _ = I2VGenXLUNet(config: config, weights: weights)
        XCTAssertThrowsError(try weights.finish()) { error in
            let e = error as! WeightError
            XCTAssertEqual(e.missing, ["conv_in.bias"])
            XCTAssertEqual(e.unexpected, ["extra.weight"])
            XCTAssertEqual(e.misshaped, ["conv_out.weight expected [4, 4, 3, 3], found [4, 4, 3, 2]"])
            XCTAssertTrue(e.description.contains("missing keys (1): conv_in.bias"))
        }
    }

    func testConfigErrorsNameTheFileAndField() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bad-unet-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: path) }
        try Data(#"{"block_out_channels": [32, "wide"], "layers_per_block": 2.0, "sample_size": null, "unknown": 1}"#.utf8).write(to: path)
        XCTAssertThrowsError(try I2VGenXLUNetConfig(contentsOf: path.path)) { error in
            XCTAssertTrue("\(error)".hasPrefix("\(path.path): block_out_channels must be a list of integers"), "\(error)")
        }
        try Data(#"{"layers_per_block": 1.0, "sample_size": null, "unknown": 1, "norm_num_groups": 32}"#.utf8).write(to: path)
        let config = try I2VGenXLUNetConfig(contentsOf: path.path)
        XCTAssertEqual(config.layersPerBlock, 1)
        XCTAssertNil(config.sampleSize)
    }
}
