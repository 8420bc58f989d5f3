import Foundation
import KinemaCore
import KinemaModels

/// A model folder that could not be loaded: which path, what is wrong, what to do.
public struct ModelLoadError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The feature extractor settings the pipeline uses: the CLIP input size and normalisation.
public struct FeatureExtractorConfig: Sendable, Equatable {
    public var cropSize = 224
    public var mean: [Float] = [0.48145466, 0.4578275, 0.40821073]
    public var std: [Float] = [0.26862954, 0.26130258, 0.27577711]

    public init() {}

    /// Reads `preprocessor_config.json`; `crop_size` may be an integer or `{height, width}`.
    public init(contentsOf path: String) throws {
        guard let data = FileManager.default.contents(atPath: path),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelLoadError("\(path): cannot read it as a JSON object")
        }
        if let size = object["crop_size"] as? [String: Any] {
            guard let h = size["height"] as? Int, let w = size["width"] as? Int, h == w, h > 0 else {
                throw ModelLoadError("\(path): crop_size must be a positive square, found \(size)")
            }
            cropSize = h
        } else if let size = object["crop_size"] as? Int, size > 0 {
            cropSize = size
        }
        if let mean = object["image_mean"] as? [Double], mean.count == 3 { self.mean = mean.map(Float.init) }
        if let std = object["image_std"] as? [Double], std.count == 3 { self.std = std.map(Float.init) }
    }
}

/// Every component of a diffusers `I2VGenXLPipeline` folder, loaded onto one backend.
public struct I2VGenXLModel {
    public let folder: String
    public let tokenizer: CLIPTokenizer
    public let textEncoder: CLIPTextModel
    public let imageEncoder: CLIPVisionModelWithProjection
    public let featureExtractor: FeatureExtractorConfig
    public let vae: AutoencoderKL
    public let unet: I2VGenXLUNet
    public let scheduler: DDIMScheduler

    /// Where the weights come from.
    public enum WeightSource: Sendable, Equatable {
        /// The component folders' safetensors files; `variant` picks files such as
        /// `model.fp16.safetensors` (without it the plain files, or the only variant present).
        case files(variant: String?)
        /// No files: weights of the configs' shapes (for dry runs on the meta backend, and for
        /// planning from configs alone).
        case shapesOnly
        /// No files: weights of the configs' shapes filled with uniform random values of standard
        /// deviation 0.02 from `seed` (benchmarks of full-size models without a checkpoint: the
        /// cost is that of real weights, the pictures are noise).
        case random(seed: UInt64)
    }

    /// Loads `folder` (with `model_index.json`) onto `backend`. `variant` picks files such as
    /// `model.fp16.safetensors`; without it the plain files are used, or the only variant present.
    public static func load(folder: String, backend: Backend, variant: String? = nil) throws -> I2VGenXLModel {
        try load(folder: folder, backend: backend, weights: .files(variant: variant))
    }

    /// Loads `folder` onto `backend` with weights from `source`.
    public static func load(folder: String, backend: Backend, weights source: WeightSource) throws -> I2VGenXLModel {
        let components = try ModelFolder(folder: folder, backend: backend, weights: source)
        return I2VGenXLModel(folder: folder, tokenizer: components.tokenizer, textEncoder: try components.textEncoder(),
                             imageEncoder: try components.imageEncoder(), featureExtractor: components.featureExtractor,
                             vae: try components.vae(), unet: try components.unet(), scheduler: components.scheduler)
    }

    /// The safetensors files of one component: `base.safetensors` or its shards
    /// (`base-00001-of-00002.safetensors`), with `.variant` before the extension when asked.
    public static func weightFiles(in folder: String, base: String, variant: String?) throws -> [String] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
        func isVariant(_ name: String) -> Bool { name.split(separator: ".").count > 2 }
        func matches(_ name: String, _ variant: String?) -> Bool {
            guard name.hasPrefix(base) else { return false }
            if let variant { return name.contains(".\(variant).") || name.contains(".\(variant)-") }
            return !isVariant(name)
        }
        var chosen = names.filter { matches($0, variant) }
        if chosen.isEmpty && variant == nil {
            let variants = Set(names.filter { $0.hasPrefix(base) && isVariant($0) }.map { $0.split(separator: ".")[1] })
            if variants.count == 1, let only = variants.first { chosen = names.filter { matches($0, String(only)) } }
        }
        guard !chosen.isEmpty else {
            let found = names.isEmpty ? "no .safetensors files" : names.joined(separator: ", ")
            throw ModelLoadError("\(folder): no \(base)\(variant.map { ".\($0)" } ?? "").safetensors weights (found \(found))"
                                 + (variant == nil ? "" : "; run without --variant to use the plain files"))
        }
        return chosen.map { (folder as NSString).appendingPathComponent($0) }
    }
}
