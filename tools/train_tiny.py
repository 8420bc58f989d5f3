#!/usr/bin/env python3
"""Train kinema-tiny: a small I2VGen-XL (diffusers layout by construction) on camera-motion clips.

Builds I2VGenXLUNet, AutoencoderKL, CLIPTextModel and CLIPVisionModelWithProjection from diffusers'
and transformers' own classes at small sizes (command-line options), keeps the CLIP vision encoder
frozen at its random initialisation, trains the VAE first (reconstruction + small KL; then frozen for
good: a resumed run never retrains it unless --retrain-vae), fixes its scaling_factor to 1/std of the
latents and reports its held-out reconstruction PSNR (the ceiling of first-frame PSNR), then trains
the UNet together with the text encoder (--text-lr; 0 keeps it frozen), with the conditioning exactly
as I2VGenXLPipeline builds it at inference:
  - text: final_layer_norm(hidden_states[-2]) of the tokenized prompt (77 tokens, max_length padding;
    the pipeline's default clip_skip=1);
  - image embeddings: CLIP vision image_embeds of the first frame (square centre crop, bilinear
    resize to the feature extractor's size, CLIP mean/std), zeros for dropped conditioning;
  - image latents: a VAE *sample* of frame 0 times scaling_factor, then frames k/(F-1) for k >= 1;
  - fps: the target fps (int64);
  - v-prediction with DDIMScheduler's released config (squaredcos_cap_v2, rescale_betas_zero_snr).
Classifier-free guidance dropout replaces the prompt by "" and the image embedding by zeros together
(the pipeline's unconditional half), plus a little independent dropout of each. --high-t draws that
share of timesteps from [600, 1000), where the motion has to come from the prompt. The learning rate
warms up, then follows a cosine to 10% over --max-minutes; the saved UNet and text encoder are an EMA
of the weights (--ema).

Training data comes from tools/tiny_data.py, rendered on the fly on the device (no network needed;
the photos come from the installed scikit-image / scikit-learn, or wheels given to --photo-sources).
The tokenizer is CLIP's BPE (vocab.json + merges.txt from --tokenizer) truncated to its first
--merges merges: the ids of the kept tokens are unchanged and the text embedding table stays small.

Checkpoints are the pipeline saved with save_pretrained in fp16 (plain files, no variant), the
tokenizer as vocab.json + merges.txt, kinema.json and training_state.json; --resume loads such a
folder (the optimizer restarts). --max-minutes ends the run cleanly (a checkpoint is also written
every --save-minutes). --init-only saves the random initialisation (for timing `kinema generate`
before any GPU time).

GPU: tools/gpu/README.md gives the device calls that trained the shipped weights (tools/gpu/start.sh
starts this script in its own session so that one run spans two 10-minute calls; collect.sh gathers it).
Attempt 3 (the shipped weights) resumed attempt 2 with the defaults above plus
  --vae-minutes 0 --max-minutes 16.5 --batch 48 --lr 5e-4 --save-minutes 4 --canvases 1500   (run 1)
  --vae-minutes 0 --max-minutes 8.7 --lr 3e-4 --warmup 50 --high-t 0.6 --ema 0.998 --text-pretrain-steps 0   (run 2)
CPU smoke test:
  python tools/train_tiny.py --out /tmp/kt --tokenizer /work/shared/data/clip-tokenizer --width 32 --height 32 \
      --frames 4 --batch 2 --vae-steps 2 --unet-steps 2 --canvases 4 --device cpu --vae-eval-images 2 --workers 1
"""
import argparse
import copy
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_data  # noqa: E402

from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLPipeline, I2VGenXLUNet  # noqa: E402
from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer,  # noqa: E402
                          CLIPVisionConfig, CLIPVisionModelWithProjection)

