#!/usr/bin/env python3
"""Evaluate kinema-tiny's camera motion (issue 6, item 4) on held-out images.

For each held-out image (tools/tiny_data.py's held-out split: photos and procedural seeds never
used in training) and each motion's plain prompt, generates a video with diffusers'
I2VGenXLPipeline (default) or with Kinema (`--kinema PATH`: runs `PATH generate --model M --image
IN --prompt P --output out.npy` and reads the float32 [F, H, W, 3] array), at the model's kinema.json
settings unless overridden, then estimates the global motion between frame 0 and the last frame:
  - pan: global phase correlation (shift as a fraction of the width/height; + = content moves right/down);
  - zoom: best scale about the centre (search, normalised cross-correlation on the centre region);
  - rotation: best angle about the centre (search; + = content turns clockwise on screen).
The dominant motion (each converted to a displacement at 35% of the width) names the predicted
class; "static" when all are below the thresholds. Reports per motion: direction accuracy (predicted
class == expected), the median pan/scale/angle, first-frame PSNR against the input, and
frame-to-frame flicker after motion compensation (mean absolute difference, 0-255 scale, between
consecutive frames after warping frame k onto frame k+1 with the motion estimated between them).
Checks the issue's targets: accuracy ≥ 90%, PSNR ≥ 24 dB, pans ≥ 3% of the width in opposite
directions, zoom in ≥ 1.08×, zoom out ≤ 0.93×.

  python tools/eval_motion.py --model build-tiny/kinema-tiny --images 10 --device cuda \
      --photo-sources build-tiny/wheels/*.whl --json eval.json
  python tools/eval_motion.py --model Models/kinema-tiny --kinema .build/release/kinema --images 10
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_data  # noqa: E402

TARGET_MOTIONS = ["pan_left", "pan_right", "pan_up", "pan_down", "zoom_in", "zoom_out", "rotate_cw", "rotate_ccw"]
EXPECTED = {"pan_left": ("pan_x", +1), "pan_right": ("pan_x", -1), "pan_up": ("pan_y", +1), "pan_down": ("pan_y", -1),
            "zoom_in": ("zoom", +1), "zoom_out": ("zoom", -1), "rotate_cw": ("rotate", +1), "rotate_ccw": ("rotate", -1),
            "orbit_left": ("parallax", 0), "orbit_right": ("parallax", 0), "static": ("static", 0)}  # orbits: reported, not scored
RADIUS = 0.35        # displacements compared at 35% of the width from the centre
STATIC_BELOW = 0.01  # of the width


# ----------------------------------------------------------------------------- motion estimation

def gray(frame, side=128):
    """Luma-ish mean of an [H, W, 3] frame, area-downsampled so its longer side is at most `side`
    (motion is estimated and flicker measured at that resolution)."""
    g = torch.as_tensor(np.asarray(frame), dtype=torch.float32).mean(-1)
    h, w = g.shape
    if max(h, w) > side:
        g = F.interpolate(g[None, None], size=(round(h * side / max(h, w)), round(w * side / max(h, w))), mode="area")[0, 0]
    return g


def phase_correlation(a, b):
    """Shifts (dx, dy) in pixels moving each a [N, H, W] onto b [H, W] (+ = content moves right/down),
    sub-pixel by a parabola through the peak, and the peak heights (how well the shift explains b)."""
    n, h, w = a.shape
    win = torch.outer(torch.hann_window(h, periodic=False), torch.hann_window(w, periodic=False))
    fa = torch.fft.fft2((a - a.mean((1, 2), keepdim=True)) * win)
    fb = torch.fft.fft2((b - b.mean()) * win)
    r = fb[None] * fa.conj()
    corr = torch.fft.ifft2(r / (r.abs() + 1e-9)).real
    flat = corr.reshape(n, -1)
    heights, peaks = flat.max(1)
    out = []
    for i in range(n):
        py, px = divmod(int(peaks[i]), w)
        c = corr[i]

        def refine(c_m, c_0, c_p):
            d = float(c_m - 2 * c_0 + c_p)
            return 0.0 if abs(d) < 1e-12 else 0.5 * float(c_m - c_p) / d
        dy = py + refine(c[(py - 1) % h, px], c[py, px], c[(py + 1) % h, px])
        dx = px + refine(c[py, (px - 1) % w], c[py, px], c[py, (px + 1) % w])
        out.append((dx - w if dx > w / 2 else dx, dy - h if dy > h / 2 else dy))
    return out, heights


def warp(img, scale=1.0, angle=0.0, dx=0.0, dy=0.0):
    """img [N, H, W] with content scaled about the centre, turned clockwise by angle (radians), shifted
    by (dx, dy) pixels; scale and angle may be tensors [N] (one candidate per image)."""
    n, h, w = img.shape
    scale = torch.as_tensor(scale, dtype=torch.float32).expand(n)
    angle = torch.as_tensor(angle, dtype=torch.float32).expand(n)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output p = s·R·c + d  ->  c = R^-1 (p - d) / s, in normalised coordinates (aspect-aware)
    theta = torch.stack([torch.stack([cos / scale, sin / scale * h / w, -(cos * dx * 2 / w + sin * dy * 2 / w) / scale], -1),
                         torch.stack([-sin / scale * w / h, cos / scale, -(-sin * dx * 2 / h + cos * dy * 2 / h) / scale], -1)], 1)
    grid = F.affine_grid(theta, (n, 1, h, w), align_corners=False)
    return F.grid_sample(img[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]


def estimate(a, b):
    """Similarity motion from frame a to frame b (gray [H, W]): pan_x, pan_y (fractions of the size),
    scale about the centre, angle (degrees, + = clockwise). Searches scale × angle (coarse, then fine);
    each candidate undoes nothing but warps a by (scale, angle) about the centre, and global phase
    correlation gives its shift and a peak height; the highest peak wins."""
    h, w = a.shape
    best = None
    ls_grid = torch.linspace(math.log(0.6), math.log(1.7), 25)
    an_grid = torch.linspace(-0.6, 0.6, 25)
    for _ in range(2):
        ls, an = torch.meshgrid(ls_grid, an_grid, indexing="ij")
        ls, an = ls.reshape(-1), an.reshape(-1)
        cand = warp(a[None].expand(len(ls), h, w), ls.exp(), an)
        shifts, heights = phase_correlation(cand, b)
        i = int(torch.argmax(heights))
        best = (float(ls[i].exp()), float(an[i]), *shifts[i])
        step_s, step_a = float(ls_grid[1] - ls_grid[0]), float(an_grid[1] - an_grid[0])
        ls_grid = torch.linspace(float(ls[i]) - step_s, float(ls[i]) + step_s, 9)
        an_grid = torch.linspace(float(an[i]) - step_a, float(an[i]) + step_a, 9)
    scale, angle, dx, dy = best
    return dict(pan_x=dx / w, pan_y=dy / h, scale=scale, angle=math.degrees(angle), dx=dx, dy=dy)


def classify(m):
    """The dominant motion class of an estimate, each converted to a displacement at RADIUS·width."""
    mags = {"pan_x": abs(m["pan_x"]), "pan_y": abs(m["pan_y"]), "zoom": abs(math.log(m["scale"])) * RADIUS,
            "rotate": abs(math.radians(m["angle"])) * RADIUS}
    signs = {"pan_x": m["pan_x"], "pan_y": m["pan_y"], "zoom": math.log(m["scale"]), "rotate": m["angle"]}
    axis = max(mags, key=mags.get)
    if mags[axis] < STATIC_BELOW:
        return "static", 0
    return axis, 1 if signs[axis] > 0 else -1


def flicker(frames, pairs=0):
    """Mean |frame k+1 − warp(frame k)| (0–255) over consecutive pairs, centre region, after motion
    compensation; `pairs` > 0 measures only that many pairs, evenly spread (estimation is the slow part)."""
    diffs = []
    g = [gray(f) for f in frames]
    ks = list(range(len(g) - 1))
    if 0 < pairs < len(ks):
        ks = [ks[round(i * (len(ks) - 1) / max(pairs - 1, 1))] for i in range(pairs)]
    for a, b in ((g[k], g[k + 1]) for k in ks):
        m = estimate(a, b)
        aligned = warp(a[None], m["scale"], math.radians(m["angle"]), m["dx"], m["dy"])[0]
        h, w = b.shape
        diffs.append(float((aligned - b)[h // 8:h - h // 8, w // 8:w - w // 8].abs().mean()) * 255)
    return float(np.mean(diffs)) if diffs else 0.0


def psnr(a, b):
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(1 / mse)


# ----------------------------------------------------------------------------- generation

class DiffusersGenerator:
    def __init__(self, model, device, dtype):
        from diffusers import I2VGenXLPipeline
        self.pipe = I2VGenXLPipeline.from_pretrained(model, torch_dtype=dtype).to(device)
        if not hasattr(self.pipe.text_encoder, "text_model"):   # transformers 5 flattened CLIPTextModel
            object.__setattr__(self.pipe.text_encoder, "text_model", self.pipe.text_encoder)
        self.pipe.set_progress_bar_config(disable=True)

    def __call__(self, image_path, prompt, s, seed):
        torch.manual_seed(seed)
        out = self.pipe(prompt=prompt, image=Image.open(image_path).convert("RGB"), width=s["width"], height=s["height"],
                        num_frames=s["frames"], target_fps=s["fps"], num_inference_steps=s["steps"],
                        guidance_scale=s["guidance"], decode_chunk_size=s["frames"], output_type="np",
                        generator=torch.Generator("cpu").manual_seed(seed))
        return np.asarray(out.frames[0], np.float32)


class KinemaGenerator:
    def __init__(self, binary, model, extra):
        self.binary, self.model, self.extra = binary, model, extra

    def __call__(self, image_path, prompt, s, seed):
        out = image_path + ".npy"
        cmd = [self.binary, "generate", "--model", self.model, "--image", image_path, "--prompt", prompt,
               "--output", out, "--seed", str(seed)] + self.extra
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        return np.load(out).astype(np.float32)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="diffusers folder with kinema.json")
    p.add_argument("--kinema", help="path of the kinema binary: evaluate Kinema's output instead of diffusers'")
    p.add_argument("--kinema-args", default="", help="extra arguments for `kinema generate` (space-separated)")
    p.add_argument("--images", type=int, default=10, help="held-out images")
    p.add_argument("--motions", default=",".join(TARGET_MOTIONS), help="comma-separated, from tiny_data.MOTIONS")
    p.add_argument("--photo-sources", nargs="*", default=[], help="scikit-image / scikit-learn wheels or folders")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--frames", type=int)
    p.add_argument("--fps", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--fp16", action="store_true", help="run diffusers in fp16 (GPU)")
    p.add_argument("--flicker-pairs", type=int, default=0, help="consecutive pairs measured for flicker (0: all)")
    p.add_argument("--json", help="write the full results here")
    args = p.parse_args()

    settings = dict(width=256, height=256, frames=16, fps=8, steps=20, guidance=6.0)
    path = os.path.join(args.model, "kinema.json")
    if os.path.exists(path):
        settings.update(json.load(open(path)))
    for key in settings:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    motions = args.motions.split(",")
    extra = args.kinema_args.split()
    for key, flag in (("width", "--width"), ("height", "--height"), ("frames", "--frames"), ("fps", "--fps"),
                      ("steps", "--steps"), ("guidance", "--guidance")):
        if getattr(args, key) is not None:
            extra += [flag, str(settings[key])]
    gen = KinemaGenerator(args.kinema, args.model, extra) if args.kinema else DiffusersGenerator(
        args.model, args.device, torch.float16 if args.fp16 else torch.float32)

    photos = tiny_data.load_photos(args.photo_sources)
    images = tiny_data.heldout_images(args.images, settings["width"], settings["height"], photos, args.seed)
    print(f"settings {settings}; {len(images)} held-out images ({len(photos)} photos found); motions {motions}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, img) in enumerate(images):
            image_path = os.path.join(tmp, f"heldout-{i}.png")
            Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(image_path)
            reference = np.asarray(Image.open(image_path), np.float32) / 255
            for motion in motions:
                prompt = tiny_data.PLAIN_PROMPTS[motion]
                t0 = time.time()
                frames = gen(image_path, prompt, settings, args.seed + i)
                seconds = time.time() - t0
                m = estimate(gray(frames[0]), gray(frames[-1]))
                axis, sign = classify(m)
                want_axis, want_sign = EXPECTED[motion]
                r = dict(image=name, motion=motion, prompt=prompt, seconds=seconds, **m, predicted=f"{axis}{'+-'[sign < 0] if sign else ''}",
                         correct=(axis == want_axis and sign == want_sign), psnr_first=psnr(frames[0], reference),
                         flicker=flicker(frames, args.flicker_pairs))
                results.append(r)
                print(f"{name:40s} {motion:11s} pan ({m['pan_x']:+.3f}, {m['pan_y']:+.3f}) scale {m['scale']:.3f} "
                      f"angle {m['angle']:+.1f}° -> {r['predicted']:8s} {'ok ' if r['correct'] else 'BAD'} "
                      f"psnr {r['psnr_first']:.1f} flicker {r['flicker']:.2f} ({seconds:.1f}s)", flush=True)

    print("\nper motion: accuracy, median pan_x/pan_y/scale/angle, mean first-frame PSNR, mean flicker")
    summary = {}
    for motion in motions:
        rs = [r for r in results if r["motion"] == motion]
        med = lambda k: float(np.median([r[k] for r in rs]))
        summary[motion] = dict(accuracy=float(np.mean([r["correct"] for r in rs])), pan_x=med("pan_x"), pan_y=med("pan_y"),
                               scale=med("scale"), angle=med("angle"), psnr_first=float(np.mean([r["psnr_first"] for r in rs])),
                               flicker=float(np.mean([r["flicker"] for r in rs])))
        s = summary[motion]
        print(f"  {motion:11s} {100 * s['accuracy']:5.1f}%  pan ({s['pan_x']:+.3f}, {s['pan_y']:+.3f})  scale {s['scale']:.3f}  "
              f"angle {s['angle']:+.1f}°  psnr {s['psnr_first']:.2f} dB  flicker {s['flicker']:.2f}")
    target = [r for r in results if r["motion"] in TARGET_MOTIONS]
    checks = {}
    if target:
        checks["direction accuracy >= 90%"] = float(np.mean([r["correct"] for r in target])) >= 0.9
    checks["first-frame PSNR >= 24 dB"] = float(np.mean([r["psnr_first"] for r in results])) >= 24
    if "pan_left" in summary and "pan_right" in summary:
        l, r_ = summary["pan_left"]["pan_x"], summary["pan_right"]["pan_x"]
        checks["pans >= 3% of the width, opposite"] = abs(l) >= 0.03 and abs(r_) >= 0.03 and l * r_ < 0
    if "zoom_in" in summary:
        checks["zoom in >= 1.08x"] = summary["zoom_in"]["scale"] >= 1.08
    if "zoom_out" in summary:
        checks["zoom out <= 0.93x"] = summary["zoom_out"]["scale"] <= 0.93
    print("\nissue 6 targets:")
    for k, v in checks.items():
        print(f"  {'PASS' if v else 'FAIL'}  {k}")
    print(f"  overall accuracy {100 * np.mean([r['correct'] for r in target]) if target else float('nan'):.1f}% over "
          f"{len(target)} videos; mean generation {np.mean([r['seconds'] for r in results]):.1f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(settings=settings, results=results, summary=summary, checks=checks), f, indent=1)


if __name__ == "__main__":
    main()
