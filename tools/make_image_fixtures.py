#!/usr/bin/env python3
"""Generate Pillow reference fixtures for Kinema's image preprocessing tests.

Writes Tests/KinemaPipelineTests/Fixtures/images/:

  index.json              what every case is and where its bytes live (offset, length)
  sources.rgb             small deterministic RGB test images (seeded noise, gradients,
                          sharp edges), raw 8-bit RGB interleaved, row-major
  resize_box.rgb          PIL Image.resize(..., BOX) outputs of those images (Pillow 13 changed the
                          order of the two passes for some sizes: regenerate with Pillow >= 13)
  resize_bilinear.rgb     PIL Image.resize(..., BILINEAR) outputs of those images
  crop.rgb                PIL Image.crop outputs, including boxes outside the image
  center_crop_wide.rgb    diffusers' `_center_crop_wide` outputs, including target sizes
                          that hit its one-pixel-short float floor-division quirk
  clip.f32                the CLIP branch as the I2VGen-XL pipeline computes it
                          (float32 little-endian, (3, S, S))
  clip_table.f32          the feature extractor's output for every uint8 value, per channel
                          ((3, 256) float32); for S = 224 the fixture holds the hash of the
                          224x224 uint8 image and the float output is exactly
                          clip_table[c][pixel] (checked here)
  vae.f32                 the VAE branch (float32 little-endian, (3, H, W))
  unit_floats.f32 / .rgb  diffusers' float-tensor -> PIL conversion (`_convert_pt_to_pil`)

Large outputs are stored as FNV-1a 64 hashes of their bytes (`fnv1a64`): the released
1280-wide model's sizes, on a source image given by a formula the Swift test reproduces
(`pattern_image`), and the 224x224 CLIP image.

Every reference comes from the installed Pillow / diffusers / transformers code paths, not a
re-implementation. The output is deterministic. Run from the repo root:

    /work/venv/bin/python tools/make_image_fixtures.py

Python is a developer tool only, never a build or run-time dependency of Kinema.
"""

import argparse
import json
import os

import numpy as np
import PIL
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from diffusers.pipelines.deprecated.i2vgen_xl.pipeline_i2vgen_xl import (
    _center_crop_wide,
    _convert_pt_to_pil,
    _resize_bilinear,
)
from diffusers.video_processor import VideoProcessor

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "KinemaPipelineTests", "Fixtures", "images")

FILTERS = {"box": Image.BOX, "bilinear": Image.BILINEAR}


class Blob:
    """One binary file that many cases append their bytes to."""

    def __init__(self, name):
        self.name = name
        self.data = bytearray()

    def put(self, raw):
        offset = len(self.data)
        self.data += raw
        return {"file": self.name, "offset": offset, "length": len(raw)}


def rgb_bytes(image):
    assert image.mode == "RGB"
    return np.asarray(image, dtype=np.uint8).tobytes()