RELEASED_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", beta_start=0.0001, beta_end=0.02,
                          rescale_betas_zero_snr=True, prediction_type="v_prediction", set_alpha_to_one=True,
                          steps_offset=1, timestep_spacing="leading", clip_sample=False)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def ints(text):
    return tuple(int(v) for v in text.split(","))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="checkpoint folder (diffusers layout, fp16)")
    p.add_argument("--resume", help="a folder this script wrote; the optimizer restarts")
    p.add_argument("--tokenizer", required=True, help="folder with CLIP's vocab.json and merges.txt")
    p.add_argument("--merges", type=int, default=4000, help="keep CLIP's first N BPE merges (vocab = 512 + N + 2)")
    p.add_argument("--photo-sources", nargs="*", default=[], help="scikit-image / scikit-learn wheels or folders")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    # video
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--steps", type=int, default=20, help="recommended inference steps (kinema.json)")
    p.add_argument("--guidance", type=float, default=6.0, help="recommended guidance scale (kinema.json)")
    # sizes
    p.add_argument("--unet-channels", type=ints, default=(16, 32, 64, 128))
    p.add_argument("--unet-attention", type=ints, default=(0, 0, 1, 1), help="1 = CrossAttn block at that level, 0 = plain")
    p.add_argument("--unet-layers", type=int, default=1)
    p.add_argument("--head-dim", type=int, default=8, help="I2VGenXLUNet attention_head_dim: despite the name, the number of "
                   "heads of the spatial transformers and the head size of transformer_in (8 heads); 16 doubles the CPU time")
    p.add_argument("--norm-groups", type=int, default=8)
    p.add_argument("--cross-dim", type=int, default=128, help="cross_attention_dim = text hidden size = image projection")
    p.add_argument("--vae-channels", type=ints, default=(32, 64, 64), help="4 levels: downscale 8; 3: downscale 4")
    p.add_argument("--vae-layers", type=int, default=1)
    p.add_argument("--vae-groups", type=int, default=8)
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--text-heads", type=int, default=2)
    p.add_argument("--vision-size", type=int, default=64, help="feature extractor crop size")
    p.add_argument("--vision-patch", type=int, default=8)
    p.add_argument("--vision-hidden", type=int, default=64)
    p.add_argument("--vision-layers", type=int, default=2)
    # training
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vae-batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4, help="peak UNet learning rate (warm-up, then cosine to 10%% over --max-minutes)")
    p.add_argument("--text-lr", type=float, default=0.0, help="text encoder learning rate with the UNet (0: frozen, "
                   "its prompt embeddings computed once)")
    p.add_argument("--text-pretrain-steps", type=int, default=600, help="steps teaching the text encoder to name each "
                   "prompt's motion and speed in every token from the prompt's end on, before the UNet phase (0: none)")
    p.add_argument("--text-pretrain-lr", type=float, default=2e-3)
    p.add_argument("--motion-weights", default="orbit_left=0,orbit_right=0,static=0.5",
                   help="sampling weight per motion (name=weight, comma-separated; others 1)")
    p.add_argument("--warmup", type=int, default=200, help="learning-rate warm-up steps")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the UNet and text encoder weights that are saved (0: none)")
    p.add_argument("--high-t", type=float, default=0.5, help="share of timesteps drawn from [600, 1000), where the motion is decided")
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--vae-minutes", type=float, default=2.5, help="VAE phase budget (0 skips it)")
    p.add_argument("--vae-steps", type=int, default=0, help="stop the VAE phase after N steps (0: time only)")
    p.add_argument("--unet-steps", type=int, default=0, help="stop after N UNet steps (0: time only)")
    p.add_argument("--max-minutes", type=float, default=9.0, help="whole-run budget, checkpoint included")
    p.add_argument("--save-minutes", type=float, default=3.0)
    p.add_argument("--drop-both", type=float, default=0.10, help="P(prompt '' and image embedding 0), the unconditional half")
    p.add_argument("--drop-text", type=float, default=0.05)
    p.add_argument("--drop-image", type=float, default=0.05)
    p.add_argument("--canvases", type=int, default=600, help="training canvases held on the device")
    p.add_argument("--workers", type=int, default=0, help="processes drawing canvases (0: all cores)")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--init-only", action="store_true", help="save the randomly initialised pipeline and stop (CPU timing)")
    p.add_argument("--retrain-vae", action="store_true", help="with --resume: train the VAE again (invalidates the UNet's latents)")
    p.add_argument("--vae-eval-images", type=int, default=12, help="held-out images for the VAE reconstruction PSNR")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- components

