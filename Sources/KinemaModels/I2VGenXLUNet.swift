import KinemaCore

/// diffusers `I2VGenXLUNet`: a 3-D UNet over (B, 4, F, h, w) latents, conditioned on the
/// timestep and fps, on context tokens (text, first-frame latent, CLIP image tokens) and on the
/// image latents concatenated to its input after a per-pixel temporal encoder.
public struct I2VGenXLUNet {
    public let config: I2VGenXLUNetConfig
    let convIn: Conv2d
    let transformerIn: TransformerTemporalModel
    let imageLatentsProjIn: [Conv2d]
    let imageLatentsTemporalEncoder: TemporalEncoder
    let imageLatentsContextEmbedding: [Conv2d]
    let timeEmbedding: (Linear, Linear)
    let fpsEmbedding: (Linear, Linear)
    let contextEmbedding: (Linear, Linear)
    /// The blocks, resident; empty (and `midBlock` nil) when their weights are streamed.
    let downBlocks: [DownBlock3D]
    let midBlock: MidBlock3D?
    let upBlocks: [UpBlock3D]
    /// A fresh reader of the blocks' weights, when they are streamed: each block is built (its
    /// weights read onto the device) when the call reaches it and dropped after.
    let blockWeights: (() -> WeightReader)?
    let convNormOut: GroupNorm
    let convOut: Conv2d

    /// The per-pixel attention over frames applied to the image latents (`I2VGenXLTransformerTemporalEncoder`).
    struct TemporalEncoder {
        let norm1: LayerNorm, attn1: Attention, ffIn: Linear, ffOut: Linear

        /// x (N, F, C) → same shape. No norm before the feed-forward, exact GELU inside it.
        func callAsFunction(_ x: Tensor, _ b: Backend) -> Tensor {
            let h = b.add(attn1(norm1(x, b), b), x)
            return b.add(ffOut(b.gelu(ffIn(h, b)), b), h)
        }
    }

    /// The UNet with every weight resident, or, with `streamingBlocks`, with only the weights
    /// outside `down_blocks`, `mid_block` and `up_blocks` read from `w` (which must ignore the
    /// blocks' keys) and the blocks read from a fresh `streamingBlocks()` reader at every call.
    public init(config: I2VGenXLUNetConfig, weights w: WeightReader, streamingBlocks: (() -> WeightReader)? = nil) {
        self.config = config
        let c0 = config.blockOutChannels[0], temb = config.timeEmbeddingDim, inC = config.inChannels
        let cross = config.crossAttentionDim, groups = config.normNumGroups
        convIn = Conv2d(w, "conv_in", 2 * inC, c0, kernel: 3)
        // transformer_in has 8 heads of `attention_head_dim` (diffusers passes it as the head dim).
        transformerIn = TransformerTemporalModel(w, "transformer_in", channels: c0, heads: 8, headDim: config.attentionHeadDim, groups: groups)
        imageLatentsProjIn = [
            Conv2d(w, "image_latents_proj_in.0", 4, inC * 4, kernel: 3),
            Conv2d(w, "image_latents_proj_in.2", inC * 4, inC * 4, kernel: 3),
            Conv2d(w, "image_latents_proj_in.4", inC * 4, inC, kernel: 3),
        ]
        imageLatentsTemporalEncoder = TemporalEncoder(
            norm1: LayerNorm(w, "image_latents_temporal_encoder.norm1", inC),
            attn1: Attention(w, "image_latents_temporal_encoder.attn1", queryDim: inC, heads: 2, headDim: inC),
            ffIn: Linear(w, "image_latents_temporal_encoder.ff.net.0.proj", inC, inC * 4),
            ffOut: Linear(w, "image_latents_temporal_encoder.ff.net.2", inC * 4, inC))
        imageLatentsContextEmbedding = [
            Conv2d(w, "image_latents_context_embedding.0", 4, inC * 8, kernel: 3),
            Conv2d(w, "image_latents_context_embedding.3", inC * 8, inC * 16, kernel: 3, stride: 2, padding: 1),
            Conv2d(w, "image_latents_context_embedding.5", inC * 16, cross, kernel: 3, stride: 2, padding: 1),
        ]
        timeEmbedding = (Linear(w, "time_embedding.linear_1", c0, temb), Linear(w, "time_embedding.linear_2", temb, temb))
        fpsEmbedding = (Linear(w, "fps_embedding.0", c0, temb), Linear(w, "fps_embedding.2", temb, temb))
        contextEmbedding = (Linear(w, "context_embedding.0", cross, temb), Linear(w, "context_embedding.2", temb, cross * inC))

        blockWeights = streamingBlocks
        if streamingBlocks == nil {
            downBlocks = config.blockOutChannels.indices.map { Self.downBlock($0, w, config) }
            midBlock = Self.midBlock(w, config)
            upBlocks = config.blockOutChannels.indices.map { Self.upBlock($0, w, config) }
        } else {
            (downBlocks, midBlock, upBlocks) = ([], nil, [])
        }
        convNormOut = GroupNorm(w, "conv_norm_out", groups: groups, channels: c0, epsilon: 1e-5)
        convOut = Conv2d(w, "conv_out", c0, config.outChannels, kernel: 3)
    }

