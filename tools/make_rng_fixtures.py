#!/usr/bin/env python3
"""Generate torch reference draws for Kinema's torch-compatible CPU generator.

Writes Tests/KinemaPipelineTests/Fixtures/torch_rng.json: sequences of
`torch.randn(shape, generator=g, dtype=torch.float32)` (and a few `torch.rand`)
draws from CPU generators seeded with `manual_seed(seed)`, stored as the exact
float32 bit patterns, so TorchGenerator can be checked bit for bit.

What the file covers:
- "fresh" cases: for each seed, every size in SIZES drawn from a new generator
  (sizes below 16 take torch's scalar Box-Muller path with its cached normal,
  sizes of 16 or more the 16-wide vector path, including its recomputed last
  partial chunk);
- "sequence" cases: several draws from one generator, mixing small and large
  sizes, so the stream continuation and the cached-normal hand-over between
  calls are checked; one mimics diffusers' I2VGen-XL order (VAE noise from the
  global generator, then the initial latents);
- "digest" cases: for a full-size latent shape only an FNV-1a 64-bit digest of
  the bit patterns is stored (see `fnv1a64`), to keep the file small.

Values are what this machine's torch produces. For float32 tensors of 16 or
more elements torch uses its AVX2 kernel (also on AVX-512 CPUs); CPUs without
AVX2 take a scalar libm path whose values differ in the last bits, so run this
script on an x86-64 machine with AVX2. The output is deterministic. Run from
the repo root:

    /work/venv/bin/python tools/make_rng_fixtures.py

Python/torch are developer tools only, never build or run-time dependencies.
"""

import argparse
import json
import os

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "KinemaPipelineTests", "Fixtures", "torch_rng.json")

SEEDS = [0, 1, 42, 12345, 2**32 + 7, 2**63 - 25]
SIZES = [[1], [2], [3], [15], [16], [17], [31], [32], [33], [100]]
LARGE_SHAPES = [[1000], [1, 4, 4, 8, 8]]
LARGE_SEEDS = [0, 42]

# Each entry: (name, seed, [(op, shape), ...]) drawn in order from one generator.
SEQUENCES = [
    ("small_then_large", 7, [("randn", [3]), ("randn", [4, 16]), ("randn", [1]),
                             ("randn", [1, 4, 3, 8, 8]), ("randn", [2]), ("randn", [5])]),
    ("large_then_small", 2024, [("randn", [17]), ("randn", [1]), ("randn", [1]), ("randn", [33]),
                                ("randn", [15]), ("randn", [16]), ("randn", [1])]),
    ("rand_and_randn", 99, [("rand", [5]), ("randn", [1]), ("rand", [20]), ("randn", [3]),
                            ("randn", [18]), ("rand", [1])]),
    ("i2vgen_order", 42, [("randn", [1, 4, 8, 8]), ("randn", [1, 4, 3, 8, 8])]),
]

DIGESTS = [(42, [1, 4, 16, 40, 64]), (7, [1, 4, 16, 88, 160])]


def hex_bits(tensor):
    """Concatenated 8-digit hex of each float32's bit pattern, in order."""
    bits = tensor.contiguous().numpy().view(np.uint32).ravel()
    return "".join(f"{int(b):08x}" for b in bits)


def fnv1a64(tensor):
    """FNV-1a over the float32 bit patterns, one 32-bit word per step (not per byte)."""
    bits = tensor.contiguous().numpy().view(np.uint32).ravel()
    h = 0xCBF29CE484222325
    for b in bits.tolist():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def draw(op, shape, generator):
    if op == "randn":
        return torch.randn(shape, generator=generator, dtype=torch.float32)
    return torch.rand(shape, generator=generator, dtype=torch.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="output JSON path")
    args = parser.parse_args()

    cases = []
    for seed in SEEDS:
        shapes = SIZES + (LARGE_SHAPES if seed in LARGE_SEEDS else [])
        for shape in shapes:
            g = torch.Generator("cpu").manual_seed(seed)
            cases.append({"name": f"fresh_{seed}_{'x'.join(map(str, shape))}", "seed": str(seed),
                          "draws": [{"op": "randn", "shape": shape, "bits": hex_bits(draw("randn", shape, g))}]})
    for name, seed, ops in SEQUENCES:
        g = torch.Generator("cpu").manual_seed(seed)
        draws = [{"op": op, "shape": shape, "bits": hex_bits(draw(op, shape, g))} for op, shape in ops]
        cases.append({"name": name, "seed": str(seed), "draws": draws})
    # The global generator after torch.manual_seed follows the same stream as a fresh Generator.
    torch.manual_seed(42)
    global_draw = torch.randn([1, 4, 8, 8], dtype=torch.float32)
    cases.append({"name": "global_generator_42", "seed": "42",
                  "draws": [{"op": "randn", "shape": [1, 4, 8, 8], "bits": hex_bits(global_draw)}]})

    digests = []
    for seed, shape in DIGESTS:
        g = torch.Generator("cpu").manual_seed(seed)
        digests.append({"seed": str(seed), "shape": shape, "fnv1a64": fnv1a64(draw("randn", shape, g))})

    out = {"torch_version": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "cases": cases, "digests": digests}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