def truncated_tokenizer(source, merges, folder):
    """CLIP's BPE with only its first `merges` merges, written to `folder` (vocab.json, merges.txt).

    CLIP's vocab lists the 256 bytes, the 256 word-final bytes, then one token per merge in merge
    order, then the two specials; keeping a prefix of the merges keeps every kept token's id."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(source, "merges.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    header, rules = lines[0], [line for line in lines[1:] if line.strip()][:merges]
    with open(os.path.join(source, "vocab.json"), encoding="utf-8") as f:
        full = json.load(f)
    by_id = sorted(full, key=full.get)
    keep = by_id[:512] + ["".join(rule.split()) for rule in rules]
    assert keep[512:] == by_id[512:512 + len(rules)], "vocab.json is not in CLIP's merge order"
    vocab = {token: i for i, token in enumerate(keep + ["<|startoftext|>", "<|endoftext|>"])}
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write(header + "\n" + "\n".join(rules) + "\n")
    tokenizer = CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
                              pad_token="<|endoftext|>", model_max_length=77)
    return tokenizer, len(vocab)


def build_components(args, scratch):
    torch.manual_seed(args.seed)
    tokenizer, vocab = truncated_tokenizer(args.tokenizer, args.merges, os.path.join(scratch, "tokenizer-src"))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, max_position_embeddings=77, hidden_size=args.cross_dim, intermediate_size=args.cross_dim * 2,
        num_hidden_layers=args.text_layers, num_attention_heads=args.text_heads, projection_dim=args.cross_dim,
        hidden_act="gelu", bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1))
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        image_size=args.vision_size, patch_size=args.vision_patch, hidden_size=args.vision_hidden,
        intermediate_size=args.vision_hidden * 2, num_hidden_layers=args.vision_layers, num_attention_heads=2,
        projection_dim=args.cross_dim, hidden_act="gelu"))
    down = tuple("CrossAttnDownBlock3D" if a else "DownBlock3D" for a in args.unet_attention)
    up = tuple("CrossAttnUpBlock3D" if a else "UpBlock3D" for a in reversed(args.unet_attention))
    vae_levels = len(args.vae_channels)
    latent = args.width // 2 ** (vae_levels - 1)
    unet = I2VGenXLUNet(sample_size=latent, in_channels=4, out_channels=4, down_block_types=down, up_block_types=up,
                        block_out_channels=args.unet_channels, layers_per_block=args.unet_layers,
                        norm_num_groups=args.norm_groups, cross_attention_dim=args.cross_dim,
                        attention_head_dim=args.head_dim)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=args.width,
                        block_out_channels=args.vae_channels, down_block_types=["DownEncoderBlock2D"] * vae_levels,
                        up_block_types=["UpDecoderBlock2D"] * vae_levels, layers_per_block=args.vae_layers,
                        norm_num_groups=args.vae_groups)
    feature_extractor = CLIPImageProcessor(crop_size=args.vision_size, size=args.vision_size)
    return dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, image_encoder=image_encoder,
                feature_extractor=feature_extractor, scheduler=DDIMScheduler(**RELEASED_SCHEDULER))


def alias_text_model(text_encoder):
    # transformers 5 flattened CLIPTextModel; I2VGenXLPipeline still reads text_encoder.text_model.
    if not hasattr(text_encoder, "text_model"):
        object.__setattr__(text_encoder, "text_model", text_encoder)


def load_components(folder):
    pipe = I2VGenXLPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    alias_text_model(pipe.text_encoder)
    return dict(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                image_encoder=pipe.image_encoder, feature_extractor=pipe.feature_extractor, scheduler=pipe.scheduler)


def count(module):
    return sum(p.numel() for p in module.parameters())


def report_sizes(c):
    total = 0
    for name in ("unet", "vae", "text_encoder", "image_encoder"):
        n = count(c[name])
        total += n
        print(f"  {name:14s} {n:>10,d} params  {n * 2 / 2**20:6.2f} MiB fp16")
    print(f"  {'total':14s} {total:>10,d} params  {total * 2 / 2**20:6.2f} MiB fp16")
    return total


def save_checkpoint(c, args, folder, tokenizer_src, extra=None):
    """save_pretrained in fp16 (plain file names), tokenizer as vocab.json + merges.txt, kinema.json."""
    tmp = folder.rstrip("/") + ".saving"
    shutil.rmtree(tmp, ignore_errors=True)
    half = {k: copy.deepcopy(c[k]).to("cpu", torch.float16) for k in ("vae", "text_encoder", "unet", "image_encoder")}
    pipe = I2VGenXLPipeline(tokenizer=c["tokenizer"], feature_extractor=c["feature_extractor"], scheduler=c["scheduler"], **half)
    pipe.save_pretrained(tmp, safe_serialization=True)
    tok = os.path.join(tmp, "tokenizer")
    for name in os.listdir(tok):
        if name not in ("tokenizer_config.json", "special_tokens_map.json"):
            os.remove(os.path.join(tok, name))
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(tokenizer_src, name), tok)
    # ranges: what the WebUI offers (trained at one size; up to twice it still works, more is off-distribution)
    side = lambda v: dict(min=max(8, v // 2 // 8 * 8), max=v * 2, step=8)
    settings = dict(width=args.width, height=args.height, frames=args.frames, fps=args.fps, steps=args.steps,
                    guidance=args.guidance,
                    ranges=dict(width=side(args.width), height=side(args.height), frames=dict(min=4, max=2 * args.frames, step=1),
                                fps=dict(min=4, max=24, step=1), steps=dict(min=4, max=100, step=1),
                                guidance=dict(min=1, max=20, step=0.5)))
    with open(os.path.join(tmp, "kinema.json"), "w") as f:
        json.dump(settings, f, indent=2)
    if extra:
        with open(os.path.join(tmp, "training_state.json"), "w") as f:
            json.dump(extra, f, indent=2)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    sizes = {os.path.relpath(os.path.join(d, n), folder): os.path.getsize(os.path.join(d, n))
             for d, _, names in os.walk(folder) for n in names}
    total = sum(sizes.values())
    biggest = max(sizes, key=sizes.get)
    print(f"saved {folder}: {total / 2**20:.2f} MiB in all, largest {biggest} {sizes[biggest] / 2**20:.2f} MiB")
    if total > 24 * 2**20 or sizes[biggest] >= 16 * 2**20:
        print("WARNING: over the size limits (24 MB in all, each file < 16 MB)")


# ----------------------------------------------------------------------------- conditioning (as the pipeline builds it)

def prompt_embeddings(tokenizer, text_encoder, prompts, device):
    """final_layer_norm(hidden_states[-2]) of the prompts (77 tokens, max_length padding), as
    I2VGenXLPipeline.encode_prompt builds them; differentiable (the text encoder may be training)."""
    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(device)
    hidden = text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    return text_encoder.text_model.final_layer_norm(hidden)


@torch.no_grad()
def image_embeddings(image_encoder, first, size):
    """CLIP image_embeds of frames [B, 3, H, W] in [-1, 1]: square centre crop of side min(H, W)
    (the pipeline crops a width×width square; equal for square videos), bilinear resize, mean/std."""
    _, _, h, w = first.shape
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    x = (first[:, :, y0:y0 + side, x0:x0 + side] + 1) / 2
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    x = ((x * 255).round() / 255 - torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]) / torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    return image_encoder(x.to(image_encoder.dtype)).image_embeds


def image_latents_from(first_latent, frames):
    """prepare_image_latents: frame 0 = scaled VAE sample, frames k ≥ 1 filled with k/(F-1)."""
    b, c, h, w = first_latent.shape
    masks = [torch.full((b, c, 1, h, w), k / (frames - 1), device=first_latent.device, dtype=first_latent.dtype)
             for k in range(1, frames)]
    return torch.cat([first_latent[:, :, None]] + masks, dim=2)


# ----------------------------------------------------------------------------- training phases

def motion_weights(text):
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, value = item.split("=")
        if name not in tiny_data.MOTIONS:
            raise SystemExit(f"--motion-weights: unknown motion {name!r} (known: {', '.join(tiny_data.MOTIONS)})")
        weights[name] = float(value)
    return weights


def pretrain_text(c, args, weights, log):
    """Teach the text encoder to name the prompt's motion and speed in every token from the end of the
    prompt on (the end-of-text token and the padding after it, which attend to the whole prompt).

    A jointly trained encoder kept "pans to the left" and "pans to the right" 5% apart (attempt 2):
    the one differing word is diluted over 77 tokens, so the UNet's cross-attention saw almost the same
    context for opposite motions and never learned the direction. Here a cosine classifier over the
    motions (plus "" for the unconditional prompt) and the three speeds pulls every such token towards
    its class's direction, so opposite prompts give clearly different contexts from the first UNet step."""
    text_encoder, tokenizer, device = c["text_encoder"], c["tokenizer"], args.device
    motions = [m for m in tiny_data.MOTIONS if weights.get(m, 1.0) > 0]
    classes = motions + [""]
    dim = text_encoder.config.hidden_size
    motion_head = torch.nn.Parameter(torch.randn(len(classes), dim, device=device))
    speed_head = torch.nn.Parameter(torch.randn(len(tiny_data.PROMPT_SPEEDS), dim, device=device))
    text_encoder.train().requires_grad_(True)
    opt = torch.optim.AdamW(list(text_encoder.parameters()) + [motion_head, speed_head], lr=args.text_pretrain_lr,
                            weight_decay=0.0)
    rng = np.random.default_rng(args.seed + 77)
    eos = tokenizer.eos_token_id

    def batch(n):
        labels = rng.integers(0, len(classes), n)
        speeds = rng.integers(0, len(tiny_data.PROMPT_SPEEDS), n)
        prompts = [tiny_data.prompt_for(classes[m], tiny_data.PROMPT_SPEEDS[s], rng) if classes[m] else ""
                   for m, s in zip(labels, speeds)]
        # "" and static clips carry no speed word: their speed label is "normal"
        speeds = [s if classes[m] not in ("", "static") else tiny_data.PROMPT_SPEEDS.index("normal")
                  for m, s in zip(labels, speeds)]
        return prompts, torch.tensor(labels, device=device), torch.tensor(speeds, device=device)

    def cosine_logits(h, head):
        return 10 * F.normalize(h, dim=-1) @ F.normalize(head, dim=-1).T

    for step in range(1, args.text_pretrain_steps + 1):
        prompts, labels, speeds = batch(256)
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(device)
        h = text_encoder.text_model.final_layer_norm(text_encoder(ids, output_hidden_states=True).hidden_states[-2])
        end = (ids == eos).int().argmax(1)                                          # first end-of-text token
        tail = (torch.arange(ids.shape[1], device=device)[None] >= end[:, None]).float()
        n = tail.sum()
        motion_ce = F.cross_entropy(cosine_logits(h, motion_head).flatten(0, 1), labels.repeat_interleave(ids.shape[1]),
                                    reduction="none")
        speed_ce = F.cross_entropy(cosine_logits(h, speed_head).flatten(0, 1), speeds.repeat_interleave(ids.shape[1]),
                                   reduction="none")
        loss = ((motion_ce + 0.5 * speed_ce) * tail.flatten()).sum() / n
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == 1:
            log(f"text pretrain step {step} loss {loss.item():.4f}")
    text_encoder.eval().requires_grad_(False)
    log("text separation (relative L2 of the embeddings): " + text_separation(c, device))


