#!/usr/bin/env python3
"""Generate torch reference fixtures for Kinema's CPU op tests.

Writes Tests/KinemaCPUTests/Fixtures/torch_ops.safetensors: small float32
inputs and PyTorch reference outputs for conv2d/conv3d, group norm, attention,
layer norm, activations, softmax, the diffusers timestep embedding and nearest
upsampling.

Each case stores tensors named "<case>.<role>" (e.g. "conv2d_3x3_s1.x",
"conv2d_3x3_s1.out") and its parameters as a JSON string in the safetensors
metadata under the key "<case>", so the file documents itself.

The output is deterministic (torch.manual_seed(1234)). Run from the repo root:

    /work/venv/bin/python tools/make_op_fixtures.py

(or, generically, `python tools/make_op_fixtures.py` with torch, safetensors
and diffusers installed). Python/torch are developer tools only, never
build or run-time dependencies of Kinema.
"""

import argparse
import json
import os
import struct

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "KinemaCPUTests", "Fixtures", "torch_ops.safetensors")

tensors = {}
meta = {}


def put(case, params, **roles):
    """Store the tensors of one case and its parameters."""
    for role, t in roles.items():
        tensors[f"{case}.{role}"] = t.detach().to(torch.float32).contiguous()
    meta[case] = json.dumps(params)


def randn(*shape, scale=1.0):
    return torch.randn(*shape, dtype=torch.float32) * scale


# ---------------------------------------------------------------- convolutions

def conv2d_case(case, x_shape, w_shape, stride, padding, bias=True):
    x = randn(*x_shape)
    w = randn(*w_shape) * 0.2
    b = randn(w_shape[0]) if bias else None
    out = F.conv2d(x, w, b, stride=stride, padding=padding)
    roles = dict(x=x, weight=w, out=out)
    if bias:
        roles["bias"] = b
    params = {"stride": stride, "padding": [padding] * 4, "groups": 1, "bias": bias,
              "padding_order": "top,left,bottom,right"}
    put(case, params, **roles)


def conv2d_vae_down():
    x = randn(1, 3, 8, 9)
    w = randn(5, 3, 3, 3) * 0.2
    b = randn(5)
    # diffusers Downsample2D (VAE encoder): asymmetric pad right/bottom, then stride-2 conv.
    out = F.conv2d(F.pad(x, (0, 1, 0, 1)), w, b, stride=2, padding=0)
    put("conv2d_vae_down",
        {"stride": 2, "padding": [0, 0, 1, 1], "groups": 1, "bias": True,
         "padding_order": "top,left,bottom,right"},
        x=x, weight=w, bias=b, out=out)


def conv3d_temporal():
    B, C, Fr, H, W = 2, 4, 5, 3, 2
    x5 = randn(B, C, Fr, H, W)
    w = randn(6, C, 3, 1, 1) * 0.2
    b = randn(6)
    out5 = F.conv3d(x5, w, b, padding=(1, 0, 0))
    # Kinema layout: (B*F, C, H, W)
    x = x5.permute(0, 2, 1, 3, 4).reshape(B * Fr, C, H, W)
    out = out5.permute(0, 2, 1, 3, 4).reshape(B * Fr, 6, H, W)
    put("conv3d_temporal",
        {"frames": Fr, "kernel": [3, 1, 1], "padding": [1, 0, 0], "stride": 1, "bias": True,
         "layout": "x/out are (B*F, C, H, W); weight is torch (O, C, kT, kH, kW)"},
        x=x, weight=w, bias=b, out=out)


# ---------------------------------------------------------------- normalization

def group_norm():
    x, w, b = randn(2, 8, 5, 6), randn(8), randn(8)
    put("group_norm", {"groups": 4, "eps": 1e-5, "silu": False},
        x=x, weight=w, bias=b, out=F.group_norm(x, 4, w, b, eps=1e-5))


def group_norm_silu():
    x, w, b = randn(2, 8, 5, 6), randn(8), randn(8)
    put("group_norm_silu", {"groups": 4, "eps": 1e-6, "silu": True},
        x=x, weight=w, bias=b, out=F.silu(F.group_norm(x, 4, w, b, eps=1e-6)))


def group_norm_temporal():
    B, Fr, C, H, W = 2, 3, 8, 4, 5
    x, w, b = randn(B * Fr, C, H, W), randn(C), randn(C)
    x5 = x.reshape(B, Fr, C, H, W).permute(0, 2, 1, 3, 4)
    y5 = F.group_norm(x5, 2, w, b, eps=1e-6)
    out = y5.permute(0, 2, 1, 3, 4).reshape(B * Fr, C, H, W)
    put("group_norm_temporal",
        {"frames": Fr, "groups": 2, "eps": 1e-6, "silu": False,
         "layout": "x/out are (B*F, C, H, W); statistics span all frames of a batch item"},
        x=x, weight=w, bias=b, out=out)


def group_norm_tokens():
    x, w, b = randn(2, 8, 15), randn(8), randn(8)
    put("group_norm_tokens", {"groups": 4, "eps": 1e-6, "silu": False, "layout": "(B, C, HW)"},
        x=x, weight=w, bias=b, out=F.group_norm(x, 4, w, b, eps=1e-6))


def layer_norm():
    x, w, b = randn(3, 7, 24), randn(24), randn(24)
    put("layer_norm", {"eps": 1e-5, "normalized_shape": [24]},
        x=x, weight=w, bias=b, out=F.layer_norm(x, (24,), w, b, eps=1e-5))


