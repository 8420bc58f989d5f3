#!/usr/bin/env python3
"""Reference videos of diffusers' I2VGenXLPipeline for Kinema's end-to-end parity tests.

Builds three small random-weight I2VGen-XL pipelines in diffusers layout (every parameter of every
model re-drawn from a normal distribution, so no path is zero or the identity), runs each once with
the seed-parity protocol of ANCHORS.md §4 (torch.manual_seed(S), then
generator=torch.Generator("cpu").manual_seed(S)), and saves under
Tests/KinemaPipelineTests/Fixtures/pipelines/<name>/:
  - the pipeline (model_index.json and component folders, as save_pretrained writes them);
  - reference.safetensors: the input image, the final frames (output_type="np") and intermediates
    captured with forward hooks: prompt embeddings, image embeddings, image latents (the UNet's
    input), the first UNet output, the first VAE decode; the request in the metadata.

The three differ in depth, head counts, group counts, VAE downscale, size, guidance, negative prompt,
scheduler config and file layout: "released_layout" stores the text encoder with the `text_model.`
prefix and the tokenizer as vocab.json + merges.txt, like the released checkpoint; the others keep
transformers 5's layout (no prefix, tokenizer.json).

Run from the repository root:  python tools/make_fixtures.py   (needs torch, diffusers, transformers)
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLPipeline, I2VGenXLUNet
from safetensors.torch import load_file, save_file
from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer,
                          CLIPVisionConfig, CLIPVisionModelWithProjection)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "KinemaPipelineTests", "Fixtures", "pipelines")

RELEASED_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", beta_start=0.0001, beta_end=0.02,
                          rescale_betas_zero_snr=True, prediction_type="v_prediction", set_alpha_to_one=True,
                          steps_offset=1, timestep_spacing="leading", clip_sample=False)
TEST_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False)

CASES = {
    "released_layout": dict(
        unet=dict(block_out_channels=(8, 16), layers_per_block=1, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                  up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=8, attention_head_dim=4, norm_num_groups=4),
        vae=dict(block_out_channels=(8, 16), down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                 layers_per_block=1, norm_num_groups=4, scaling_factor=0.18125),
        text=dict(hidden_size=8, intermediate_size=20, num_hidden_layers=3, num_attention_heads=2, hidden_act="gelu"),
        vision=dict(hidden_size=12, intermediate_size=24, num_hidden_layers=2, num_attention_heads=3, image_size=28, patch_size=7,
                    projection_dim=8, hidden_act="gelu"),
        scheduler=RELEASED_SCHEDULER, prefix_text_keys=True, tokenizer_layout="vocab",
        request=dict(prompt="The boat sails away, camera slowly zooms in!", negative_prompt="blurry, static", width=48, height=32,
                     num_frames=3, target_fps=8, num_inference_steps=3, guidance_scale=6.0, decode_chunk_size=2, seed=1234)),
    "tiny_no_guidance": dict(
        unet=dict(block_out_channels=(4, 8), layers_per_block=1, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                  up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=4, attention_head_dim=4, norm_num_groups=2),
        vae=dict(block_out_channels=(8,), down_block_types=["DownEncoderBlock2D"], up_block_types=["UpDecoderBlock2D"],
                 layers_per_block=1, norm_num_groups=2),
        text=dict(hidden_size=4, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, hidden_act="gelu"),
        vision=dict(hidden_size=4, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=1,
                    projection_dim=4),
        scheduler=TEST_SCHEDULER, prefix_text_keys=False, tokenizer_layout="json",
        request=dict(prompt="A painting of a squirrel eating a burger", negative_prompt=None, width=32, height=32,
                     num_frames=2, target_fps=16, num_inference_steps=2, guidance_scale=1.0, decode_chunk_size=1, seed=0)),
    "four_levels": dict(
        unet=dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1,
                  down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
                  up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
                  cross_attention_dim=6, attention_head_dim=4, norm_num_groups=2),
        vae=dict(block_out_channels=(8, 8), down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                 layers_per_block=2, norm_num_groups=2, scaling_factor=0.18215),
        text=dict(hidden_size=6, intermediate_size=12, num_hidden_layers=2, num_attention_heads=2, hidden_act="quick_gelu"),
        vision=dict(hidden_size=8, intermediate_size=16, num_hidden_layers=3, num_attention_heads=4, image_size=24, patch_size=8,
                    projection_dim=6, hidden_act="quick_gelu"),
        scheduler=dict(RELEASED_SCHEDULER, timestep_spacing="trailing"), prefix_text_keys=False, tokenizer_layout="json",
        request=dict(prompt="slowly zoom out; 16 fps, 1280x704 — café", negative_prompt=None, width=40, height=24,
                     num_frames=4, target_fps=12, num_inference_steps=2, guidance_scale=9.0, decode_chunk_size=1, seed=42)),
}


def bytes_to_unicode():
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def small_tokenizer(folder):
    """A CLIP BPE tokenizer over a small vocabulary: every byte, alone and word-final, plus a few merges."""
    os.makedirs(folder, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    merges = ["t h", "th e</w>", "a n", "i n", "o n</w>", "e r", "a m", "e r</w>", "z o", "o m</w>", "i n</w>"]
    for merge in merges:
        vocab.append(merge.replace(" ", ""))
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump({token: i for i, token in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
                         pad_token="<|endoftext|>", model_max_length=77), len(vocab)


def redraw(module, generator):
    with torch.no_grad():
        for name, p in module.named_parameters():
            is_norm_weight = ("norm" in name or "layrnorm" in name) and name.endswith("weight")
            p.copy_((1.0 if is_norm_weight else 0.0) + (0.3 if is_norm_weight else 0.15) * torch.randn(p.shape, generator=generator))


def build(name, case, scratch):
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    tokenizer, vocab_size = small_tokenizer(os.path.join(scratch, name + "-tokenizer"))
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, max_position_embeddings=77, projection_dim=case["text"]["hidden_size"],
                                                bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
                                                **case["text"])).eval()
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**case["vision"])).eval()
    unet = I2VGenXLUNet(sample_size=16, in_channels=4, out_channels=4, **case["unet"]).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=32, **case["vae"]).eval()
    for module in (text_encoder, image_encoder, unet, vae):
        redraw(module, g)
    size = case["vision"]["image_size"]
    feature_extractor = CLIPImageProcessor(crop_size=size, size=size)
    pipe = I2VGenXLPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, image_encoder=image_encoder,
                            feature_extractor=feature_extractor, scheduler=DDIMScheduler(**case["scheduler"]))
    # transformers 5 flattened CLIPTextModel; the pipeline still reads text_encoder.text_model (ANCHORS.md §4).
    if not hasattr(text_encoder, "text_model"):
        object.__setattr__(text_encoder, "text_model", text_encoder)
    return pipe, g


def run(pipe, case, g):
    captured = {"prompt_embeds": [], "unet_in": [], "unet_out": [], "decode": [], "image_embeds": []}
    pipe.text_encoder.text_model.final_layer_norm.register_forward_hook(lambda m, i, o: captured["prompt_embeds"].append(o.detach().clone()))
    pipe.image_encoder.register_forward_hook(lambda m, i, o: captured["image_embeds"].append(o.image_embeds.detach().clone()))

    def unet_hook(module, args, kwargs, output):
        captured["unet_in"].append(kwargs["image_latents"].detach().clone())
        captured["unet_out"].append(output[0].detach().clone())
    pipe.unet.register_forward_hook(unet_hook, with_kwargs=True)
    pipe.vae.decoder.register_forward_hook(lambda m, i, o: captured["decode"].append(o.detach().clone()))

    request = dict(case["request"])
    seed = request.pop("seed")
    arr = torch.randint(0, 256, (37, 50, 3), generator=g, dtype=torch.uint8).numpy()
    image = Image.fromarray(arr, "RGB")
    torch.manual_seed(seed)
    frames = pipe(image=image, output_type="np", generator=torch.Generator("cpu").manual_seed(seed), **request).frames[0]
    guidance = request["guidance_scale"] > 1
    # final_layer_norm runs twice per encoding: inside the text model's forward (on the last layer,
    # unused) and then in encode_prompt on hidden_states[-2]. encode_prompt encodes the positive
    # prompt first, then the negative one; the pipeline concatenates [negative, positive].
    explicit = captured["prompt_embeds"][1::2]
    prompt_embeds = torch.cat([explicit[1], explicit[0]]) if guidance else explicit[0]
    tensors = {
        "image": torch.from_numpy(arr.astype(np.float32)),
        "frames": torch.from_numpy(np.ascontiguousarray(frames)).float(),
        "prompt_embeds": prompt_embeds.contiguous(),
        "image_embeds": captured["image_embeds"][0].contiguous(),
        "image_latents": captured["unet_in"][0].contiguous(),
        "unet_out": captured["unet_out"][0].contiguous(),
        "first_decode": captured["decode"][0].contiguous(),
    }
    metadata = {k: json.dumps(v) for k, v in case["request"].items()}
    return tensors, metadata


def save(pipe, case, name, tensors, metadata, scratch):
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    if case["prefix_text_keys"]:
        path = os.path.join(folder, "text_encoder", "model.safetensors")
        weights = load_file(path)
        save_file({k if k.startswith("text_model.") else "text_model." + k: v for k, v in weights.items()}, path)
    tokenizer_dir = os.path.join(folder, "tokenizer")
    files = set(os.listdir(tokenizer_dir))
    if case["tokenizer_layout"] == "vocab":
        # transformers 5 saves only tokenizer.json; the released checkpoint has vocab.json + merges.txt.
        for extra in files - {"tokenizer_config.json", "special_tokens_map.json"}:
            os.remove(os.path.join(tokenizer_dir, extra))
        for source in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(scratch, name + "-tokenizer", source), tokenizer_dir)
    else:
        assert "tokenizer.json" in files, files
        for extra in {"vocab.json", "merges.txt"} & files:
            os.remove(os.path.join(tokenizer_dir, extra))
    save_file(tensors, os.path.join(folder, "reference.safetensors"), metadata=metadata)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
    print(f"{name}: {total} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    torch.set_num_threads(1)
    scratch = os.path.join(OUT, ".scratch")
    for name, case in CASES.items():
        pipe, g = build(name, case, scratch)
        tensors, metadata = run(pipe, case, g)
        save(pipe, case, name, tensors, metadata, scratch)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
