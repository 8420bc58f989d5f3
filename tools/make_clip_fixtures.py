#!/usr/bin/env python3
"""Generate transformers CLIP reference values for Kinema's CLIP encoder tests.

Builds two small CLIP towers with transformers 5 and re-draws every parameter from a
seeded normal distribution (matrices scaled by 1/sqrt(fan_in), LayerNorm weights
around 1, biases and the class embedding small but non-zero), rounded to values that
float16 holds exactly, so no path is an identity and an f16 copy loses nothing:

- text: CLIPTextModel, hidden 24, 4 heads, 3 layers, intermediate 37, vocab 1000,
  77 positions, hidden_act "gelu" (exact erf GELU, as the released text encoder);
- vision: CLIPVisionModelWithProjection, image 30, patch 6 (25 patches + class token),
  hidden 24, 3 heads, 2 layers, intermediate 40, projection 16, hidden_act
  "quick_gelu" and layer_norm_eps 1e-3 (so a reader that ignored either would fail).

It writes into Tests/KinemaModelsTests/Fixtures/clip/:

- text_v5/: save_pretrained's config.json and model.safetensors (float32; transformers 5
  saves CLIPTextModel flattened, without the `text_model.` prefix);
- text_v4/: the same weights in the transformers 4 layout the released checkpoint uses
  (every key prefixed with `text_model.`), stored as float16, with a transformers 4 style
  config.json (`torch_dtype` instead of `dtype`); the script checks that transformers 5
  loads this folder and reproduces the outputs;
- vision/: save_pretrained's config.json and model.safetensors (float32);
- reference.safetensors (float32):
  - "text_ids" (2, 77): token ids (integers stored as floats): one prompt shaped like the
    tokenizer's output (bos 998, words, eos 999, then padding 0) and one of 77 random ids;
  - "prompt_embeds" (2, 77, 24): final_layer_norm(hidden_states[-2]), the pipeline's
    clip_skip=1 prompt embeddings (the script checks that hidden_states[-2] is the output
    after all layers but the last);
  - "pixel_values" (2, 3, 30, 30): standard-normal normalized pixels;
  - "image_embeds" (2, 16): CLIPVisionModelWithProjection(pixel_values).image_embeds;
- released_text_config.json, released_image_config.json: copies of the released
  I2VGen-XL text_encoder/ and image_encoder/ config.json, and released_text_keys.tsv,
  released_image_keys.tsv: the released checkpoints' key names and shapes (one
  "key<TAB>[shape]" per line), copied from the design notes (when the sources exist).

The output is deterministic. Run from the repo root:

    /work/venv/bin/python tools/make_clip_fixtures.py

Python, torch and transformers are developer tools only, never build or run-time
dependencies of Kinema.
"""

import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "KinemaModelsTests", "Fixtures", "clip")
DEFAULT_RELEASED = "/work/shared/data/i2vgen-xl-configs"
DEFAULT_KEYS = "/work/shared/design/i2vgen_xl_keys"


def redraw(model, generator):
    """Replaces every parameter with seeded random values that float16 represents exactly."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.dim() >= 2:
                fan_in = parameter[0].numel()
                value = noise / fan_in ** 0.5
            elif name.endswith(".weight"):  # LayerNorm scales
                value = 1 + 0.3 * noise
            else:  # biases, class embedding
                value = 0.3 * noise
            parameter.copy_(value.half().float())


def prompt_embeddings(model, ids):
    """The pipeline's clip_skip=1 path: final_layer_norm(hidden_states[-2])."""
    output = model(ids, output_hidden_states=True)
    hidden = output.hidden_states
    assert len(hidden) == model.config.num_hidden_layers + 1
    # hidden_states[-2] must be the input after every layer but the last.
    manual = model.embeddings(input_ids=ids)
    mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)[None, None]
    for layer in model.encoder.layers[:-1]:
        manual = layer(manual, mask)
    assert torch.allclose(manual, hidden[-2], atol=1e-6), "hidden_states[-2] is not the output of layer N-2"
    # transformers 5 flattens CLIPTextModel: final_layer_norm is on the model, not on `text_model`.
    return model.final_layer_norm(hidden[-2])