@torch.no_grad()
def text_separation(c, device):
    pairs = [("pan_left", "pan_right"), ("pan_up", "pan_down"), ("zoom_in", "zoom_out"), ("rotate_cw", "rotate_ccw"),
             ("pan_left", "zoom_in")]
    out = []
    for a, b in pairs:
        e = prompt_embeddings(c["tokenizer"], c["text_encoder"], [tiny_data.PLAIN_PROMPTS[a], tiny_data.PLAIN_PROMPTS[b]],
                              device).float()
        out.append(f"{a}/{b} {float((e[0] - e[1]).norm() / e[0].norm()):.2f}")
    return ", ".join(out)


class PromptCache:
    """Prompt embeddings of a frozen text encoder, computed once for every prompt the sampler makes."""

    def __init__(self, c, device):
        prompts = [""] + tiny_data.all_prompts()
        self.index = {p: i for i, p in enumerate(prompts)}
        with torch.no_grad():
            self.table = torch.cat([prompt_embeddings(c["tokenizer"], c["text_encoder"], prompts[i:i + 256], device).float()
                                    for i in range(0, len(prompts), 256)])
        self.c, self.device = c, device

    def __call__(self, prompts):
        if all(p in self.index for p in prompts):
            return self.table[torch.tensor([self.index[p] for p in prompts], device=self.device)]
        with torch.no_grad():
            return prompt_embeddings(self.c["tokenizer"], self.c["text_encoder"], prompts, self.device).float()


