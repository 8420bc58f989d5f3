// transformers' CLIPTextModel (modeling_clip.py, 5.24) as I2VGen-XL's `encode_prompt` uses it.
import KinemaCore

/// transformers' CLIPTextModel: token and position embeddings, pre-LN encoder layers with a causal
/// mask, `final_layer_norm`. Weights use the released checkpoint's keys (`text_model.…`); readers
/// made by `weightReader(files:backend:)` also find transformers 5's flattened keys.
public struct CLIPTextModel {
    /// The configuration the model was built from.
    public let config: CLIPTextConfig
    /// `text_model.embeddings.token_embedding.weight` (vocab, hidden).
    let tokenEmbedding: Tensor
    /// `text_model.embeddings.position_embedding.weight` (positions, hidden).
    let positionEmbedding: Tensor
    /// `text_model.encoder.layers`.
    let layers: [CLIPEncoderLayer]
    /// `text_model.final_layer_norm`.
    let finalLayerNorm: LayerNorm

    /// Builds the model from `weights`; call `weights.finish()` afterwards to learn of missing,
    /// unexpected or mis-shaped keys.
    public init(config: CLIPTextConfig, weights w: WeightReader) {
        self.config = config
        tokenEmbedding = w("text_model.embeddings.token_embedding.weight", [config.vocabSize, config.hiddenSize])
        positionEmbedding = w("text_model.embeddings.position_embedding.weight", [config.maxPositionEmbeddings, config.hiddenSize])
        // The pipeline never runs the last layer, but the checkpoint holds it and loading is strict,
        // so it is loaded (and resident) like the others.
        layers = (0..<config.numHiddenLayers).map { i in
            CLIPEncoderLayer(w, "text_model.encoder.layers.\(i)", hiddenSize: config.hiddenSize,
                             intermediateSize: config.intermediateSize, heads: config.numAttentionHeads,
                             activation: config.hiddenAct, epsilon: Float(config.layerNormEps))
        }
        finalLayerNorm = LayerNorm(w, "text_model.final_layer_norm", config.hiddenSize, epsilon: Float(config.layerNormEps))
    }

    /// The pipeline's prompt embeddings (`clip_skip=1`): `final_layer_norm(hidden_states[-2])`, the
    /// output of every layer but the last, normalised → (B, L, hidden). `ids` holds B rows of L token
    /// ids each (L = 77 from the tokenizer); no padding mask is applied, as the pipeline passes none.
    public func promptEmbeddings(ids: [[Int]], _ b: Backend) -> Tensor {
        precondition(!ids.isEmpty, "promptEmbeddings: no prompts")
        let length = ids[0].count
        precondition(length > 0 && ids.allSatisfy { $0.count == length },
                     "promptEmbeddings: every prompt needs the same number of ids, got \(ids.map(\.count))")
        precondition(length <= config.maxPositionEmbeddings,
                     "promptEmbeddings: \(length) ids exceed max_position_embeddings \(config.maxPositionEmbeddings)")
        let tokens = b.embedding(ids: ids.flatMap { $0 }, table: tokenEmbedding)  // (B·L, hidden)
        var hidden = b.add(tokens.reshaped([ids.count, length, config.hiddenSize]), positionEmbedding.slice(0..<length))
        // hidden_states[-2] is the input of the last layer (hidden_states[0] is the embeddings).
        for layer in layers.dropLast() {
            hidden = layer(hidden, causal: true, b)
        }
        return finalLayerNorm(hidden, b)
    }

    /// A reader for a text encoder's safetensors files that accepts both key layouts: transformers 4
    /// (the released checkpoint) prefixes every key with `text_model.`, transformers 5 saves
    /// CLIPTextModel without it. A `position_ids` buffer (saved before transformers 4.31) is ignored.
    public static func weightReader(files: [SafeTensorsFile], backend: Backend,
                                    component: String = "text_encoder") throws -> WeightReader {
        try WeightReader(component: component, files: files, backend: backend,
                         aliases: { key in key.hasPrefix(prefix) ? [String(key.dropFirst(prefix.count))] : [] },
                         ignorable: { $0 == prefix + "embeddings.position_ids" || $0 == "embeddings.position_ids" })
    }

    private static let prefix = "text_model."
}
