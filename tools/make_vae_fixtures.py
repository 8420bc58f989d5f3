#!/usr/bin/env python3
"""Generate diffusers AutoencoderKL reference values for Kinema's VAE tests.

Builds two small AutoencoderKLs with every parameter re-drawn from a seeded normal
distribution (convolution and linear weights scaled by 1/sqrt(fan_in), GroupNorm
weights around 1, all biases small but non-zero), so no path through the model is
an identity:

- "two_blocks": block_out_channels (8, 16), layers_per_block 1, norm_num_groups 4,
  latent_channels 4, scaling_factor 0.18125: the encoder's asymmetric-pad downsample
  and the decoder's nearest upsample both run. quant_conv's bias pushes logvar
  channel 1 below -30, so DiagonalGaussianDistribution's lower clamp matters.
- "tiny": the diffusers I2VGen-XL tiny test VAE (one block of 8 channels, groups 2,
  vae_scale_factor 1). quant_conv's bias pushes logvar channel 2 above 20, so the
  upper clamp matters.

For each it writes Tests/KinemaModelsTests/Fixtures/vae/<name>/ with save_pretrained's
config.json and diffusion_pytorch_model.safetensors (float32), and reference.safetensors:

- "image" (1, 3, 24, 20) in [-1, 1];
- "mean", "logvar": the halves of encode(image)'s moments (logvar clamped to [-30, 20]);
- "noise": a standard-normal tensor shaped like "mean";
- "latent": mean + exp(0.5 * logvar) * noise, exactly as latent_dist.sample() computes it;
- "decode_latents": a separate random latent batch (2, latent_channels, 6, 5), and
  "decoded": decode(decode_latents).

Also copies the released I2VGen-XL vae/config.json (when present) to
Tests/KinemaModelsTests/Fixtures/vae/released_config.json. The output is deterministic.
Run from the repo root:

    /work/venv/bin/python tools/make_vae_fixtures.py

Python, torch and diffusers are developer tools only, never build or run-time
dependencies of Kinema.
"""

import argparse
import os
import shutil

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "KinemaModelsTests", "Fixtures", "vae")
DEFAULT_RELEASED = "/work/shared/data/i2vgen-xl-configs/vae/config.json"

MODELS = {
    "two_blocks": dict(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        in_channels=3,
        out_channels=3,
        sample_size=32,
        scaling_factor=0.18125,
    ),
    # diffusers tests/pipelines/i2vgen_xl/test_i2vgenxl.py get_dummy_components().
    "tiny": dict(
        block_out_channels=(8,),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=32,
        norm_num_groups=2,
    ),
}

# (logvar channel, bias added to quant_conv) so that the clamp to [-30, 20] takes effect.
CLAMPED_LOGVAR = {"two_blocks": (1, -40.0), "tiny": (2, 25.0)}


def redraw_parameters(model, generator):
    """Replaces every parameter with seeded random values of a scale that keeps activations O(1)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            if "norm" in name and name.endswith(".weight"):
                value = 1.0 + 0.2 * noise
            elif name.endswith(".bias"):
                value = 0.1 * noise
            else:
                fan_in = parameter[0].numel()
                value = noise / fan_in**0.5
            parameter.copy_(value)


def build(name, config, out_dir, seed):
    generator = torch.Generator().manual_seed(seed)
    model = AutoencoderKL(**config).eval()
    redraw_parameters(model, generator)
    latent_channels = config["latent_channels"]
    channel, shift = CLAMPED_LOGVAR[name]
    with torch.no_grad():
        model.quant_conv.bias[latent_channels + channel] += shift

    directory = os.path.join(out_dir, name)
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)

    image = torch.rand((1, 3, 24, 20), generator=generator) * 2 - 1
    with torch.no_grad():
        distribution = model.encode(image).latent_dist
        mean, logvar = distribution.mean, distribution.logvar
        noise = torch.randn(mean.shape, generator=generator)
        # DiagonalGaussianDistribution.sample() with its randn replaced by `noise`.
        latent = distribution.mean + distribution.std * noise
        decode_latents = torch.randn((2, latent_channels, 6, 5), generator=generator)
        decoded = model.decode(decode_latents).sample

    reference = {
        "image": image,
        "mean": mean,
        "logvar": logvar,
        "noise": noise,
        "latent": latent,
        "decode_latents": decode_latents,
        "decoded": decoded,
    }
    reference = {key: value.contiguous().float() for key, value in reference.items()}
    save_file(reference, os.path.join(directory, "reference.safetensors"))
    clamped = logvar[:, channel]
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, latent {tuple(mean.shape)}, "
          f"logvar channel {channel} in [{clamped.min():.1f}, {clamped.max():.1f}], "
          f"decoded {tuple(decoded.shape)} max |x| {decoded.abs().max():.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="fixture folder (default: %(default)s)")
    parser.add_argument("--released-config", default=DEFAULT_RELEASED,
                        help="the released I2VGen-XL vae/config.json to copy (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(1)
    for index, (name, config) in enumerate(MODELS.items()):
        build(name, config, args.out, args.seed + index)
    if os.path.exists(args.released_config):
        shutil.copyfile(args.released_config, os.path.join(args.out, "released_config.json"))


if __name__ == "__main__":
    main()