@torch.no_grad()
def prompt_sensitivity(c, sampler, args, text_fn):
    """How much the UNet's clean-video prediction at pure noise (t = 999) depends on the prompt: relative L2
    between the last frames predicted for opposite plain prompts (same image, same noise)."""
    unet, vae, sched = c["unet"], c["vae"], c["scheduler"]
    frames, _, _ = sampler.sample(4)
    b, f = frames.shape[:2]
    sf = vae.config.scaling_factor
    first = vae.encode(frames[:, 0]).latent_dist.mean * sf
    img_emb = image_embeddings(c["image_encoder"], frames[:, 0], args.vision_size).float()[:, None]
    noise = torch.randn(b, first.shape[1], f, *first.shape[2:], device=args.device)
    t = torch.full((b,), sched.config.num_train_timesteps - 1, device=args.device)
    fps = torch.full((b,), args.fps, dtype=torch.long, device=args.device)
    a = sched.alphas_cumprod.to(args.device)[t].view(b, 1, 1, 1, 1)
    out = []
    for x, y in (("pan_left", "pan_right"), ("zoom_in", "zoom_out"), ("rotate_cw", "rotate_ccw")):
        preds = []
        for m in (x, y):
            text = text_fn([tiny_data.PLAIN_PROMPTS[m]] * b)
            v = unet(noise, t, encoder_hidden_states=text, fps=fps, image_latents=image_latents_from(first, f),
                     image_embeddings=img_emb, return_dict=False)[0]
            preds.append((a.sqrt() * noise - (1 - a).sqrt() * v)[:, :, -1])              # x0 of the last frame
        out.append(f"{x}/{y} {float((preds[0] - preds[1]).norm() / preds[0].norm()):.3f}")
    return ", ".join(out)



