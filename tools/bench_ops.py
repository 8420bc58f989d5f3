#!/usr/bin/env python3
"""Time PyTorch CPU float32 kernels on Kinema's hot-path shapes.

This is the torch side of `kinema bench ops`: it times matmul, 3x3 conv2d,
group norm + SiLU and scaled-dot-product attention (spatial and temporal)
at SD/ModelScope-sized shapes, so Kinema's CPU kernels can be compared with
torch's on the same machine and thread count.

Each op is warmed up 2 times, then timed --runs times (time.perf_counter);
the median is reported. Output is one JSON object on stdout:

    {"torch_version": ..., "threads": 2,
     "ops": {name: {"median_ms": float, "runs": n, "gflops": float or null}}}

Run from the repo root:

    /work/venv/bin/python tools/bench_ops.py [--threads 2] [--runs 7] [--only NAME[,NAME]]

(or `python tools/bench_ops.py` with torch installed). Developer tool only.
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

WARMUP = 2


def time_op(fn, runs):
    """Median wall time of fn() in milliseconds after WARMUP untimed calls."""
    with torch.inference_mode():
        for _ in range(WARMUP):
            fn()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


# Each op builder returns (callable, flop count or None).

def matmul(m, k, n):
    a, b = torch.randn(m, k), torch.randn(k, n)
    return (lambda: a @ b), 2 * m * n * k


def conv2d_3x3_320_64x64_b2():
    n, c, o, h, w = 2, 320, 320, 64, 64
    x, wt, b = torch.randn(n, c, h, w), torch.randn(o, c, 3, 3), torch.randn(o)
    return (lambda: F.conv2d(x, wt, b, padding=1)), 2 * n * o * c * 9 * h * w


def group_norm_silu_32x320x64x64():
    x, w, b = torch.randn(32, 320, 64, 64), torch.randn(320), torch.randn(320)
    return (lambda: F.silu(F.group_norm(x, 32, w, b, eps=1e-5))), None


def heads_first(t, heads):
    """(B, N, heads*D) -> contiguous (B, heads, N, D)."""
    b, n, dm = t.shape
    return t.reshape(b, n, heads, dm // heads).transpose(1, 2).contiguous()


def attention_4096x320_h5():
    heads = 5
    q, k, v = (heads_first(torch.randn(1, 4096, 320), heads) for _ in range(3))
    bsz, h, n, d = q.shape
    return (lambda: F.scaled_dot_product_attention(q, k, v)), 4 * bsz * h * n * n * d


def temporal_attention_4096x16x320_h5():
    # Temporal attention: every spatial location (4096) is a batch item over 16 frames.
    q, k, v = (heads_first(torch.randn(4096, 16, 320), 5) for _ in range(3))
    bsz, h, n, d = q.shape
    return (lambda: F.scaled_dot_product_attention(q, k, v)), 4 * bsz * h * n * n * d


OPS = {
    "matmul_4096x320x320": lambda: matmul(4096, 320, 320),
    "matmul_4096x1280x5120": lambda: matmul(4096, 1280, 5120),
    "conv2d_3x3_320_64x64_b2": conv2d_3x3_320_64x64_b2,
    "group_norm_silu_32x320x64x64": group_norm_silu_32x320x64x64,
    "attention_4096x320_h5": attention_4096x320_h5,
    "temporal_attention_4096x16x320_h5": temporal_attention_4096x16x320_h5,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: 2)")
    ap.add_argument("--runs", type=int, default=7, help="timed runs per op (default: 7)")
    ap.add_argument("--only", default=None, help="comma-separated op names; one of: " + ", ".join(OPS))
    args = ap.parse_args()

    names = list(OPS)
    if args.only:
        names = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in names if s not in OPS]
        if unknown:
            sys.exit(f"unknown op(s): {', '.join(unknown)}; known: {', '.join(OPS)}")

    torch.manual_seed(1234)
    torch.set_num_threads(args.threads)

    results = {}
    for name in names:
        fn, flops = OPS[name]()
        ms = time_op(fn, args.runs)
        gflops = None if flops is None else round(flops / (ms * 1e-3) / 1e9, 2)
        results[name] = {"median_ms": round(ms, 3), "runs": args.runs, "gflops": gflops}
        del fn

    print(json.dumps({"torch_version": torch.__version__, "threads": args.threads, "ops": results}, indent=2))


if __name__ == "__main__":
    main()
