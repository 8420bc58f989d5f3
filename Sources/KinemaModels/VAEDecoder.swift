// The VAE decoder: diffusers `autoencoders/vae.py::Decoder` (`norm_type="group"`) with
// `UpDecoderBlock2D`s and their `Upsample2D`, latents (N, latent, h, w) → images (N, out, h·f, w·f).
import KinemaCore

/// diffusers `Upsample2D(use_conv=True)`: nearest-neighbour ×2, then a 3×3 convolution (padding 1).
struct VAEUpsample {
    let conv: Conv2d

    init(_ w: WeightReader, _ key: String, channels: Int) {
        conv = Conv2d(w, "\(key).conv", channels, channels, kernel: 3)
    }

    /// x (N, C, H, W) → (N, C, 2H, 2W).
    func callAsFunction(_ x: Tensor, _ b: Backend) -> Tensor { conv(b.upsampleNearest(x, factor: 2), b) }
}

/// diffusers `UpDecoderBlock2D`: resnets without time embedding, then an optional upsample.
struct UpDecoderBlock2D {
    let resnets: VAEResnets
    let upsampler: VAEUpsample?

    init(_ w: WeightReader, _ key: String, inputs: Int, outputs: Int, layers: Int, groups: Int, addUpsample: Bool) {
        resnets = VAEResnets(w, key, inputs: inputs, outputs: outputs, layers: layers, groups: groups)
        upsampler = addUpsample ? VAEUpsample(w, "\(key).upsamplers.0", channels: outputs) : nil
    }

    func callAsFunction(_ x: Tensor, _ b: Backend) -> Tensor {
        let hidden = resnets(x, b)
        return upsampler.map { $0(hidden, b) } ?? hidden
    }
}

/// `conv_in` to the widest channels → mid block → up blocks over the reversed channel list, each
/// with `layers_per_block + 1` resnets (every one but the last doubles the size) → GN → SiLU → `conv_out`.
struct VAEDecoder {
    let convIn: Conv2d
    let midBlock: VAEMidBlock
    let upBlocks: [UpDecoderBlock2D]
    let convNormOut: GroupNorm
    let convOut: Conv2d

    init(_ w: WeightReader, _ key: String, config: AutoencoderKLConfig) {
        let channels = Array(config.blockOutChannels.reversed()), groups = config.normNumGroups
        convIn = Conv2d(w, "\(key).conv_in", config.latentChannels, channels[0], kernel: 3)
        midBlock = VAEMidBlock(w, "\(key).mid_block", channels: channels[0], groups: groups,
                               addAttention: config.midBlockAddAttention)
        upBlocks = channels.indices.map { i in
            UpDecoderBlock2D(w, "\(key).up_blocks.\(i)", inputs: channels[max(i - 1, 0)], outputs: channels[i],
                             layers: config.layersPerBlock + 1, groups: groups, addUpsample: i < channels.count - 1)
        }
        convNormOut = GroupNorm(w, "\(key).conv_norm_out", groups: groups, channels: channels[channels.count - 1], epsilon: 1e-6)
        convOut = Conv2d(w, "\(key).conv_out", channels[channels.count - 1], config.outChannels, kernel: 3)
    }

    /// latents (N, latent, h, w) → images (N, out, h·f, w·f).
    func callAsFunction(_ latents: Tensor, _ b: Backend) -> Tensor {
        var hidden = convIn(latents, b)
        hidden = midBlock(hidden, b)
        for block in upBlocks { hidden = block(hidden, b) }
        return convOut(convNormOut(hidden, b, silu: true), b)
    }
}
