#!/usr/bin/env python3
"""Generate diffusers DDIMScheduler reference values for Kinema's scheduler tests.

Writes Tests/KinemaModelsTests/Fixtures/ddim_scheduler.json. For each scheduler
configuration below (the released I2VGen-XL one, the diffusers tiny-test one, and
variants covering every beta schedule, prediction type, timestep spacing, clipping,
dynamic thresholding, zero-SNR rescaling and trained betas) it records:

- "config_json": the config as a scheduler_config.json document;
- "schedule": the name of its alphas_cumprod list in the top-level "alphas_cumprod"
  (all num_train_timesteps values, float32), and "final_alpha_cumprod";
- "timesteps": set_timesteps(N) for several N, and "timestep_errors": the N for
  which diffusers raises or yields a timestep outside 0..<num_train_timesteps;
- "inputs": seeded random model_output, sample and (where eta > 0) noise (float32,
  shape "shape"; "batch" is its leading dimension), and "steps": for several
  (timestep, steps, eta) the prev_sample and pred_original_sample of
  scheduler.step(...), with noise passed as variance_noise when eta > 0.

It also records "torch_sqrt": torch.sqrt on float32 inputs where it differs from
IEEE sqrt (torch's x86 wheels use MKL's approximate-then-corrected sqrt) and on
special and extreme values, so the Swift emulation can be checked bit for bit.

torch's float32 values depend on its build and CPU: generate on x86-64 with the
PyPI torch wheel (MKL) on an AVX-512 Intel CPU, where its linspace uses fused
multiply-adds and its sqrt is MKL's (the sqrt sample asserts the latter).

Floats are written as the shortest decimal that reads back (through a double)
as the same float32. The output is deterministic. Run from the repo root:

    /work/venv/bin/python tools/make_scheduler_fixtures.py

Python, torch and diffusers are developer tools only, never build or run-time
dependencies of Kinema.
"""

import argparse
import json
import os

import diffusers
import numpy as np
import torch
from diffusers import DDIMScheduler

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "KinemaModelsTests", "Fixtures", "ddim_scheduler.json")
DEFAULT_RELEASED = os.path.join(REPO_ROOT, "..", "shared", "data", "i2vgen-xl-configs", "scheduler",
                                "scheduler_config.json")

SHAPE = (2, 2, 3, 5)
STEP_COUNTS = [1, 2, 3, 7, 25, 48, 50, 61, 103, 1000, 1001]  # 48: numpy arange quirk in "trailing"


def f32(value):
    """A float32 as the shortest decimal that reads back as the same float32 through a double."""
    value = np.float32(value)
    short = float(str(value))
    return short if np.float32(short) == value else float(value)


def f32_list(tensor):
    return [f32(v) for v in tensor.detach().to(torch.float32).flatten().tolist()]


def configs(released_path):
    """(name, config dict, schedule name, seed, step cases as (timestep or index, steps, eta))."""
    with open(released_path) as f:
        released = json.load(f)
    # Step cases give the timestep as an index into set_timesteps(steps) so each config picks its own.
    return [
        ("released", released, "cosine_zero_snr", 1,
         [(0, 50, 0.0), (24, 50, 0.0), (49, 50, 0.0), (0, 3, 0.0), (1, 3, 0.0), (25, 50, 0.5), (0, 50, 0.3)]),
        ("tiny_test", {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                       "clip_sample": False, "set_alpha_to_one": False}, "scaled_linear", 2,
         [(0, 2, 0.0), (1, 2, 0.0), (10, 25, 0.5)]),
        ("linear_epsilon_clip", {}, "linear", 3, [(0, 50, 0.0), (40, 50, 0.0), (49, 50, 0.0)]),
        ("trailing_zero_snr", {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                               "rescale_betas_zero_snr": True, "prediction_type": "v_prediction",
                               "timestep_spacing": "trailing", "clip_sample": False}, "scaled_linear_zero_snr", 4,
         [(0, 50, 0.0), (30, 50, 0.0), (49, 50, 0.0), (0, 7, 1.0)]),
        ("linspace_cosine", {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "linspace",
                             "set_alpha_to_one": False, "clip_sample_range": 2.0}, "cosine", 5,
         [(0, 7, 0.0), (3, 7, 0.0), (6, 7, 0.0)]),
        ("sample_prediction", {"prediction_type": "sample", "clip_sample_range": 1.5, "steps_offset": 1},
         "linear", 6, [(0, 25, 0.0), (12, 25, 0.0), (24, 25, 0.5)]),
        ("thresholding", {"thresholding": True, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.5},
         "linear", 7, [(0, 50, 0.0), (25, 50, 0.0), (49, 50, 0.0)]),
        ("thresholding_quantile", {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 50.0,
                                   "prediction_type": "v_prediction"}, "linear", 8,
         [(0, 50, 0.0), (25, 50, 0.0), (45, 50, 0.0)]),
        ("trained_betas", {"num_train_timesteps": 20, "trained_betas": np.linspace(0.001, 0.3, 20).tolist(),
                           "rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "steps_offset": 1,
                           "clip_sample": False}, "trained_zero_snr", 9, [(0, 7, 0.0), (3, 7, 0.0), (6, 7, 0.0)]),
    ]


