// The config.json of transformers' CLIPTextModel and CLIPVisionModelWithProjection (5.24, and the
// transformers 4 files the released checkpoint ships), read as tolerantly as transformers reads them.
import Foundation

/// A CLIP `config.json` that cannot be used: a `ConfigError` naming the file, the key and what was expected.
public typealias CLIPConfigError = ConfigError

/// The activation of CLIP's MLP (`hidden_act`). transformers accepts more names; Kinema supports
/// these two and rejects the others when the config is read.
public enum CLIPActivation: String, Sendable, CaseIterable {
    /// Exact GELU with erf (transformers' "gelu"), as the released OpenCLIP ViT-H towers use.
    case gelu
    /// `x · sigmoid(1.702 x)` (transformers' "quick_gelu"), transformers' default for both towers.
    case quickGelu = "quick_gelu"
}

/// transformers' `CLIPTextConfig`: every field the text tower's shape depends on, with
/// transformers' defaults (the openai/clip-vit-base-patch32 text tower).
public struct CLIPTextConfig: Sendable, Equatable {
    /// `vocab_size`: rows of the token embedding.
    public var vocabSize: Int
    /// `hidden_size`: the width of every token.
    public var hiddenSize: Int
    /// `intermediate_size`: the width of the MLP between fc1 and fc2.
    public var intermediateSize: Int
    /// `projection_dim`: the width of CLIPTextModelWithProjection's projection (unused by CLIPTextModel).
    public var projectionDim: Int
    /// `num_hidden_layers`: encoder layers.
    public var numHiddenLayers: Int
    /// `num_attention_heads`: heads per attention; `hiddenSize` is a multiple of it.
    public var numAttentionHeads: Int
    /// `max_position_embeddings`: rows of the position embedding, the longest token sequence.
    public var maxPositionEmbeddings: Int
    /// `hidden_act`.
    public var hiddenAct: CLIPActivation
    /// `layer_norm_eps`: epsilon of every LayerNorm.
    public var layerNormEps: Double

    /// A configuration with transformers' defaults for every field not given.
    public init(vocabSize: Int = 49408, hiddenSize: Int = 512, intermediateSize: Int = 2048, projectionDim: Int = 512,
                numHiddenLayers: Int = 12, numAttentionHeads: Int = 8, maxPositionEmbeddings: Int = 77,
                hiddenAct: CLIPActivation = .quickGelu, layerNormEps: Double = 1e-5) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.projectionDim = projectionDim
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.hiddenAct = hiddenAct
        self.layerNormEps = layerNormEps
    }

    /// Parses a text encoder's `config.json`. Unknown keys (`dtype`, `torch_dtype`, token ids, …)
    /// are ignored and absent or null keys take transformers' defaults; a value of the wrong type,
    /// an unsupported `hidden_act` or sizes that cannot build a model are errors naming the key.
    public init(json: Data, source: String = "text config") throws {
        let keys = try ConfigFile.Reader(json: json, source: source)
        try keys.checkModelType("clip_text_model")
        self.init()
        if let value = try keys.size("vocab_size") { vocabSize = value }
        if let value = try keys.size("hidden_size") { hiddenSize = value }
        if let value = try keys.size("intermediate_size") { intermediateSize = value }
        if let value = try keys.size("projection_dim") { projectionDim = value }
        if let value = try keys.size("num_hidden_layers") { numHiddenLayers = value }
        if let value = try keys.size("num_attention_heads") { numAttentionHeads = value }
        if let value = try keys.size("max_position_embeddings") { maxPositionEmbeddings = value }
        if let value: CLIPActivation = try keys.choice("hidden_act", supportedBy: "Kinema's CLIP") { hiddenAct = value }
        if let value = try keys.epsilon("layer_norm_eps") { layerNormEps = value }
        try keys.checkHeads(hiddenSize: hiddenSize, heads: numAttentionHeads)
    }

    /// Reads and parses the text encoder's `config.json` at `path`.
    public init(contentsOf path: String) throws {
        try self.init(json: ConfigFile.data(at: path), source: path)
    }
}

