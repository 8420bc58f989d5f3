#!/usr/bin/env python3
"""Kinema against diffusers on the CPU: the I2VGen-XL-shaped small model of ANCHORS.md §2.

Builds (once) a random-weight I2VGen-XL pipeline with the CPU benchmark shapes — UNet
block_out_channels (64, 128, 256, 256), layers_per_block 2, cross_attention_dim 256,
attention_head_dim 32 (58.6 M parameters); VAE (32, 64, 128, 128) — and saves it in diffusers
layout. Then, for each size, in the same run and on the same machine:
  - diffusers: one I2VGenXLPipeline call in a fresh Python process (loading excluded from its time):
    UNet seconds per step (median), VAE decode time, pipeline-call time, peak RSS of the process;
  - Kinema: `kinema generate` on the same folder, image, prompt and seed (a fresh process, loading
    included): whole-process wall time, its own report (UNet per step, decode) and peak RSS.
Prints a Markdown table of both and their ratios.

Usage (from the repository root, after `swift build -c release`):
  python tools/bench_cpu.py --kinema .build/release/kinema [--sizes 128,256] [--frames 16] [--steps 10]
Needs torch, diffusers, transformers; 2 threads for torch (the machine's cores) unless --threads.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

UNET = dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2, cross_attention_dim=256, attention_head_dim=32,
            norm_num_groups=32, in_channels=4, out_channels=4, sample_size=32)
VAE = dict(block_out_channels=(32, 64, 128, 128), down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, norm_num_groups=32, latent_channels=4,
           scaling_factor=0.18125, sample_size=256)
TEXT = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, hidden_act="gelu",
            projection_dim=256, max_position_embeddings=77, vocab_size=49408)
VISION = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, image_size=224,
              patch_size=14, projection_dim=256, hidden_act="gelu")
PROMPT = "the boat sails away, camera slowly zooms in"


def build_model(folder, tokenizer_dir):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLPipeline, I2VGenXLUNet
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)
    torch.manual_seed(0)
    scheduler_config = json.load(open(os.path.join(os.path.dirname(tokenizer_dir), "i2vgen-xl-configs", "scheduler",
                                                   "scheduler_config.json")))
    pipe = I2VGenXLPipeline(
        vae=AutoencoderKL(**VAE), unet=I2VGenXLUNet(**UNET),
        text_encoder=CLIPTextModel(CLIPTextConfig(**TEXT)),
        image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION)),
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77),
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
        scheduler=DDIMScheduler.from_config({k: v for k, v in scheduler_config.items() if not k.startswith("_")}))
    with torch.no_grad():  # random init leaves norms at 1/0; perturb everything a little
        for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.image_encoder):
            for p in module.parameters():
                p.add_(0.02 * torch.randn_like(p))
    pipe.save_pretrained(folder, safe_serialization=True)


def diffusers_child(args):
    """Runs in a fresh process: one pipeline call, timed by hooks; prints JSON."""
    import numpy as np
    import torch
    from PIL import Image
    from diffusers import I2VGenXLPipeline
    torch.set_num_threads(args.threads)
    pipe = I2VGenXLPipeline.from_pretrained(args.model)
    if not hasattr(pipe.text_encoder, "text_model"):
        object.__setattr__(pipe.text_encoder, "text_model", pipe.text_encoder)
    image = Image.open(args.image).convert("RGB")
    unet_times, decode_times, starts = [], [], {}
    pipe.unet.register_forward_pre_hook(lambda m, a: starts.__setitem__("unet", time.perf_counter()))
    pipe.unet.register_forward_hook(lambda m, a, o: unet_times.append(time.perf_counter() - starts["unet"]))
    pipe.vae.decoder.register_forward_pre_hook(lambda m, a: starts.__setitem__("decode", time.perf_counter()))
    pipe.vae.decoder.register_forward_hook(lambda m, a, o: decode_times.append(time.perf_counter() - starts["decode"]))
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    pipe(image=image, prompt=PROMPT, height=args.size, width=args.size, num_frames=args.frames, num_inference_steps=args.steps,
         guidance_scale=9.0, target_fps=16, output_type="np", generator=torch.Generator("cpu").manual_seed(args.seed))
    total = time.perf_counter() - t0
    print(json.dumps({"unet_s_per_step": statistics.median(unet_times[1:] or unet_times), "vae_decode_s": sum(decode_times),
                      "call_s": total, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def run_kinema(args, size, image):
    with tempfile.TemporaryDirectory() as out:
        report = os.path.join(out, "report.json")
        cmd = [args.kinema, "generate", "--model", args.model, "--image", image, "--prompt", PROMPT, "--width", str(size),
               "--height", str(size), "--frames", str(args.frames), "--steps", str(args.steps), "--guidance", "9", "--fps", "16",
               "--seed", str(args.seed), "--quiet", "--report", report, "--output", os.path.join(out, "video.npy")]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        data = json.load(open(report))
        # The process reports its own peak RSS (VmHWM): RUSAGE_CHILDREN would mix in the diffusers child.
        return {"process_s": wall, "peak_rss_bytes": data["peak_rss_bytes"], "report": data}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinema", help="path to the kinema executable (omit to run diffusers only)")
    ap.add_argument("--model", default=os.path.join(tempfile.gettempdir(), "kinema-cpu-bench-model"))
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data"))
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--image", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return diffusers_child(args)
    if not os.path.exists(os.path.join(args.model, "model_index.json")):
        build_model(args.model, os.path.join(args.shared, "clip-tokenizer"))
    image = os.path.join(args.model, "bench_input.png")
    if not os.path.exists(image):
        import numpy as np
        from PIL import Image
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:300, 0:400]
        arr = np.stack([(x * 0.6) % 256, (y * 0.8) % 256, ((x + y) * 0.3) % 256], -1) + rng.integers(0, 40, (300, 400, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(image)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        child = subprocess.run([sys.executable, __file__, "--child", "--model", args.model, "--image", image, "--size", str(size),
                                "--frames", str(args.frames), "--steps", str(args.steps), "--threads", str(args.threads),
                                "--seed", str(args.seed)], check=True, capture_output=True, text=True)
        ref = json.loads(child.stdout.strip().splitlines()[-1])
        ours = run_kinema(args, size, image) if args.kinema else None
        rows.append((size, ref, ours))
        print(json.dumps({"size": size, "diffusers": ref, "kinema": ours}), file=sys.stderr)
    print(f"| size × frames | steps | diffusers UNet s/step | Kinema UNet s/step | diffusers VAE decode s | Kinema VAE decode s "
          f"| diffusers call s | Kinema whole process s | ratio | diffusers peak RSS | Kinema peak RSS | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, ref, ours in rows:
        if ours:
            r = ours["report"]
            print(f"| {size}×{size} ×{args.frames} | {args.steps} | {ref['unet_s_per_step']:.2f} | {r['unet_seconds_per_step']:.2f} "
                  f"| {ref['vae_decode_s']:.2f} | {r['phase_seconds']['decode']:.2f} | {ref['call_s']:.1f} | {ours['process_s']:.1f} "
                  f"| {ours['process_s'] / ref['call_s']:.2f} | {ref['peak_rss_bytes'] / 1e9:.2f} GB "
                  f"| {ours['peak_rss_bytes'] / 1e9:.2f} GB | {ours['peak_rss_bytes'] / ref['peak_rss_bytes']:.2f} |")
        else:
            print(f"| {size}×{size} ×{args.frames} | {args.steps} | {ref['unet_s_per_step']:.2f} | - | {ref['vae_decode_s']:.2f} | - "
                  f"| {ref['call_s']:.1f} | - | - | {ref['peak_rss_bytes'] / 1e9:.2f} GB | - | - |")


if __name__ == "__main__":
    main()