    static func downBlock(_ i: Int, _ w: WeightReader, _ config: I2VGenXLUNetConfig) -> DownBlock3D {
        let channels = config.blockOutChannels, last = channels.count - 1
        return DownBlock3D(w, index: i, inputs: i == 0 ? channels[0] : channels[i - 1], outputs: channels[i], config: config,
                           crossAttention: config.downBlockTypes[i] == "CrossAttnDownBlock3D", downsample: i != last)
    }

    static func midBlock(_ w: WeightReader, _ config: I2VGenXLUNetConfig) -> MidBlock3D {
        MidBlock3D(w, channels: config.blockOutChannels[config.blockOutChannels.count - 1], config: config)
    }

    static func upBlock(_ i: Int, _ w: WeightReader, _ config: I2VGenXLUNetConfig) -> UpBlock3D {
        let reversed = Array(config.blockOutChannels.reversed()), last = reversed.count - 1
        return UpBlock3D(w, index: i, inputs: reversed[min(i + 1, last)], outputs: reversed[i],
                         previousOutputs: i == 0 ? reversed[0] : reversed[i - 1], config: config,
                         crossAttention: config.upBlockTypes[i] == "CrossAttnUpBlock3D", upsample: i != last)
    }

    /// Whether a checkpoint key belongs to one of the blocks that streaming reads at each call.
    public static func isBlockKey(_ key: String) -> Bool {
        key.hasPrefix("down_blocks.") || key.hasPrefix("mid_block.") || key.hasPrefix("up_blocks.")
    }

    /// Repeats each row of (B, …) `times` times in place: torch's `repeat_interleave(times, dim=0)`.
    static func repeatRows(_ x: Tensor, _ times: Int, _ b: Backend) -> Tensor {
        let rows = x.shape[0], rest = Array(x.shape.dropFirst())
        let one = x.reshaped([rows, 1] + rest)
        return b.concat(Array(repeating: one, count: times), axis: 1).reshaped([rows * times] + rest)
    }

    /// The sinusoid of diffusers' `Timesteps(C, flip_sin_to_cos=True, 0)` through a two-layer MLP.
    func embed(_ value: Int, rows: Int, _ mlp: (Linear, Linear), _ b: Backend) -> Tensor {
        let sinusoid = b.timestepEmbedding(Array(repeating: Float(value), count: rows),
                                           parameters: .init(dimension: config.blockOutChannels[0], flipSinToCos: true, downscaleFreqShift: 0))
        return mlp.1(b.silu(mlp.0(sinusoid, b)), b)
    }

