// AutoencoderKL: diffusers `models/autoencoders/autoencoder_kl.py` (v0.42.1) without tiling or
// slicing, as I2VGen-XL uses it (the SD-2.1 VAE): images ↔ latents, one image at a time or batched.
import Foundation
import KinemaCore

/// diffusers' `AutoencoderKL`: `encoder` + `quant_conv` give the moments of a diagonal Gaussian over
/// latents; `post_quant_conv` + `decoder` turn latents back into images. Scaling latents by
/// `config.scalingFactor` is the caller's job, as in diffusers.
///
/// Every image is processed independently (GroupNorm statistics and attention are per image), so
/// decoding frames in chunks gives the same result as decoding them together.
public struct AutoencoderKL {
    /// The configuration the model was built from.
    public let config: AutoencoderKLConfig
    let encoder: VAEEncoder
    let quantConv: Conv2d?
    let postQuantConv: Conv2d?
    let decoder: VAEDecoder

    /// Asks `weights` for every tensor of the model by its diffusers key (`encoder.conv_in.weight`, …);
    /// call `weights.finish()` afterwards to learn about missing, unexpected or mis-shaped keys.
    /// `config` must pass `validate()`, as every parsed config does.
    public init(config: AutoencoderKLConfig, weights: WeightReader) {
        do { try config.validate() } catch { preconditionFailure("AutoencoderKL: \(error)") }
        self.config = config
        encoder = VAEEncoder(weights, "encoder", config: config)
        let latent = config.latentChannels
        quantConv = config.useQuantConv ? Conv2d(weights, "quant_conv", 2 * latent, 2 * latent, kernel: 1) : nil
        postQuantConv = config.usePostQuantConv ? Conv2d(weights, "post_quant_conv", latent, latent, kernel: 1) : nil
        decoder = VAEDecoder(weights, "decoder", config: config)
    }

    /// Checkpoint keys of diffusers' legacy attention names for `key` (`query`, `key`, `value`,
    /// `proj_attn` for `to_q`, `to_k`, `to_v`, `to_out.0`), which diffusers renames on load
    /// (`ModelMixin._fix_state_dict_keys_on_load`); pass it as the `aliases` of the `WeightReader`.
    public static func weightKeyAliases(_ key: String) -> [String] {
        let renames = [(".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."), (".to_out.0.", ".proj_attn.")]
        guard key.contains(".mid_block.attentions.") else { return [] }
        return renames.compactMap { current, legacy in
            key.contains(current) ? key.replacingOccurrences(of: current, with: legacy) : nil
        }
    }

    /// Encoder + `quant_conv`: images (N, in, H, W) in [-1, 1] → the halves of the moments, mean and
    /// log-variance, each (N, latent, H/f, W/f) with f = `config.downscaleFactor`; the log-variance
    /// clamped to [-30, 20] as diffusers' `DiagonalGaussianDistribution` does.
    public func encodeMoments(_ pixels: Tensor, _ b: Backend) -> (mean: Tensor, logVariance: Tensor) {
        var moments = encoder(pixels, b)
        if let quantConv { moments = quantConv(moments, b) }
        let (n, latent, h, w) = (moments.shape[0], moments.shape[1] / 2, moments.shape[2], moments.shape[3])
        // torch.chunk(moments, 2, dim=1): (N, 2·L, h, w) -> (N, 2, L·h·w) -> (2, N, L·h·w).
        let halves = b.permute(moments.reshaped([n, 2, latent * h * w]), [1, 0, 2])
        let mean = halves.slice(0..<1).reshaped([n, latent, h, w])
        let logVariance = b.clamp(halves.slice(1..<2).reshaped([n, latent, h, w]), lower: -30, upper: 20)
        return (mean, logVariance)
    }

    /// `latent_dist.sample()` with the standard-normal `noise` given (same shape as `mean`):
    /// `mean + exp(0.5 · logVariance) · noise`, in the order and precision torch computes it.
    public func sample(mean: Tensor, logVariance: Tensor, noise: Tensor, _ b: Backend) -> Tensor {
        precondition(mean.shape == logVariance.shape && mean.shape == noise.shape,
                     "AutoencoderKL.sample: mean \(mean.shape), log-variance \(logVariance.shape) and noise \(noise.shape) differ")
        let standardDeviation = b.unary(.exp, b.affine(logVariance, scale: 0.5))
        return b.add(mean, b.mul(standardDeviation, noise))
    }

    /// `post_quant_conv` + decoder: latents (N, latent, h, w), already divided by the scaling factor,
    /// → images (N, out, h·f, w·f), nominally in [-1, 1] (not clamped).
    public func decode(_ latents: Tensor, _ b: Backend) -> Tensor {
        decoder(postQuantConv.map { $0(latents, b) } ?? latents, b)
    }
}
