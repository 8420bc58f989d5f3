// The VAE encoder: diffusers `autoencoders/vae.py::Encoder` with `DownEncoderBlock2D`s and their
// `Downsample2D(padding=0)`, images (N, in, H, W) → moments (N, 2·latent, H/f, W/f).
import KinemaCore

/// diffusers `Downsample2D(use_conv=True, padding=0)`: zero-pad right and bottom by one, then a 3×3
/// stride-2 convolution without padding (the `F.pad(x, (0, 1, 0, 1))` of diffusers, in one conv).
struct VAEDownsample {
    let conv: Conv2d

    init(_ w: WeightReader, _ key: String, channels: Int) {
        conv = Conv2d(w, "\(key).conv", channels, channels, kernel: 3,
                      parameters: Conv2dParameters(strideY: 2, strideX: 2, padTop: 0, padLeft: 0, padBottom: 1, padRight: 1))
    }

    /// x (N, C, H, W) → (N, C, ⌊(H − 2)/2⌋ + 1, ⌊(W − 2)/2⌋ + 1), i.e. H/2 × W/2 for even sizes.
    func callAsFunction(_ x: Tensor, _ b: Backend) -> Tensor { conv(x, b) }
}

/// diffusers `DownEncoderBlock2D`: resnets without time embedding, then an optional downsample.
struct DownEncoderBlock2D {
    let resnets: VAEResnets
    let downsampler: VAEDownsample?

    init(_ w: WeightReader, _ key: String, inputs: Int, outputs: Int, layers: Int, groups: Int, addDownsample: Bool) {
        resnets = VAEResnets(w, key, inputs: inputs, outputs: outputs, layers: layers, groups: groups)
        downsampler = addDownsample ? VAEDownsample(w, "\(key).downsamplers.0", channels: outputs) : nil
    }

    func callAsFunction(_ x: Tensor, _ b: Backend) -> Tensor {
        let hidden = resnets(x, b)
        return downsampler.map { $0(hidden, b) } ?? hidden
    }
}

/// `conv_in` → down blocks (every one but the last halves the size) → mid block →
/// GN → SiLU → `conv_out` to 2·latent channels (mean and log-variance).
struct VAEEncoder {
    let convIn: Conv2d
    let downBlocks: [DownEncoderBlock2D]
    let midBlock: VAEMidBlock
    let convNormOut: GroupNorm
    let convOut: Conv2d

    init(_ w: WeightReader, _ key: String, config: AutoencoderKLConfig) {
        let channels = config.blockOutChannels, groups = config.normNumGroups
        convIn = Conv2d(w, "\(key).conv_in", config.inChannels, channels[0], kernel: 3)
        downBlocks = channels.indices.map { i in
            DownEncoderBlock2D(w, "\(key).down_blocks.\(i)", inputs: channels[max(i - 1, 0)], outputs: channels[i],
                               layers: config.layersPerBlock, groups: groups, addDownsample: i < channels.count - 1)
        }
        midBlock = VAEMidBlock(w, "\(key).mid_block", channels: channels[channels.count - 1], groups: groups,
                               addAttention: config.midBlockAddAttention)
        convNormOut = GroupNorm(w, "\(key).conv_norm_out", groups: groups, channels: channels[channels.count - 1], epsilon: 1e-6)
        convOut = Conv2d(w, "\(key).conv_out", channels[channels.count - 1], 2 * config.latentChannels, kernel: 3)
    }

    /// images (N, in, H, W) → moments (N, 2·latent, H/f, W/f).
    func callAsFunction(_ images: Tensor, _ b: Backend) -> Tensor {
        var hidden = convIn(images, b)
        for block in downBlocks { hidden = block(hidden, b) }
        hidden = midBlock(hidden, b)
        return convOut(convNormOut(hidden, b, silu: true), b)
    }
}
