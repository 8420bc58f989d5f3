#!/usr/bin/env python3
"""Reference outputs of diffusers' I2VGenXLUNet for Kinema's UNet parity tests.

Builds small random-weight I2VGenXLUNets (every parameter re-drawn from a normal distribution,
so no layer is the identity or zero), saves each in diffusers layout under
Tests/KinemaModelsTests/Fixtures/unet/<name>/ (config.json + diffusion_pytorch_model.safetensors)
and its inputs and output in reference.safetensors there.

Run from the repository root:  python tools/make_unet_fixtures.py   (needs torch + diffusers)
"""
import argparse
import json
import os

import torch
from diffusers import I2VGenXLUNet
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "KinemaModelsTests", "Fixtures", "unet")

CASES = {
    # The diffusers test config: two levels of 4 and 8 channels, head dim 4, 2 groups.
    "tiny": dict(
        config=dict(block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
                    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
                    cross_attention_dim=4, attention_head_dim=4, num_attention_heads=None, norm_num_groups=2),
        batch=2, frames=3, height=8, width=6, timestep=981, fps=16),
    # Three levels, two heads per attention, two layers per block, a latent size that is not a
    # multiple of 4 (so the up blocks interpolate to the skip sizes), cross attention at every level.
    "three_levels": dict(
        config=dict(block_out_channels=(8, 8, 16), layers_per_block=2, sample_size=16, in_channels=4, out_channels=4,
                    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
                    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
                    cross_attention_dim=6, attention_head_dim=4, norm_num_groups=2),
        batch=2, frames=4, height=6, width=5, timestep=500, fps=8),
}


def redraw(model, generator):
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.5 if ("norm" in name and name.endswith("weight")) else 0.15
            base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=generator))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    torch.set_num_threads(1)
    for name, case in CASES.items():
        g = torch.Generator().manual_seed(7)
        unet = I2VGenXLUNet(**case["config"]).eval()
        redraw(unet, g)
        folder = os.path.join(OUT, name)
        unet.save_pretrained(folder, safe_serialization=True)
        b, f, h, w = case["batch"], case["frames"], case["height"], case["width"]
        d = case["config"]["cross_attention_dim"]
        sample = torch.randn(b, 4, f, h, w, generator=g)
        image_latents = torch.randn(b, 4, f, h, w, generator=g)
        text = torch.randn(b, 77, d, generator=g)
        image_embeddings = torch.randn(b, d, generator=g)
        image_embeddings[0] = 0  # the unconditional half, as the pipeline builds it
        fps = torch.tensor([case["fps"]] * b)
        with torch.no_grad():
            out = unet(sample, torch.tensor(case["timestep"]), encoder_hidden_states=text, fps=fps,
                       image_latents=image_latents, image_embeddings=image_embeddings.unsqueeze(1), return_dict=False)[0]
        save_file({"sample": sample, "image_latents": image_latents, "text_embeddings": text,
                   "image_embeddings": image_embeddings, "out": out.contiguous()},
                  os.path.join(folder, "reference.safetensors"),
                  metadata={"timestep": str(case["timestep"]), "fps": str(case["fps"])})
        size = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
        print(f"{name}: {sum(p.numel() for p in unet.parameters())} parameters, {size} bytes")


if __name__ == "__main__":
    main()