def make_text(out, generator):
    config = CLIPTextConfig(
        vocab_size=1000, hidden_size=24, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=16,
        bos_token_id=998, eos_token_id=999, pad_token_id=0,
    )
    model = CLIPTextModel(config).eval()
    redraw(model, generator)

    words = torch.randint(1, 998, (10,), generator=generator)
    tokenized = torch.cat([torch.tensor([998]), words, torch.tensor([999]), torch.zeros(77 - 12, dtype=torch.long)])
    ids = torch.stack([tokenized, torch.randint(0, 1000, (77,), generator=generator)])
    with torch.no_grad():
        embeds = prompt_embeddings(model, ids)

    v5 = os.path.join(out, "text_v5")
    model.save_pretrained(v5)

    v4 = os.path.join(out, "text_v4")
    os.makedirs(v4, exist_ok=True)
    state = {"text_model." + key: value.half().contiguous() for key, value in model.state_dict().items()}
    save_file(state, os.path.join(v4, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(v5, "config.json")) as f:
        config_json = json.load(f)
    config_json.pop("dtype")
    config_json.pop("transformers_version")
    config_json["torch_dtype"] = "float16"
    with open(os.path.join(v4, "config.json"), "w") as f:
        json.dump(config_json, f, indent=2, sort_keys=True)
        f.write("\n")

    reloaded = CLIPTextModel.from_pretrained(v4, dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.equal(prompt_embeddings(reloaded, ids), embeds), "the text_model.-prefixed copy loads differently"
    return ids, embeds


def make_vision(out, generator):
    config = CLIPVisionConfig(
        hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=3, num_channels=3,
        image_size=30, patch_size=6, projection_dim=16, hidden_act="quick_gelu", layer_norm_eps=1e-3,
    )
    model = CLIPVisionModelWithProjection(config).eval()
    redraw(model, generator)
    pixels = torch.randn((2, 3, 30, 30), generator=generator)
    with torch.no_grad():
        embeds = model(pixel_values=pixels).image_embeds
    model.save_pretrained(os.path.join(out, "vision"))
    return pixels, embeds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="fixture folder (default: %(default)s)")
    parser.add_argument("--released", default=DEFAULT_RELEASED,
                        help="folder with the released text_encoder/ and image_encoder/ configs (default: %(default)s)")
    parser.add_argument("--keys", default=DEFAULT_KEYS,
                        help="folder with the released text_encoder_keys.tsv and image_encoder_keys.tsv (default: %(default)s)")
    args = parser.parse_args()

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(20240601)
    os.makedirs(args.out, exist_ok=True)
    ids, prompt_embeds = make_text(args.out, generator)
    pixels, image_embeds = make_vision(args.out, generator)
    save_file({
        "text_ids": ids.float(),
        "prompt_embeds": prompt_embeds.contiguous(),
        "pixel_values": pixels.contiguous(),
        "image_embeds": image_embeds.contiguous(),
    }, os.path.join(args.out, "reference.safetensors"), metadata={"format": "pt"})

    copies = (
        (os.path.join(args.released, "text_encoder", "config.json"), "released_text_config.json"),
        (os.path.join(args.released, "image_encoder", "config.json"), "released_image_config.json"),
        (os.path.join(args.keys, "text_encoder_keys.tsv"), "released_text_keys.tsv"),
        (os.path.join(args.keys, "image_encoder_keys.tsv"), "released_image_keys.tsv"),
    )
    for path, target in copies:
        if os.path.exists(path):
            shutil.copyfile(path, os.path.join(args.out, target))
        else:
            print(f"{path} not found; keeping the existing {target}")


if __name__ == "__main__":
    main()
