// The VAE's mid block (diffusers `UNetMidBlock2D` with `temb_channels=None`) and the spatial
// self-attention inside it (diffusers `Attention` with `group_norm`, `residual_connection=True`,
// run by `AttnProcessor2_0`).
import KinemaCore

/// Single-image self-attention over all pixels, with a GroupNorm in front and the input added back:
/// `x + to_out(attention(to_q(n), to_k(n), to_v(n)))` where `n = GN(x)` as tokens (N, H·W, C).
struct VAEAttention {
    let groupNorm: GroupNorm
    let toQ: Linear, toK: Linear, toV: Linear, toOut: Linear
    let heads: Int

    /// `heads = channels / attention_head_dim`; the VAE passes `attention_head_dim = channels`,
    /// so one head of width `channels` and scale 1/√channels.
    init(_ w: WeightReader, _ key: String, channels: Int, groups: Int, heads: Int = 1) {
        groupNorm = GroupNorm(w, "\(key).group_norm", groups: groups, channels: channels, epsilon: 1e-6)
        toQ = Linear(w, "\(key).to_q", channels, channels)
        toK = Linear(w, "\(key).to_k", channels, channels)
        toV = Linear(w, "\(key).to_v", channels, channels)
        toOut = Linear(w, "\(key).to_out.0", channels, channels)
        self.heads = heads
    }

    /// x (N, C, H, W) → (N, C, H, W).
    func callAsFunction(_ x: Tensor, _ b: Backend) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        // diffusers normalises the (N, C, H·W) view: the same statistics as on (N, C, H, W).
        let normalized = b.permute(groupNorm(x, b), [0, 2, 3, 1]).reshaped([n, h * w, c])  // (N, C, H, W) -> (N, H·W, C)
        var attended = b.attention(query: toQ(normalized, b), key: toK(normalized, b), value: toV(normalized, b), heads: heads)
        attended = toOut(attended, b)
        let image = b.permute(attended.reshaped([n, h, w, c]), [0, 3, 1, 2])  // (N, H·W, C) -> (N, C, H, W)
        // rescale_output_factor is 1 in the VAE, so diffusers' division after the residual is exact.
        return b.add(image, x)
    }
}

/// resnet → attention (unless `mid_block_add_attention` is false) → resnet, all at one width.
struct VAEMidBlock {
    let resnets: [ResnetBlock2D]
    let attention: VAEAttention?

    init(_ w: WeightReader, _ key: String, channels: Int, groups: Int, addAttention: Bool) {
        let first = ResnetBlock2D(w, "\(key).resnets.0", inputs: channels, outputs: channels, groups: groups,
                                  epsilon: 1e-6, timeEmbeddingDim: nil)
        attention = addAttention ? VAEAttention(w, "\(key).attentions.0", channels: channels, groups: groups) : nil
        let second = ResnetBlock2D(w, "\(key).resnets.1", inputs: channels, outputs: channels, groups: groups,
                                   epsilon: 1e-6, timeEmbeddingDim: nil)
        resnets = [first, second]
    }

    /// x (N, C, H, W) → (N, C, H, W).
    func callAsFunction(_ x: Tensor, _ b: Backend) -> Tensor {
        var hidden = resnets[0](x, activatedEmbedding: nil, b)
        if let attention { hidden = attention(hidden, b) }
        return resnets[1](hidden, activatedEmbedding: nil, b)
    }
}

/// The resnets of a VAE down or up block: no time embedding, eps 1e-6, the first one changing
/// the channel count.
struct VAEResnets {
    let resnets: [ResnetBlock2D]

    init(_ w: WeightReader, _ key: String, inputs: Int, outputs: Int, layers: Int, groups: Int) {
        resnets = (0..<layers).map { j in
            ResnetBlock2D(w, "\(key).resnets.\(j)", inputs: j == 0 ? inputs : outputs, outputs: outputs, groups: groups,
                          epsilon: 1e-6, timeEmbeddingDim: nil)
        }
    }

    func callAsFunction(_ x: Tensor, _ b: Backend) -> Tensor {
        resnets.reduce(x) { hidden, resnet in resnet(hidden, activatedEmbedding: nil, b) }
    }
}