@torch.no_grad()
def vae_heldout_psnr(vae, args):
    """Mean reconstruction PSNR (dB, posterior mode) of the VAE on held-out images at the video size:
    the ceiling of the first-frame PSNR, since the pipeline's frame 0 is decoded from latents."""
    photos = tiny_data.load_photos(args.photo_sources)
    images = tiny_data.heldout_images(args.vae_eval_images, args.width, args.height, photos, 0)
    x = torch.stack([torch.from_numpy(img).permute(2, 0, 1) for _, img in images]).to(args.device) * 2 - 1
    r = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    mse = ((r - x) / 2).pow(2).mean((1, 2, 3))
    return [float(v) for v in 10 * torch.log10(1 / mse)], [name for name, _ in images]


def train_vae(c, sampler, args, deadline, log):
    vae = c["vae"].train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    start = time.time()
    end = min(deadline, start + args.vae_minutes * 60)
    step = 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.device.startswith("cuda"))
    while time.time() < end and (args.vae_steps == 0 or step < args.vae_steps):
        frames, _, _ = sampler.sample(max(1, args.vae_batch // 4))                 # ~4 frames per clip
        x = frames.flatten(0, 1)
        x = x[torch.randperm(len(x), device=x.device)[:args.vae_batch]]
        frac = (time.time() - start) / max(end - start, 1e-6)                     # cosine to 10% over the phase
        for group in opt.param_groups:
            group["lr"] = args.vae_lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(frac, 1.0))))
        with autocast:
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample()).sample
        recon = recon.float()
        l1 = (recon - x).abs().mean()
        mse = F.mse_loss(recon, x)
        kl = posterior.kl().mean()
        loss = l1 + mse + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % args.log_every == 0 or step == 1:
            psnr = 10 * torch.log10(4 / mse.detach()).item()
            log(f"vae step {step} l1 {l1.item():.4f} psnr {psnr:.2f} dB kl {kl.item():.1f}")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        frames, _, _ = sampler.sample(max(1, 256 // args.frames))
        z = vae.encode(frames.flatten(0, 1)[:256]).latent_dist.sample()
        vae.register_to_config(scaling_factor=float(1 / z.std()))
    psnrs, names = vae_heldout_psnr(vae, args)
    log(f"vae done after {step} steps; scaling_factor {vae.config.scaling_factor:.5f}; held-out reconstruction PSNR "
        f"mean {sum(psnrs) / len(psnrs):.2f} dB: " + ", ".join(f"{n.split('/')[-1]} {p:.1f}" for n, p in zip(names, psnrs)))
    return step, sum(psnrs) / len(psnrs)


class EMA:
    """Exponential moving average of parameters (decay warmed up as (1 + n) / (10 + n))."""

    def __init__(self, modules, decay):
        self.modules, self.decay, self.n = modules, decay, 0
        self.shadow = [copy.deepcopy(m).eval().requires_grad_(False) for m in modules]

    @torch.no_grad()
    def update(self):
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for m, s in zip(self.modules, self.shadow):
            for p, q in zip(m.parameters(), s.parameters()):
                q.lerp_(p.detach(), 1 - d)


def train_unet(c, sampler, args, deadline, log, save):
    unet, vae, sched, text_encoder = c["unet"].train().requires_grad_(True), c["vae"], c["scheduler"], c["text_encoder"]
    train_text = args.text_lr > 0
    groups = [dict(params=list(unet.parameters()), lr=args.lr, peak=args.lr, weight_decay=0.01)]
    if train_text:
        text_encoder.train().requires_grad_(True)
        groups.append(dict(params=list(text_encoder.parameters()), lr=args.text_lr, peak=args.text_lr, weight_decay=0.0))
    opt = torch.optim.AdamW(groups)
    ema = EMA([unet, text_encoder], args.ema) if args.ema > 0 else None
    text_fn = None if train_text else PromptCache(c, args.device)
    alphas = sched.alphas_cumprod.to(args.device)
    sf = vae.config.scaling_factor
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.device.startswith("cuda"))
    start = time.time()
    step, last_save, loss_ema = 0, time.time(), None

    def averaged(fn, *a):
        # save the EMA weights (what ships), then carry on with the raw ones
        if ema is None:
            return fn(*a)
        raw = (c["unet"], c["text_encoder"])
        c["unet"], c["text_encoder"] = ema.shadow
        try:
            return fn(*a)
        finally:
            c["unet"], c["text_encoder"] = raw

    while time.time() < deadline and (args.unet_steps == 0 or step < args.unet_steps):
        frac = (time.time() - start) / max(deadline - start, 1e-6)
        for g in opt.param_groups:
            g["lr"] = g["peak"] * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(frac, 1.0))))
        frames, texts, _ = sampler.sample(args.batch)                       # [B, F, 3, H, W]
        b, f = frames.shape[:2]
        with torch.no_grad(), autocast:
            posterior = vae.encode(frames.flatten(0, 1)).latent_dist
            mean = posterior.mean.float().reshape(b, f, -1, *posterior.mean.shape[2:])
            std = posterior.std.float().reshape(b, f, -1, *posterior.std.shape[2:])
            z = (mean + std * torch.randn_like(std)) * sf
            z = z.permute(0, 2, 1, 3, 4)                                     # [B, 4, F, h, w]
            first = (mean[:, 0] + std[:, 0] * torch.randn_like(std[:, 0])) * sf   # an independent sample, as the pipeline draws
            img_emb = image_embeddings(c["image_encoder"], frames[:, 0], args.vision_size).float()
        r = torch.rand(b).tolist()
        d_both, d_text, d_img = args.drop_both, args.drop_text, args.drop_image
        drop_t = [x < d_both + d_text for x in r]
        drop_i = [x < d_both or d_both + d_text <= x < d_both + d_text + d_img for x in r]
        texts = ["" if d else t for t, d in zip(texts, drop_t)]
        if train_text:
            with autocast:
                text = prompt_embeddings(c["tokenizer"], text_encoder, texts, args.device)
        else:
            text = text_fn(texts)
        keep_i = torch.tensor([not d for d in drop_i], device=args.device, dtype=img_emb.dtype)
        img_emb = (img_emb * keep_i[:, None])[:, None]                          # [B, 1, D]
        cond_latents = image_latents_from(first, f)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), device=args.device)
        high = torch.rand(b, device=args.device) < args.high_t
        t = torch.where(high, torch.randint(600, sched.config.num_train_timesteps, (b,), device=args.device), t)
        noise = torch.randn_like(z)
        a = alphas[t].view(b, 1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * z                       # v-prediction
        fps = torch.full((b,), args.fps, dtype=torch.long, device=args.device)
        with autocast:
            pred = unet(noisy, t, encoder_hidden_states=text, fps=fps, image_latents=cond_latents,
                        image_embeddings=img_emb, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        if ema is not None:
            ema.update()
        step += 1
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        if step % args.log_every == 0 or step == 1:
            rate = step / (time.time() - start)
            log(f"unet step {step} loss {loss.item():.4f} ema {loss_ema:.4f} lr {opt.param_groups[0]['lr']:.2e} {rate:.2f} it/s")
        if step % (args.log_every * 10) == 0:
            unet.eval()
            with autocast:
                log(f"prompt sensitivity at step {step}: " + prompt_sensitivity(
                    c, sampler, args, text_fn or (lambda p: prompt_embeddings(c["tokenizer"], text_encoder, p, args.device))))
            unet.train()
        if time.time() - last_save > args.save_minutes * 60:
            averaged(save, step, loss_ema)
            last_save = time.time()
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    return step, loss_ema, averaged


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    deadline = start + args.max_minutes * 60 - 25                            # leave time for the final save
    torch.manual_seed(args.seed)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    scratch = os.path.abspath(args.out).rstrip("/") + ".scratch"
    os.makedirs(scratch, exist_ok=True)
    log_path = os.path.join(scratch, "train_log.txt")

    def log(line):
        line = f"[{time.time() - start:7.1f}s] {line}"
        print(line, flush=True)
        with open(log_path, "a") as f:
            f.write(line + "\n")

    log(f"arguments: {vars(args)}")
    if args.resume:
        c = load_components(args.resume)
        tokenizer_src = os.path.join(scratch, "tokenizer-src")
        os.makedirs(tokenizer_src, exist_ok=True)
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(args.resume, "tokenizer", name), tokenizer_src)
        state = json.load(open(os.path.join(args.resume, "training_state.json"))) if os.path.exists(
            os.path.join(args.resume, "training_state.json")) else {}
        log(f"resumed from {args.resume}: {state}")
    else:
        c = build_components(args, scratch)
        tokenizer_src = os.path.join(scratch, "tokenizer-src")
        state = {}
    alias_text_model(c["text_encoder"])
    print("model sizes:")
    report_sizes(c)
    runs = state.get("runs", [])
    if args.init_only:
        save_checkpoint(c, args, args.out, tokenizer_src, dict(runs=runs, note="random initialisation (timing only)"))
        return
    # canvases are drawn in forked processes, before CUDA is touched
    photos = tiny_data.load_photos(args.photo_sources)
    log(f"photos: {len(photos)}; building {args.canvases} canvases")
    view = max(args.width, args.height)
    canvases, fgs, _ = tiny_data.build_canvases("train", args.canvases, view, photos, args.seed + len(runs),
                                                 workers=args.workers)
    for k in ("vae", "text_encoder", "unet", "image_encoder"):
        c[k].to(args.device, torch.float32).eval().requires_grad_(False)
    weights = motion_weights(args.motion_weights)
    sampler = tiny_data.ClipSampler(canvases, fgs, args.width, args.height, args.frames, args.device,
                                    seed=args.seed + 1000 * len(runs), motion_weights=weights)
    log("canvases ready")

    vae_steps, vae_psnr = 0, state.get("vae_heldout_psnr")
    if args.resume and not args.retrain_vae:
        log(f"VAE kept fixed (scaling_factor {c['vae'].config.scaling_factor:.5f}); --retrain-vae would invalidate the UNet")
    elif args.vae_minutes > 0 or args.vae_steps > 0:
        if args.resume:
            log("note: retraining the VAE of a resumed model changes its latents; its scaling_factor is re-estimated")
        vae_steps, vae_psnr = train_vae(c, sampler, args, deadline, log)

    def save(unet_steps, loss_ema):
        record = runs + [dict(vae_steps=vae_steps, unet_steps=unet_steps, loss_ema=loss_ema, minutes=(time.time() - start) / 60,
                              batch=args.batch, width=args.width, height=args.height, frames=args.frames)]
        save_checkpoint(c, args, args.out, tokenizer_src, dict(runs=record, vae_heldout_psnr=vae_psnr))
        log(f"checkpoint saved after {unet_steps} UNet steps")

    if args.text_pretrain_steps > 0:
        log("text separation before: " + text_separation(c, args.device))
        pretrain_text(c, args, weights, log)
    unet_steps, loss_ema, averaged = train_unet(c, sampler, args, deadline, log, save)
    averaged(save, unet_steps, loss_ema)
    log(f"done: {vae_steps} VAE steps, {unet_steps} UNet steps, loss ema {loss_ema}")


if __name__ == "__main__":
    main()