def f32_bytes(array):
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def fnv1a64(raw):
    h = 0xCBF29CE484222325
    for b in raw:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def format_index(index):
    """JSON with one case per line: small, and a case diff reads as one line."""
    lines = []
    for key, value in index.items():
        if isinstance(value, list):
            body = ",\n".join("  " + json.dumps(v) for v in value)
            lines.append(f' "{key}": [\n{body}\n ]')
        elif isinstance(value, dict) and key == "sources":
            body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f' "{key}": {{\n{body}\n }}')
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def make_sources(rng):
    """Small images mixing seeded noise, smooth gradients and hard edges."""
    sizes = [(37, 23), (64, 48), (50, 50), (96, 54), (33, 77)]
    images = {}
    for i, (w, h) in enumerate(sizes):
        y, x = np.mgrid[0:h, 0:w]
        noise = rng.integers(0, 256, size=(h, w, 3))
        gradient = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 255 // (w + h - 2)], -1)
        edges = np.where(((x // 5) + (y // 4)) % 2 == 0, 255, 0)[..., None].repeat(3, -1)
        # Left third noise, middle third gradient, right third checkerboard; a white and a black
        # bar across the top rows to exercise the clip at 0 and 255.
        pixels = np.where(x[..., None] < w // 3, noise, np.where(x[..., None] < 2 * w // 3, gradient, edges))
        pixels[0, :] = 255
        pixels[1, :] = 0
        pixels = pixels.astype(np.uint8)
        images[f"s{i}_{w}x{h}"] = Image.fromarray(pixels, "RGB")
    return images


def pattern_image(w, h):
    """A source the Swift test rebuilds from this formula: texture plus gradients plus edges."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    c = np.arange(3, dtype=np.int64)
    v = ((x[..., None] * 37 + y[..., None] * 91 + c * 53) ^ ((x * y)[..., None] >> 3)) & 255
    return Image.fromarray(v.astype(np.uint8), "RGB")


def resize_sizes(w, h):
    sizes = [
        (max(1, w // 7), max(1, h // 7)),  # downscale by 7
        (w // 2, h),  # horizontal pass only
        (1, h),
        (w, 1),
        (1, 1),
        (max(1, w // 9), h // 2 + 1),
        (w - 3, h // 2),
    ]
    if w * h <= 2500:  # the remaining sizes only on the small images, to keep the fixture small
        sizes += [(w, h - h // 3), (w + 1, h + 5), (w * 2, max(1, h // 5))]  # (w, *): vertical pass only
    if w * h <= 1000:
        sizes.append((w * 3, h * 3))  # upscale by 3
        # Pillow 13 runs the vertical pass first when the height loses more than twice as many pixels as
        # the width: just over and just at that boundary.
        sizes += [(w - 2, h - 5), (w - 2, h - 4)]
    return sizes


def quirk_targets(w, h):
    """Target sizes for which `_center_crop_wide` resizes one pixel short (brute force).

    Returns at most one target short in both directions, one short in width and one short in
    height, each the first found among targets from half the source size up to 20 pixels more,
    of at most 2500 pixels.
    """
    found = {}
    for tw in range(max(2, w // 2), w + 20):
        for th in range(max(2, h // 2), h + 20):
            scale = min(w / tw, h / th)
            short = (round(w // scale) < tw, round(h // scale) < th)
            if any(short) and tw * th <= 2500:
                found.setdefault(short, (tw, th))
    return list(found.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = parser.parse_args()
    if int(PIL.__version__.split(".")[0]) < 13:
        raise SystemExit(f"Pillow {PIL.__version__} orders its resize passes differently; use Pillow 13 or newer")
    os.makedirs(args.out, exist_ok=True)

    rng = np.random.default_rng(20240613)
    blobs = {n: Blob(n) for n in ["sources.rgb", "resize_box.rgb", "resize_bilinear.rgb", "crop.rgb",
                                   "center_crop_wide.rgb", "clip.f32", "clip_table.f32", "vae.f32", "unit_floats.f32",
                                   "unit_floats.rgb"]}
    index = {"pillow_version": PIL.__version__, "sources": {}, "resize": [], "crop": [], "center_crop_wide": [],
             "clip": [], "clip224": [], "vae": [], "unit_floats": [], "hashed": []}

    sources = make_sources(rng)
    for name, im in sources.items():
        index["sources"][name] = {"width": im.width, "height": im.height, **blobs["sources.rgb"].put(rgb_bytes(im))}

    for name, im in sources.items():
        w, h = im.size
        for filter_name, flt in FILTERS.items():
            for tw, th in resize_sizes(w, h):
                out = im.resize((tw, th), flt)
                index["resize"].append({"source": name, "filter": filter_name, "width": tw, "height": th,
                                        **blobs[f"resize_{filter_name}.rgb"].put(rgb_bytes(out))})

    for name in ["s0_37x23"]:
        im = sources[name]
        w, h = im.size
        for box in [(-1, -1, w - 1, h - 1), (-3, 2, w // 2, h + 4), (5, -7, w + 6, h // 2), (-2, -2, w + 2, h + 2),
                    (w - 2, h - 2, w + 3, h + 1), (3, 4, 3, 9), (w + 1, 0, w + 4, 3)]:
            out = im.crop(box)
            index["crop"].append({"source": name, "box": list(box), "width": out.width, "height": out.height,
                                  **blobs["crop.rgb"].put(rgb_bytes(out))})

    for name, im in sources.items():
        w, h = im.size
        targets = quirk_targets(w, h) + [(max(2, w // 2), max(2, h // 3))]
        if w * h <= 1000:
            targets += [(w + 11, h + 3), (w, h)]  # an exact upscale and the unchanged size (a copy)
        for tw, th in targets:
            out = _center_crop_wide(im, (tw, th))
            scale = min(w / tw, h / th)
            index["center_crop_wide"].append({
                "source": name, "width": tw, "height": th,
                "resized_width": round(w // scale), "resized_height": round(h // scale),
                **blobs["center_crop_wide.rgb"].put(rgb_bytes(out))})

    # CLIP branch, exactly as I2VGenXLPipeline.__call__ and _encode_image do it (minus the encoder).
    def clip_branch(im, width, s):
        extractor = CLIPImageProcessor(crop_size={"height": s, "width": s})
        video_processor = VideoProcessor(vae_scale_factor=8, do_resize=False)
        cropped = _center_crop_wide(im, (width, width))
        cropped = _resize_bilinear(cropped, (extractor.crop_size["width"], extractor.crop_size["height"]))
        t = video_processor.numpy_to_pt(video_processor.pil_to_numpy(cropped))
        pixels = extractor(images=t, do_normalize=True, do_center_crop=False, do_resize=False, do_rescale=False,
                           return_tensors="pt").pixel_values
        return cropped, pixels[0].to(torch.float32).numpy()

    mean, std = CLIPImageProcessor().image_mean, CLIPImageProcessor().image_std
    index["clip_mean"], index["clip_std"] = mean, std
    for name, width in [("s0_37x23", 40), ("s1_64x48", 24), ("s4_33x77", 56)]:
        _, pixels = clip_branch(sources[name], width, 32)
        index["clip"].append({"source": name, "width": width, "crop_size": 32, **blobs["clip.f32"].put(f32_bytes(pixels))})

    # Table of the feature extractor's output for every uint8 value: a 256x1 ramp image.
    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, -1).repeat(2, 1), "RGB")
    extractor = CLIPImageProcessor(crop_size={"height": 256, "width": 2})
    video_processor = VideoProcessor(vae_scale_factor=8, do_resize=False)
    table = extractor(images=video_processor.numpy_to_pt(video_processor.pil_to_numpy(ramp)), do_normalize=True,
                      do_center_crop=False, do_resize=False, do_rescale=False, return_tensors="pt").pixel_values[0]
    table = table[:, :, 0].to(torch.float32).numpy()  # (3, 256, 2) -> (3, 256)
    index["clip_table"] = blobs["clip_table.f32"].put(f32_bytes(table))
    for name, width in [("s2_50x50", 64)]:
        cropped, pixels = clip_branch(sources[name], width, 224)
        u8 = np.asarray(cropped).transpose(2, 0, 1)
        assert np.array_equal(table[np.arange(3)[:, None, None], u8], pixels), "CLIP table does not reproduce output"
        index["clip224"].append({"source": name, "width": width, "crop_size": 224,
                                 "fnv1a64": fnv1a64(rgb_bytes(cropped))})

    # VAE branch: _center_crop_wide then VideoProcessor(vae_scale_factor=8, do_resize=False).preprocess.
    video_processor = VideoProcessor(vae_scale_factor=8, do_resize=False)
    for name, width, height in [("s1_64x48", 40, 24), ("s4_33x77", 24, 48), ("s0_37x23", 48, 40)]:
        t = video_processor.preprocess(_center_crop_wide(sources[name], (width, height)))
        index["vae"].append({"source": name, "width": width, "height": height,
                             **blobs["vae.f32"].put(f32_bytes(t[0].to(torch.float32).numpy()))})

    # Float tensor -> PIL, as the pipeline converts a tensor input; values slightly outside [0, 1]
    # show the wrap of numpy's unclamped astype(uint8), exact halves show round-half-even.
    w, h = 13, 7
    floats = rng.uniform(-0.05, 1.05, size=(3, h, w)).astype(np.float32)
    floats[0, 0, :6] = np.array([0.5, 1.5, 2.5, 253.5, 254.5, 127.5], dtype=np.float32) / np.float32(255)
    pil = _convert_pt_to_pil(torch.from_numpy(floats))[0]
    index["unit_floats"].append({"width": w, "height": h, "floats": blobs["unit_floats.f32"].put(f32_bytes(floats)),
                                 "pixels": blobs["unit_floats.rgb"].put(rgb_bytes(pil))})

    # Larger resizes, hashed, on both sides of Pillow 13's pass-order boundary (vertical pass first
    # when the height loses more than twice as many pixels as the width).
    for (w, h), (tw, th) in [(((200, 300), (190, 279))), ((200, 300), (190, 280)), ((640, 1200), (600, 1000)),
                             ((100, 900), (120, 300)), ((300, 200), (150, 40)), ((1500, 1000), (224, 224))]:
        im = pattern_image(w, h)
        for filter_name, flt in FILTERS.items():
            index["hashed"].append({"kind": "resize", "filter": filter_name, "source_width": w, "source_height": h,
                                    "width": tw, "height": th, "fnv1a64": fnv1a64(rgb_bytes(im.resize((tw, th), flt)))})

    # The released model's sizes, hashed: both quirks of the design note and the CLIP 224 image.
    for (w, h), (tw, th) in [((512, 512), (1280, 1280)), ((1024, 576), (1280, 704)), ((640, 360), (1280, 704))]:
        im = pattern_image(w, h)
        out = _center_crop_wide(im, (tw, th))
        index["hashed"].append({"kind": "center_crop_wide", "source_width": w, "source_height": h,
                                "width": tw, "height": th, "fnv1a64": fnv1a64(rgb_bytes(out))})
        clip = _resize_bilinear(_center_crop_wide(im, (tw, tw)), (224, 224))
        index["hashed"].append({"kind": "clip_image", "source_width": w, "source_height": h, "width": tw,
                                "crop_size": 224, "fnv1a64": fnv1a64(rgb_bytes(clip))})

    for blob in blobs.values():
        assert len(blob.data) < 200_000, f"{blob.name} is {len(blob.data)} bytes"
        with open(os.path.join(args.out, blob.name), "wb") as f:
            f.write(blob.data)
    with open(os.path.join(args.out, "index.json"), "w") as f:
        f.write(format_index(index))
    total = sum(len(b.data) for b in blobs.values())
    print(f"wrote {len(blobs) + 1} files, {total} bytes of data, to {args.out}")


if __name__ == "__main__":
    main()
