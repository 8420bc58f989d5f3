// transformers' CLIPVisionModelWithProjection (modeling_clip.py, 5.24) as I2VGen-XL's image
// embedding uses it.
import KinemaCore

/// transformers' CLIPVisionModelWithProjection: patch convolution, class token, position
/// embeddings, `pre_layrnorm`, pre-LN encoder layers without a mask, `post_layernorm` of the class
/// token, `visual_projection`. Weights use the checkpoint's keys (`vision_model.…`, `visual_projection`).
public struct CLIPVisionModelWithProjection {
    /// The configuration the model was built from.
    public let config: CLIPVisionConfig
    /// `vision_model.embeddings.class_embedding` (hidden).
    let classEmbedding: Tensor
    /// `vision_model.embeddings.patch_embedding`: kernel = stride = patch size, no padding, no bias.
    let patchEmbedding: Conv2d
    /// `vision_model.embeddings.position_embedding.weight` (1 + patches, hidden).
    let positionEmbedding: Tensor
    /// `vision_model.pre_layrnorm` (sic: the checkpoint's spelling).
    let preLayrnorm: LayerNorm
    /// `vision_model.encoder.layers`.
    let layers: [CLIPEncoderLayer]
    /// `vision_model.post_layernorm`.
    let postLayernorm: LayerNorm
    /// `visual_projection`, without bias.
    let visualProjection: Linear

    /// Builds the model from `weights`; call `weights.finish()` afterwards to learn of missing,
    /// unexpected or mis-shaped keys.
    public init(config: CLIPVisionConfig, weights w: WeightReader) {
        self.config = config
        let hidden = config.hiddenSize, epsilon = Float(config.layerNormEps)
        classEmbedding = w("vision_model.embeddings.class_embedding", [hidden])
        patchEmbedding = Conv2d(w, "vision_model.embeddings.patch_embedding", config.numChannels, hidden,
                                kernel: config.patchSize, stride: config.patchSize, padding: 0, bias: false)
        positionEmbedding = w("vision_model.embeddings.position_embedding.weight", [config.numPositions, hidden])
        preLayrnorm = LayerNorm(w, "vision_model.pre_layrnorm", hidden, epsilon: epsilon)
        layers = (0..<config.numHiddenLayers).map { i in
            CLIPEncoderLayer(w, "vision_model.encoder.layers.\(i)", hiddenSize: hidden,
                             intermediateSize: config.intermediateSize, heads: config.numAttentionHeads,
                             activation: config.hiddenAct, epsilon: epsilon)
        }
        postLayernorm = LayerNorm(w, "vision_model.post_layernorm", hidden, epsilon: epsilon)
        visualProjection = Linear(w, "visual_projection", hidden, config.projectionDim, bias: false)
    }

    /// `image_embeds` (B, projection_dim) = `visual_projection(post_layernorm(last_hidden[:, 0]))`,
    /// not L2-normalised. `pixels` (B, channels, image_size, image_size) are already normalised by
    /// the feature extractor; like transformers without `interpolate_pos_encoding`, no other size is
    /// accepted.
    public func imageEmbeddings(_ pixels: Tensor, _ b: Backend) -> Tensor {
        let side = config.imageSize, hidden = config.hiddenSize
        precondition(pixels.rank == 4 && pixels.shape[1] == config.numChannels && pixels.shape[2] == side && pixels.shape[3] == side,
                     "imageEmbeddings: pixels \(pixels.shape) do not match (B, \(config.numChannels), \(side), \(side))")
        let batch = pixels.shape[0]
        let input = pixels.dtype == b.computeType ? pixels : b.convert(pixels, to: b.computeType)
        let patches = patchEmbedding(input, b)  // (B, hidden, g, g)
        let grid = patches.shape[2] * patches.shape[3]
        let patchTokens = b.permute(patches.reshaped([batch, hidden, grid]), [0, 2, 1])  // (B, g·g, hidden)
        let classTokens = b.concat(Array(repeating: classEmbedding.reshaped([1, 1, hidden]), count: batch), axis: 0)  // (B, 1, hidden)
        var states = b.add(b.concat([classTokens, patchTokens], axis: 1), positionEmbedding)  // (B, 1 + g·g, hidden)
        states = preLayrnorm(states, b)
        for layer in layers {
            states = layer(states, causal: false, b)
        }
        // last_hidden[:, 0]: the class token of each image, (B, hidden).
        let classStates = b.concat((0..<batch).map { image in
            states.slice(image..<image + 1).reshaped([grid + 1, hidden]).slice(0..<1)
        }, axis: 0)
        return visualProjection(postLayernorm(classStates, b), b)
    }

    /// A reader for an image encoder's safetensors files; a `position_ids` buffer (saved before
    /// transformers 4.31) is ignored.
    public static func weightReader(files: [SafeTensorsFile], backend: Backend,
                                    component: String = "image_encoder") throws -> WeightReader {
        try WeightReader(component: component, files: files, backend: backend,
                         ignorable: { $0 == "vision_model.embeddings.position_ids" })
    }
}