/// transformers' `CLIPVisionConfig`: every field the vision tower's shape depends on, with
/// transformers' defaults (the openai/clip-vit-base-patch32 vision tower).
public struct CLIPVisionConfig: Sendable, Equatable {
    /// `hidden_size`: the width of every token.
    public var hiddenSize: Int
    /// `intermediate_size`: the width of the MLP between fc1 and fc2.
    public var intermediateSize: Int
    /// `projection_dim`: the width of `visual_projection`'s output, the image embedding.
    public var projectionDim: Int
    /// `num_hidden_layers`: encoder layers.
    public var numHiddenLayers: Int
    /// `num_attention_heads`: heads per attention; `hiddenSize` is a multiple of it.
    public var numAttentionHeads: Int
    /// `num_channels`: channels of the input pixels.
    public var numChannels: Int
    /// `image_size`: the height and width of the input pixels.
    public var imageSize: Int
    /// `patch_size`: the height and width of one patch (the patch convolution's kernel and stride).
    public var patchSize: Int
    /// `hidden_act`.
    public var hiddenAct: CLIPActivation
    /// `layer_norm_eps`: epsilon of every LayerNorm.
    public var layerNormEps: Double

    /// A configuration with transformers' defaults for every field not given.
    public init(hiddenSize: Int = 768, intermediateSize: Int = 3072, projectionDim: Int = 512, numHiddenLayers: Int = 12,
                numAttentionHeads: Int = 12, numChannels: Int = 3, imageSize: Int = 224, patchSize: Int = 32,
                hiddenAct: CLIPActivation = .quickGelu, layerNormEps: Double = 1e-5) {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.projectionDim = projectionDim
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numChannels = numChannels
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.hiddenAct = hiddenAct
        self.layerNormEps = layerNormEps
    }

    /// Patches along each side: transformers' `image_size // patch_size` (the stride-`patchSize`
    /// convolution drops a remainder).
    public var patchesPerSide: Int { imageSize / patchSize }

    /// Tokens per image: one per patch plus the class token.
    public var numPositions: Int { patchesPerSide * patchesPerSide + 1 }

    /// Parses an image encoder's `config.json`. Unknown keys are ignored and absent or null keys
    /// take transformers' defaults; a value of the wrong type, an unsupported `hidden_act` or sizes
    /// that cannot build a model are errors naming the key.
    public init(json: Data, source: String = "vision config") throws {
        let keys = try ConfigFile.Reader(json: json, source: source)
        try keys.checkModelType("clip_vision_model")
        self.init()
        if let value = try keys.size("hidden_size") { hiddenSize = value }
        if let value = try keys.size("intermediate_size") { intermediateSize = value }
        if let value = try keys.size("projection_dim") { projectionDim = value }
        if let value = try keys.size("num_hidden_layers") { numHiddenLayers = value }
        if let value = try keys.size("num_attention_heads") { numAttentionHeads = value }
        if let value = try keys.size("num_channels") { numChannels = value }
        if let value = try keys.size("image_size") { imageSize = value }
        if let value = try keys.size("patch_size") { patchSize = value }
        if let value: CLIPActivation = try keys.choice("hidden_act", supportedBy: "Kinema's CLIP") { hiddenAct = value }
        if let value = try keys.epsilon("layer_norm_eps") { layerNormEps = value }
        try keys.checkHeads(hiddenSize: hiddenSize, heads: numAttentionHeads)
        guard patchSize <= imageSize else {
            throw keys.error("patch_size \(patchSize) is larger than image_size \(imageSize)")
        }
    }

    /// Reads and parses the image encoder's `config.json` at `path`.
    public init(contentsOf path: String) throws {
        try self.init(json: ConfigFile.data(at: path), source: path)
    }
}

/// The checks and value kinds of CLIP configs on top of the common ones.
private extension ConfigFile.Reader {
    /// A `model_type` other than `expected` means the file is another model's config.
    func checkModelType(_ expected: String) throws {
        if let found = try string("model_type"), found != expected {
            throw error("model_type is \"\(found)\", expected \"\(expected)\"; is this the other tower's config?")
        }
    }

    /// A positive integer (an integral float such as 24.0 counts, as Python's int() would take it).
    func size(_ key: String) throws -> Int? {
        guard value(key) != nil else { return nil }
        guard let size = try? int(key), size > 0 else { throw wrong(key, "a positive integer") }
        return size
    }

    func epsilon(_ key: String) throws -> Double? {
        guard value(key) != nil else { return nil }
        guard let epsilon = try? double(key), epsilon > 0 && epsilon.isFinite else {
            throw wrong(key, "a positive number")
        }
        return epsilon
    }

    /// transformers' own check: the heads split the hidden width evenly.
    func checkHeads(hiddenSize: Int, heads: Int) throws {
        guard hiddenSize % heads == 0 else {
            throw error("hidden_size \(hiddenSize) is not a multiple of num_attention_heads \(heads)")
        }
    }
}