def sqrt_sample():
    """torch.sqrt on 200 inputs where it differs from IEEE sqrt, 50 where it agrees, and special values."""
    rng = np.random.default_rng(1234)
    x = np.concatenate([rng.uniform(0, 1, 200_000), 10.0 ** rng.uniform(-38, 38, 200_000)]).astype(np.float32)
    torch_root = torch.from_numpy(x).sqrt().numpy()
    differs = torch_root != np.sqrt(x)
    specials = np.array([0.0, 1.0, 4.0, 0.25, 2.0, 3.9999998, 1e-35, 1e-40, 1e-45, 3e38],
                        dtype=np.float32)
    inputs = np.concatenate([x[differs][:200], x[~differs][:50], specials])
    assert differs.sum() >= 200, "torch.sqrt equals IEEE sqrt here: this torch build does not use MKL's sqrt"
    return {"inputs": [f32(v) for v in inputs], "outputs": f32_list(torch.from_numpy(inputs).sqrt())}


def timesteps_or_error(scheduler, steps):
    try:
        scheduler.set_timesteps(steps)
    except (ValueError, ZeroDivisionError):
        return None
    timesteps = scheduler.timesteps.tolist()
    if any(t < 0 or t >= scheduler.config.num_train_timesteps for t in timesteps):
        return None
    return timesteps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="output JSON path")
    parser.add_argument("--released-config", default=DEFAULT_RELEASED,
                        help="the released ali-vilab/i2vgen-xl scheduler_config.json")
    args = parser.parse_args()

    schedules = {}
    entries = []
    for name, config, schedule, seed, cases in configs(args.released_config):
        scheduler = DDIMScheduler.from_config(config)
        alphas_cumprod = f32_list(scheduler.alphas_cumprod)
        if schedule in schedules:
            assert schedules[schedule] == alphas_cumprod, f"{name}: schedule {schedule} differs"
        schedules[schedule] = alphas_cumprod

        timesteps, errors = {}, []
        for steps in STEP_COUNTS:
            result = timesteps_or_error(scheduler, steps)
            if result is None:
                errors.append(steps)
            elif steps <= 103:
                timesteps[str(steps)] = result

        generator = torch.Generator().manual_seed(seed)
        model_output = torch.randn(SHAPE, generator=generator)
        sample = torch.randn(SHAPE, generator=generator)
        noise = torch.randn(SHAPE, generator=generator)
        if name.startswith("thresholding"):
            model_output = model_output * 2  # so that |x0| spreads across the threshold

        step_results = []
        for index, steps, eta in cases:
            scheduler.set_timesteps(steps)
            timestep = int(scheduler.timesteps[index])
            out = scheduler.step(model_output, timestep, sample, eta=eta,
                                 variance_noise=noise if eta > 0 else None)
            step_results.append({
                "timestep": timestep, "steps": steps, "eta": eta,
                "prev_sample": f32_list(out.prev_sample),
                "pred_original_sample": f32_list(out.pred_original_sample),
            })

        inputs = {"model_output": f32_list(model_output), "sample": f32_list(sample)}
        if any(eta > 0 for _, _, eta in cases):
            inputs["noise"] = f32_list(noise)
        entries.append({
            "name": name,
            "config_json": json.dumps(config),
            "schedule": schedule,
            "final_alpha_cumprod": f32(scheduler.final_alpha_cumprod),
            "timesteps": timesteps,
            "timestep_errors": errors,
            "shape": list(SHAPE),
            "batch": SHAPE[0],
            "inputs": inputs,
            "steps": step_results,
        })

    document = {
        "generator": "tools/make_scheduler_fixtures.py",
        "diffusers_version": diffusers.__version__,
        "torch_version": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_sqrt": sqrt_sample(),
        "alphas_cumprod": schedules,
        "configs": entries,
    }
    with open(args.out, "w") as f:
        json.dump(document, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
