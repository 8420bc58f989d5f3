import KinemaCore

/// One layer of a 3-D block: resnet → temporal conv → [spatial transformer → temporal
/// transformer] (the last two in cross-attention blocks only).
public struct UNet3DLayer {
    public let resnet: ResnetBlock2D
    public let tempConv: TemporalConvLayer
    public let attention: Transformer2DModel?
    public let tempAttention: TransformerTemporalModel?

    init(_ w: WeightReader, _ key: String, index: Int, inputs: Int, outputs: Int, config: I2VGenXLUNetConfig, crossAttention: Bool) {
        let groups = config.normNumGroups, temb = config.timeEmbeddingDim
        resnet = ResnetBlock2D(w, "\(key).resnets.\(index)", inputs: inputs, outputs: outputs, groups: groups, epsilon: 1e-5, timeEmbeddingDim: temb)
        tempConv = TemporalConvLayer(w, "\(key).temp_convs.\(index)", channels: outputs, groups: groups)
        if crossAttention {
            // diffusers passes `attention_head_dim` as the blocks' `num_attention_heads`, so a
            // block of C channels has C / attention_head_dim heads of attention_head_dim each.
            let headDim = config.attentionHeadDim, heads = outputs / headDim
            attention = Transformer2DModel(w, "\(key).attentions.\(index)", channels: outputs, heads: heads, headDim: headDim,
                                           groups: groups, contextDim: config.crossAttentionDim)
            tempAttention = TransformerTemporalModel(w, "\(key).temp_attentions.\(index)", channels: outputs, heads: heads,
                                                     headDim: headDim, groups: groups)
        } else {
            attention = nil
            tempAttention = nil
        }
    }

    func callAsFunction(_ x: Tensor, _ c: UNetConditioning, _ b: Backend) -> Tensor {
        var h = tempConv(c.spatial(x, b) { resnet($0, activatedEmbedding: $1.activatedEmbedding, b) }, frames: c.frames, b)
        if let attention, let tempAttention {
            let ratio = c.tokenMergeRatio(height: h.shape[2], width: h.shape[3])
            h = tempAttention(c.spatial(h, b) { attention($0, context: $1.context, tokenMergeRatio: ratio, b) },
                              frames: c.frames, splits: c.splits, b)
        }
        return h
    }
}

/// What every layer of one UNet call needs besides its input.
public struct UNetConditioning {
    /// SiLU(time + fps embedding), one row per frame: (B·F, time embedding dim).
    public let activatedEmbedding: Tensor
    /// Cross-attention tokens, one set per frame: (B·F, 145, cross attention dim).
    public let context: Tensor
    public let frames: Int
    /// Parts the activations of the transformer and resnet layers are computed in (1 = whole):
    /// spatial layers take 1/splits of the B·F frames at a time, temporal transformers 1/splits of
    /// the B·h·w pixel sequences.
    public let splits: Int
    /// Token merging on the spatial self-attentions at the UNet's full latent resolution (tomesd's
    /// default `max_downsample=1`): the share of tokens merged, nil for none (lossy).
    public let tokenMerge: Double?
    /// The latent (height, width) the UNet was called with.
    public let latentSize: (Int, Int)

    /// The merge ratio for a spatial transformer over `height`×`width`: only at full resolution.
    func tokenMergeRatio(height: Int, width: Int) -> Double? {
        guard let tokenMerge, tokenMerge > 0, (height, width) == latentSize else { return nil }
        return tokenMerge
    }

    /// Runs a spatial (per-frame) layer on `x` (B·F rows), in `splits` parts; `layer` gets the rows
    /// and the conditioning of those rows.
    func spatial(_ x: Tensor, _ b: Backend, _ layer: (Tensor, UNetConditioning) -> Tensor) -> Tensor {
        guard splits > 1 else { return layer(x, self) }
        return b.inRowChunks(x, parts: splits, op: "frame_chunk") { part, rows in
            layer(part, UNetConditioning(activatedEmbedding: activatedEmbedding.slice(rows), context: context.slice(rows),
                                         frames: frames, splits: 1, tokenMerge: tokenMerge, latentSize: latentSize))
        }
    }
}

/// `CrossAttnDownBlock3D` / `DownBlock3D`: layers, then an optional stride-2 conv.
public struct DownBlock3D {
    public let layers: [UNet3DLayer]
    public let downsampler: Conv2d?

