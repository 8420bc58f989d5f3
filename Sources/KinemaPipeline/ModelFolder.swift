import Foundation
import KinemaCore
import KinemaModels

/// A checked diffusers `I2VGenXLPipeline` folder whose models load one at a time, each when asked,
/// onto one backend. The host-side parts (tokenizer, scheduler, feature extractor settings) are
/// read once. Loading a component again gives a new copy: weights live as long as the model
/// value that holds them, which is how a plan keeps only the running phase's weights resident.
public struct ModelFolder {
    public let folder: String
    public let backend: Backend
    public let weights: I2VGenXLModel.WeightSource
    public let tokenizer: CLIPTokenizer
    public let scheduler: DDIMScheduler
    public let featureExtractor: FeatureExtractorConfig
    /// The dtype the models' linear and convolution weight matrices are kept in (nil: the compute type).
    public private(set) var matrixStorage: DType?

    public init(folder: String, backend: Backend, weights: I2VGenXLModel.WeightSource) throws {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelLoadError("model folder \(folder) does not exist")
        }
        guard fm.fileExists(atPath: (folder as NSString).appendingPathComponent("model_index.json")) else {
            throw ModelLoadError("\(folder) is not a diffusers model folder: it has no model_index.json")
        }
        self.folder = folder
        self.backend = backend
        self.weights = weights
        for name in ["tokenizer", "text_encoder", "image_encoder", "vae", "unet", "scheduler"] {
            guard fm.fileExists(atPath: Self.path(folder, name), isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ModelLoadError("\(folder): the \(name) component is missing (no folder \(Self.path(folder, name)))")
            }
        }
        do { tokenizer = try CLIPTokenizer(folder: Self.path(folder, "tokenizer")) } catch let error as TokenizerError {
            throw ModelLoadError("\(error)")
        }
        scheduler = try DDIMScheduler(config: try DDIMSchedulerConfig(contentsOf: Self.path(folder, "scheduler", "scheduler_config.json")))
        let featureConfig = Self.path(folder, "feature_extractor", "preprocessor_config.json")
        featureExtractor = fm.fileExists(atPath: featureConfig) ? try FeatureExtractorConfig(contentsOf: featureConfig) : FeatureExtractorConfig()
    }

    private init(rebinding other: ModelFolder, to backend: Backend, weights: I2VGenXLModel.WeightSource) {
        folder = other.folder
        self.backend = backend
        self.weights = weights
        tokenizer = other.tokenizer
        scheduler = other.scheduler
        featureExtractor = other.featureExtractor
    }

    /// The same folder loading onto another backend, without reading its host-side parts again.
    public func on(_ backend: Backend, weights: I2VGenXLModel.WeightSource) -> ModelFolder {
        var copy = ModelFolder(rebinding: self, to: backend, weights: weights)
        copy.matrixStorage = matrixStorage
        return copy
    }

    /// The same folder, its models keeping their weight matrices in `dtype` (nil: the compute type).
    public func storingMatrices(as dtype: DType?) -> ModelFolder {
        var copy = self
        copy.matrixStorage = dtype
        return copy
    }

    /// Whether keeping weight matrices in f16 changes no value: every UNet weight file in `folder`
    /// holds f16 tensors, or there are no weight files (planning from configs: the released
    /// checkpoints ship f16 files).
    public static func halfStorageIsLossless(folder: String) -> Bool {
        let unet = path(folder, "unet")
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: unet)) ?? []).filter { $0.hasSuffix(".safetensors") }
        return names.allSatisfy { name in
            guard let file = try? SafeTensorsFile(path: path(unet, name)) else { return false }
            return file.tensors.allSatisfy { $0.shape.count < 2 || $0.dtype == .f16 }
        }
    }

    /// A stable per-component offset of the random-weights seed.
    enum SeedOffset {
        static func of(_ text: String) -> UInt32 { text.utf8.reduce(2_166_136_261) { ($0 ^ UInt32($1)) &* 16_777_619 } }
    }

    static func path(_ folder: String, _ parts: String...) -> String { ([folder] + parts).joined(separator: "/") }

    /// A strict weight reader for one component, or a shapes-only one.
    private func reader(_ name: String, base: String, make: ([SafeTensorsFile]) throws -> WeightReader) throws -> WeightReader {
        let reader: WeightReader
        if case .files(let variant) = weights {
            let files = try I2VGenXLModel.weightFiles(in: Self.path(folder, name), base: base, variant: variant)
            reader = try make(try files.map { try SafeTensorsFile(path: $0) })
        } else if case .random(let seed) = weights {
            reader = WeightReader(randomFor: name, backend: backend, seed: seed &+ UInt64(SeedOffset.of(name)))
        } else {
            reader = WeightReader(shapesOnlyFor: name, backend: backend)
        }
        reader.matrixStorage = matrixStorage
        return reader
    }

    public func textEncoder() throws -> CLIPTextModel {
        let config = try CLIPTextConfig(contentsOf: Self.path(folder, "text_encoder", "config.json"))
        let w = try reader("text_encoder", base: "model") { try CLIPTextModel.weightReader(files: $0, backend: backend) }
        let model = CLIPTextModel(config: config, weights: w)
        try w.finish()
        return model
    }

    public func imageEncoder() throws -> CLIPVisionModelWithProjection {
        let config = try CLIPVisionConfig(contentsOf: Self.path(folder, "image_encoder", "config.json"))
        let w = try reader("image_encoder", base: "model") { try CLIPVisionModelWithProjection.weightReader(files: $0, backend: backend) }
        let model = CLIPVisionModelWithProjection(config: config, weights: w)
        try w.finish()
        return model
    }

    public func vae() throws -> AutoencoderKL {
        let config = try AutoencoderKLConfig(contentsOf: Self.path(folder, "vae", "config.json"))
        let w = try reader("vae", base: "diffusion_pytorch_model") {
            try WeightReader(component: "vae", files: $0, backend: backend, aliases: AutoencoderKL.weightKeyAliases)
        }
        let model = AutoencoderKL(config: config, weights: w)
        try w.finish()
        return model
    }

    /// The bytes of the UNet's weights by top-level block (`down_blocks.1`, `mid_block`, `up_blocks.0`,
    /// `conv_in`, …) as this folder's models keep them: the unit of memory no plan can split.
    public func unetBlockWeightBytes() throws -> [String: Int] {
        let config = try I2VGenXLUNetConfig(contentsOf: Self.path(folder, "unet", "config.json"))
        let w = WeightReader(shapesOnlyFor: "unet", backend: MetaBackend(emulating: backend.workspacePolicy, computeType: backend.computeType))
        w.matrixStorage = matrixStorage
        _ = I2VGenXLUNet(config: config, weights: w)
        var blocks: [String: Int] = [:]
        for (key, bytes) in w.bytesByKey {
            let parts = key.split(separator: ".")
            let block = parts[0] == "down_blocks" || parts[0] == "up_blocks" ? parts.prefix(2).joined(separator: ".") : String(parts[0])
            blocks[block, default: 0] += bytes
        }
        return blocks
    }

    public func unet() throws -> I2VGenXLUNet {
        let config = try I2VGenXLUNetConfig(contentsOf: Self.path(folder, "unet", "config.json"))
        let w = try reader("unet", base: "diffusion_pytorch_model") { try WeightReader(component: "unet", files: $0, backend: backend) }
        let model = I2VGenXLUNet(config: config, weights: w)
        try w.finish()
        return model
    }

    /// The UNet with its blocks' weights (`down_blocks`, `mid_block`, `up_blocks`) streamed: read
    /// onto the device when a call reaches each block and dropped after it; the rest resident.
    /// Every key is checked against the files here, before anything runs.
    public func unetStreamingBlocks() throws -> I2VGenXLUNet {
        let config = try I2VGenXLUNetConfig(contentsOf: Self.path(folder, "unet", "config.json"))
        var files: [SafeTensorsFile] = []
        if case .files(let variant) = weights {
            files = try I2VGenXLModel.weightFiles(in: Self.path(folder, "unet"), base: "diffusion_pytorch_model", variant: variant)
                .map { try SafeTensorsFile(path: $0) }
            // The whole model's keys and shapes, from a shapes-only build on a meta device.
            let expected = WeightReader(shapesOnlyFor: "unet", backend: MetaBackend(emulating: backend.workspacePolicy))
            _ = I2VGenXLUNet(config: config, weights: expected)
            let stored = Dictionary(files.flatMap(\.tensors).map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
            let missing = expected.shapesByKey.keys.filter { stored[$0] == nil }.sorted()
            let misshaped = expected.shapesByKey.compactMap { key, shape in
                stored[key].flatMap { $0 == shape ? nil : "\(key) expected \(shape), found \($0)" }
            }.sorted()
            let unexpected = stored.keys.filter { expected.shapesByKey[$0] == nil }.sorted()
            if !missing.isEmpty || !misshaped.isEmpty || !unexpected.isEmpty {
                var lines = ["unet: the weights do not match the model"]
                for (title, keys) in [("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", misshaped)] where !keys.isEmpty {
                    lines.append("  \(title) (\(keys.count)): " + keys.prefix(12).joined(separator: ", ") + (keys.count > 12 ? ", …" : ""))
                }
                throw ModelLoadError(lines.joined(separator: "\n"))
            }
        }
        let backend = backend, storage = matrixStorage, sources = files
        func blockReader() -> WeightReader {
            let w: WeightReader
            if sources.isEmpty {
                w = WeightReader(shapesOnlyFor: "unet", backend: backend)
            } else {
                // Keys were checked above; a block reads only its own.
                guard let reader = try? WeightReader(component: "unet", files: sources, backend: backend) else {
                    preconditionFailure("unet: weight files changed after they were checked")
                }
                w = reader
            }
            w.matrixStorage = storage
            return w
        }
        let resident = sources.isEmpty ? WeightReader(shapesOnlyFor: "unet", backend: backend)
            : try WeightReader(component: "unet", files: sources, backend: backend, ignorable: I2VGenXLUNet.isBlockKey)
        resident.matrixStorage = matrixStorage
        let model = I2VGenXLUNet(config: config, weights: resident, streamingBlocks: blockReader)
        try resident.finish()
        return model
    }
}