# ---------------------------------------------------------------- attention

def sdpa_reference(q, k, v, heads, is_causal=False):
    B, Nq, Dm = q.shape
    Nk = k.shape[1]
    d = Dm // heads
    qh = q.reshape(B, Nq, heads, d).transpose(1, 2)
    kh = k.reshape(B, Nk, heads, d).transpose(1, 2)
    vh = v.reshape(B, Nk, heads, d).transpose(1, 2)
    o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=is_causal)
    return o.transpose(1, 2).reshape(B, Nq, Dm)


def attention_case(case, q_shape, kv_shape, heads, is_causal=False):
    q, k, v = randn(*q_shape), randn(*kv_shape), randn(*kv_shape)
    out = sdpa_reference(q, k, v, heads, is_causal)
    put(case,
        {"heads": heads, "head_dim": q_shape[-1] // heads, "is_causal": is_causal,
         "scale": (q_shape[-1] // heads) ** -0.5, "layout": "(B, N, heads*head_dim)"},
        q=q, k=k, v=v, out=out)


# ---------------------------------------------------------------- elementwise

def activations():
    x = randn(1000, scale=4.0)
    put("gelu", {"approximate": "none"}, x=x, out=F.gelu(x))
    x = randn(1000, scale=4.0)
    put("quick_gelu", {"formula": "x*sigmoid(1.702*x)"}, x=x, out=x * torch.sigmoid(1.702 * x))
    x = randn(1000, scale=4.0)
    put("silu", {}, x=x, out=F.silu(x))
    x = randn(3, 5, 16)
    value, gate = x.chunk(2, dim=-1)
    put("geglu", {"formula": "value, gate = x.chunk(2, -1); value * gelu(gate)", "approximate": "none"},
        x=x, out=value * F.gelu(gate))


def softmax():
    x = randn(4, 33, scale=3.0)
    put("softmax", {"dim": -1}, x=x, out=torch.softmax(x, dim=-1))


def timestep_embedding():
    from diffusers.models.embeddings import get_timestep_embedding
    t = torch.tensor([981.0, 500.0, 1.0, 0.0, 37.0], dtype=torch.float32)
    out = get_timestep_embedding(t, 320, flip_sin_to_cos=True, downscale_freq_shift=0)
    put("timestep_embedding", {"dim": 320, "flip_sin_to_cos": True, "downscale_freq_shift": 0},
        timesteps=t, out=out)


def upsample_nearest():
    x = randn(2, 3, 4, 5)
    put("upsample_nearest", {"scale_factor": 2.0, "mode": "nearest"},
        x=x, out=F.interpolate(x, scale_factor=2.0, mode="nearest"))


def adaptive_avg_pool():
    # Down with uneven, overlapping bins (11 -> 4) and up (3 -> 8), as the UNet's context pooling.
    x = randn(2, 3, 11, 3)
    put("adaptive_avg_pool", {"output_size": [4, 8]}, x=x, out=F.adaptive_avg_pool2d(x, (4, 8)))


def exp_and_clamp():
    x = randn(1000, scale=10.0)
    put("exp", {}, x=x, out=torch.exp(x))
    x = randn(1000, scale=30.0)
    put("clamp", {"min": -30.0, "max": 20.0}, x=x, out=torch.clamp(x, -30.0, 20.0))


# ---------------------------------------------------------------- main

def canonicalize_header(path):
    """Rewrite the safetensors JSON header with sorted keys.

    save_file writes the metadata map in hash order, which changes from run to
    run; sorting makes the file byte-for-byte reproducible. Tensor data and
    offsets are untouched; the header is space-padded to a multiple of 8.
    """
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob[8 + n:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output path (default: %(default)s)")
    args = ap.parse_args()

    torch.manual_seed(1234)
    torch.set_num_threads(1)  # fixed reduction order for reproducible outputs

    conv2d_case("conv2d_3x3_s1", (2, 5, 9, 7), (6, 5, 3, 3), stride=1, padding=1)
    conv2d_case("conv2d_3x3_s2", (1, 4, 10, 11), (3, 4, 3, 3), stride=2, padding=1)
    conv2d_vae_down()
    conv2d_case("conv2d_1x1", (2, 6, 5, 4), (3, 6, 1, 1), stride=1, padding=0)
    conv2d_case("conv2d_patch", (1, 3, 28, 28), (8, 3, 14, 14), stride=14, padding=0, bias=False)
    conv3d_temporal()
    group_norm()
    group_norm_silu()
    group_norm_temporal()
    group_norm_tokens()
    attention_case("attention", (2, 37, 32), (2, 29, 32), heads=4)
    attention_case("attention_causal", (1, 13, 32), (1, 13, 32), heads=2, is_causal=True)
    attention_case("attention_temporal", (6, 16, 40), (6, 16, 40), heads=5)
    attention_case("attention_long", (1, 300, 16), (1, 300, 16), heads=1)
    layer_norm()
    activations()
    softmax()
    timestep_embedding()
    upsample_nearest()
    adaptive_avg_pool()
    exp_and_clamp()

    meta["format"] = json.dumps({"generator": "tools/make_op_fixtures.py", "seed": 1234,
                                 "torch_version": torch.__version__, "dtype": "float32"})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata=meta)
    canonicalize_header(args.out)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {len(tensors)} tensors, {len(meta) - 1} cases, {size} bytes")


if __name__ == "__main__":
    main()