    /// One denoising prediction.
    /// - Parameters:
    ///   - sample: noisy latents (B, 4, F, h, w)
    ///   - timestep: the DDIM timestep
    ///   - fps: the target fps (an integer, as diffusers passes it)
    ///   - textEmbeddings: (B, 77, cross_attention_dim)
    ///   - imageLatents: (B, 4, F, h, w): the VAE latent of the image in frame 0, the frame mask after
    ///   - imageEmbeddings: (B, cross_attention_dim) CLIP image embeddings (zeros for the unconditional half)
    ///   - splits: parts the transformer and resnet activations are computed in (see `UNetConditioning.splits`)
    ///   - tokenMerge: share of tokens merged in the full-resolution spatial self-attentions (lossy; nil: none)
    /// - Returns: the model output (B, 4, F, h, w)
    public func callAsFunction(_ sample: Tensor, timestep: Int, fps: Int, textEmbeddings: Tensor,
                               imageLatents: Tensor, imageEmbeddings: Tensor, splits: Int = 1, tokenMerge: Double? = nil,
                               _ b: Backend) -> Tensor {
        let (batch, channels, frames, h, w) = (sample.shape[0], sample.shape[1], sample.shape[2], sample.shape[3], sample.shape[4])
        let cross = config.crossAttentionDim, inC = config.inChannels
        let conditioning: UNetConditioning
        do {
            let emb = b.add(embed(timestep, rows: batch, timeEmbedding, b), embed(fps, rows: batch, fpsEmbedding, b))
            let activated = b.silu(Self.repeatRows(emb, frames, b))

            // First-frame latent tokens: (B, 4, F, h, w) -> (F, B, 4, h, w), frame 0.
            let firstFrame = b.permute(imageLatents, [2, 0, 1, 3, 4]).slice(0..<1).reshaped([batch, inC, h, w])
            var pooled = b.silu(imageLatentsContextEmbedding[0](firstFrame, b))
            pooled = b.adaptiveAveragePool(pooled, height: 32, width: 32)
            pooled = imageLatentsContextEmbedding[2](b.silu(imageLatentsContextEmbedding[1](pooled, b)), b)
            // (B, cross, 8, 8) -> (B, 64, cross)
            let latentTokens = b.permute(pooled.reshaped([batch, cross, pooled.shape[2] * pooled.shape[3]]), [0, 2, 1])
            let imageTokens = contextEmbedding.1(b.silu(contextEmbedding.0(imageEmbeddings, b)), b).reshaped([batch, inC, cross])
            let context = b.concat([textEmbeddings, latentTokens, imageTokens], axis: 1)
            conditioning = UNetConditioning(activatedEmbedding: activated, context: Self.repeatRows(context, frames, b), frames: frames,
                                            splits: max(1, splits), tokenMerge: tokenMerge, latentSize: (h, w))
        }

        var x: Tensor
        do {
            // Image latents, per frame: (B, 4, F, h, w) -> (B·F, 4, h, w).
            var latents = b.permute(imageLatents, [0, 2, 1, 3, 4]).reshaped([batch * frames, inC, h, w])
            latents = b.silu(imageLatentsProjIn[0](latents, b))
            latents = b.silu(imageLatentsProjIn[1](latents, b))
            latents = imageLatentsProjIn[2](latents, b)
            // (B, F, 4, h, w) -> (B, h, w, F, 4) -> (B·h·w, F, 4): every pixel a sequence of frames.
            var sequences = b.permute(latents.reshaped([batch, frames, inC, h, w]), [0, 3, 4, 1, 2]).reshaped([batch * h * w, frames, inC])
            sequences = imageLatentsTemporalEncoder(sequences, b)
            // (B, h, w, F, 4) -> (B, F, 4, h, w) = (B·F, 4, h, w)
            let encoded = b.permute(sequences.reshaped([batch, h, w, frames, inC]), [0, 3, 4, 1, 2]).reshaped([batch * frames, inC, h, w])
            let noisy = b.permute(sample, [0, 2, 1, 3, 4]).reshaped([batch * frames, channels, h, w])
            x = convIn(b.concat([noisy, encoded], axis: 1), b)
        }
        x = transformerIn(x, frames: frames, splits: conditioning.splits, b)

        var skips = [x]
        let levels = config.blockOutChannels.indices
        for i in levels {
            // A streamed block's weights live only while it runs.
            let block = blockWeights.map { Self.downBlock(i, $0(), config) } ?? downBlocks[i]
            let (out, blockSkips) = block(x, conditioning, b)
            x = out
            skips += blockSkips
        }
        x = (blockWeights.map { Self.midBlock($0(), config) } ?? midBlock!)(x, conditioning, b)
        let scale = 1 << config.downsamplings
        let forwardSize = h % scale != 0 || w % scale != 0
        for i in levels {
            let block = blockWeights.map { Self.upBlock(i, $0(), config) } ?? upBlocks[i]
            let taken = Array(skips.suffix(block.layers.count))
            skips.removeLast(block.layers.count)
            let size = forwardSize && i != levels.count - 1 ? skips.last.map { ($0.shape[2], $0.shape[3]) } : nil
            x = block(x, skips: taken, conditioning, upsampleSize: size, b)
        }
        x = convOut(convNormOut(x, b, silu: true), b)
        // (B·F, 4, h, w) -> (B, 4, F, h, w)
        return b.permute(x.reshaped([batch, frames, config.outChannels, h, w]), [0, 2, 1, 3, 4])
    }
}