    init(_ w: WeightReader, index: Int, inputs: Int, outputs: Int, config: I2VGenXLUNetConfig, crossAttention: Bool, downsample: Bool) {
        let key = "down_blocks.\(index)"
        layers = (0..<config.layersPerBlock).map {
            UNet3DLayer(w, key, index: $0, inputs: $0 == 0 ? inputs : outputs, outputs: outputs, config: config, crossAttention: crossAttention)
        }
        downsampler = downsample ? Conv2d(w, "\(key).downsamplers.0.conv", outputs, outputs, kernel: 3, stride: 2, padding: 1) : nil
    }

    /// Returns the output and the skips it adds (one per layer, one after the downsampler).
    func callAsFunction(_ x: Tensor, _ c: UNetConditioning, _ b: Backend) -> (Tensor, [Tensor]) {
        var h = x, skips: [Tensor] = []
        for layer in layers {
            h = layer(h, c, b)
            skips.append(h)
        }
        if let downsampler {
            h = downsampler(h, b)
            skips.append(h)
        }
        return (h, skips)
    }
}

/// `UNetMidBlock3DCrossAttn`: resnet → temporal conv, then per layer spatial transformer →
/// temporal transformer → resnet → temporal conv.
public struct MidBlock3D {
    public let first: UNet3DLayer
    public let attentions: [Transformer2DModel]
    public let tempAttentions: [TransformerTemporalModel]
    public let resnets: [ResnetBlock2D]
    public let tempConvs: [TemporalConvLayer]

    init(_ w: WeightReader, channels: Int, config: I2VGenXLUNetConfig) {
        let key = "mid_block", groups = config.normNumGroups
        first = UNet3DLayer(w, key, index: 0, inputs: channels, outputs: channels, config: config, crossAttention: false)
        let headDim = config.attentionHeadDim, heads = channels / headDim
        attentions = [Transformer2DModel(w, "\(key).attentions.0", channels: channels, heads: heads, headDim: headDim, groups: groups,
                                         contextDim: config.crossAttentionDim)]
        tempAttentions = [TransformerTemporalModel(w, "\(key).temp_attentions.0", channels: channels, heads: heads, headDim: headDim, groups: groups)]
        resnets = [ResnetBlock2D(w, "\(key).resnets.1", inputs: channels, outputs: channels, groups: groups, epsilon: 1e-5,
                                 timeEmbeddingDim: config.timeEmbeddingDim)]
        tempConvs = [TemporalConvLayer(w, "\(key).temp_convs.1", channels: channels, groups: groups)]
    }

    func callAsFunction(_ x: Tensor, _ c: UNetConditioning, _ b: Backend) -> Tensor {
        var h = first(x, c, b)
        for i in attentions.indices {
            h = tempAttentions[i](c.spatial(h, b) { attentions[i]($0, context: $1.context, b) }, frames: c.frames, splits: c.splits, b)
            h = tempConvs[i](c.spatial(h, b) { resnets[i]($0, activatedEmbedding: $1.activatedEmbedding, b) }, frames: c.frames, b)
        }
        return h
    }
}

/// `CrossAttnUpBlock3D` / `UpBlock3D`: each layer takes `cat([x, skip])` with skips consumed last
/// first, then an optional nearest upsample (×2, or to the next skip's size) and 3×3 conv.
public struct UpBlock3D {
    public let layers: [UNet3DLayer]
    public let upsampler: Conv2d?

    init(_ w: WeightReader, index: Int, inputs: Int, outputs: Int, previousOutputs: Int, config: I2VGenXLUNetConfig,
         crossAttention: Bool, upsample: Bool) {
        let key = "up_blocks.\(index)", count = config.layersPerBlock + 1
        layers = (0..<count).map { i in
            let skipChannels = i == count - 1 ? inputs : outputs
            let resnetInputs = i == 0 ? previousOutputs : outputs
            return UNet3DLayer(w, key, index: i, inputs: resnetInputs + skipChannels, outputs: outputs, config: config, crossAttention: crossAttention)
        }
        upsampler = upsample ? Conv2d(w, "\(key).upsamplers.0.conv", outputs, outputs, kernel: 3) : nil
    }

    /// `skips` are this block's skips in the order they were made; `upsampleSize` is the size of
    /// the next skip when the latent size is not a multiple of the total downscale.
    func callAsFunction(_ x: Tensor, skips: [Tensor], _ c: UNetConditioning, upsampleSize: (Int, Int)?, _ b: Backend) -> Tensor {
        var h = x
        for (layer, skip) in zip(layers, skips.reversed()) {
            h = layer(b.concat([h, skip], axis: 1), c, b)
        }
        if let upsampler {
            let (height, width) = upsampleSize ?? (h.shape[2] * 2, h.shape[3] * 2)
            h = upsampler(b.upsampleNearest(h, height: height, width: width), b)
        }
        return h
    }
}
