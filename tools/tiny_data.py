#!/usr/bin/env python3
"""Offline training data for kinema-tiny: clips of camera motion over still images.

Everything comes from code and pip wheels, so it runs on a GPU machine with no network:
  - procedural images (seeded): colour gradients with shapes, fractal noise fields, stripe and
    checker textures, and simple landscape "scenes" (sky, sun, ridges, ground, houses, trees);
  - photographs bundled inside scikit-image's and scikit-learn's wheels (no pooch downloads): pass
    the wheels (or installed packages are used when importable) with --photo-sources.

Clips are rendered by warping a canvas larger than the view (so pans and zoom-outs reveal real
content): zoom in/out about the centre, pans left/right/up/down, rotations both ways, an orbit with
two parallax layers (background and foreground move in opposite directions), and static, each at
three speeds. Frame 0 is the identity view, which is exactly the W×H input image the pipeline gets
(its centre crop of a W×H image is the identity). Prompts are drawn from varied phrasings per motion,
with or without a speed word. Images are split into train and held-out sets by image.

Conventions (the words describe what the camera does; the content moves the other way):
  "pans to the left"  -> content moves right in the frame; "pans up" -> content moves down;
  "zoom in" -> content magnifies about the centre; "rotates clockwise" -> content turns clockwise
  on screen (the roll is named for what the viewer sees); "orbits left" -> background moves right,
  foreground moves left.

Used as a module by tools/train_tiny.py (ClipSampler renders batches on the fly on the GPU) and
tools/eval_motion.py (held-out images). As a script it writes a few .npz shards for inspection:
  python tools/tiny_data.py --out /tmp/tiny_shards --clips 64 --size 64 --frames 8 \
      --photo-sources /tmp/tiny_wheels/scikit_image-*.whl /tmp/tiny_wheels/scikit_learn-*.whl
"""
import argparse
import io
import math
import os
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

MOTIONS = ["zoom_in", "zoom_out", "pan_left", "pan_right", "pan_up", "pan_down",
           "rotate_cw", "rotate_ccw", "orbit_left", "orbit_right", "static"]

# Total motion over a whole clip at "normal" speed; "slow" and "fast" scale it.
SPEEDS = {"slow": 0.55, "normal": 1.0, "fast": 1.6}
PAN_FRACTION = 0.16      # of the view width
ZOOM_LOG = math.log(1.35)
ROTATE_RADIANS = math.radians(16)
ORBIT_FRACTION = 0.10

SPEED_WORDS = {"slow": ["slowly", "gently", "gradually", "very slowly"],
               "normal": [""],
               "fast": ["quickly", "rapidly", "fast", "swiftly"]}

# "{s}" is a speed word (or nothing); phrasings stay under 77 tokens.
PROMPTS = {
    "zoom_in": ["zoom in", "{s} zoom in", "the camera {s} zooms in", "camera zooms in {s}", "{s} push in toward the centre",
                "the camera moves closer", "dolly in {s}", "zooming in", "a {s} zoom into the scene", "move in closer {s}"],
    "zoom_out": ["zoom out", "{s} zoom out", "the camera {s} zooms out", "camera zooms out {s}", "{s} pull back from the scene",
                 "the camera moves away", "dolly out {s}", "zooming out", "a {s} zoom out of the scene", "pull out {s}"],
    "pan_left": ["the camera pans to the left", "pan left", "{s} pan left", "the camera {s} pans left", "camera pans to the left {s}",
                 "a {s} pan to the left", "panning left", "the view turns left {s}", "move the camera left", "track left {s}"],
    "pan_right": ["the camera pans to the right", "pan right", "{s} pan right", "the camera {s} pans right", "camera pans to the right {s}",
                  "a {s} pan to the right", "panning right", "the view turns right {s}", "move the camera right", "track right {s}"],
    "pan_up": ["the camera pans up", "pan up", "{s} tilt up", "the camera {s} tilts upward", "camera pans upward {s}",
               "a {s} tilt up", "tilting up", "the view moves up {s}", "move the camera up", "crane up {s}"],
    "pan_down": ["the camera pans down", "pan down", "{s} tilt down", "the camera {s} tilts downward", "camera pans downward {s}",
                 "a {s} tilt down", "tilting down", "the view moves down {s}", "move the camera down", "crane down {s}"],
    "rotate_cw": ["the camera rotates clockwise", "rotate clockwise", "{s} rotate clockwise", "the view {s} spins clockwise",
                  "camera rolls clockwise {s}", "a {s} clockwise rotation", "turning clockwise", "the image rotates clockwise {s}"],
    "rotate_ccw": ["the camera rotates counterclockwise", "rotate counterclockwise", "{s} rotate anticlockwise",
                   "the view {s} spins counterclockwise", "camera rolls counterclockwise {s}", "a {s} counterclockwise rotation",
                   "turning anticlockwise", "the image rotates counterclockwise {s}"],
    "orbit_left": ["the camera orbits to the left", "orbit left", "{s} orbit left around the subject", "the camera {s} circles left",
                   "arc shot to the left {s}", "parallax move to the left"],
    "orbit_right": ["the camera orbits to the right", "orbit right", "{s} orbit right around the subject", "the camera {s} circles right",
                    "arc shot to the right {s}", "parallax move to the right"],
    "static": ["static camera", "the camera stays still", "still shot", "no camera motion", "a static view", "locked-off shot",
               "the camera does not move", "still image"],
}

# The plain prompts of issue 6's targets (eval_motion.py uses these).
PLAIN_PROMPTS = {"pan_left": "the camera pans to the left", "pan_right": "the camera pans to the right",
                 "pan_up": "the camera pans up", "pan_down": "the camera pans down",
                 "zoom_in": "zoom in", "zoom_out": "zoom out",
                 "rotate_cw": "the camera rotates clockwise", "rotate_ccw": "the camera rotates counterclockwise",
                 "orbit_left": "the camera orbits to the left", "orbit_right": "the camera orbits to the right",
                 "static": "static camera"}

# Photographs bundled in the wheels, with their licenses (see MODEL_CARD.md).
PHOTOS = {
    "skimage/data/astronaut.png": "public domain (NASA)",
    "skimage/data/camera.png": "CC0 (Lav Varshney)",
    "skimage/data/coffee.png": "CC0 (Rachel Michetti)",
    "skimage/data/chelsea.png": "CC0 (Stefan van der Walt)",
    "skimage/data/rocket.jpg": "public domain (SpaceX)",
    "skimage/data/hubble_deep_field.jpg": "public domain (NASA)",
    "skimage/data/retina.jpg": "CC0 (Mikael Häggström)",
    "skimage/data/coins.png": "no known copyright restrictions (Brooklyn Museum)",
    "skimage/data/moon.png": "no known copyright restrictions",
    "skimage/data/brick.png": "CC0 (CC0Textures Bricks25)",
    "skimage/data/grass.png": "CC0 (linolafett, DeviantArt)",
    "skimage/data/gravel.png": "CC0 (CC0Textures Gravel04)",
    "skimage/data/ihc.png": "public domain (Kilbad)",
    "sklearn/datasets/images/china.jpg": "CC BY 2.0 (danielbuechele, Flickr)",
    "sklearn/datasets/images/flower.jpg": "CC BY 2.0 (vultilion, Flickr)",
}
HELD_OUT_PHOTOS = {"skimage/data/coffee.png", "skimage/data/rocket.jpg", "sklearn/datasets/images/china.jpg"}
PROMPT_SPEEDS = list(SPEEDS)


def prompt_for(motion, speed, rng):
    """A phrasing of `motion`, with a speed word for slow/fast clips when the template has a slot."""
    template = PROMPTS[motion][rng.integers(len(PROMPTS[motion]))]
    word = SPEED_WORDS[speed][rng.integers(len(SPEED_WORDS[speed]))] if motion != "static" else ""
    if "{s}" not in template and word and rng.random() < 0.7:
        template = word + " " + template if rng.random() < 0.5 else template + " " + word
    return " ".join(template.replace("{s}", word).split())


def all_prompts():
    """Every prompt the sampler can produce (for caching text embeddings of a frozen encoder)."""
    out = set(PLAIN_PROMPTS.values())
    for motion, templates in PROMPTS.items():
        for template in templates:
            for speed in SPEEDS:
                for word in (SPEED_WORDS[speed] if motion != "static" else [""]):
                    out.add(" ".join(template.replace("{s}", word).split()))
                    if "{s}" not in template and word:
                        out.add(word + " " + template)
                        out.add(template + " " + word)
    return sorted(out)


# ----------------------------------------------------------------------------- procedural images

def _colour(rng):
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _fractal_noise(rng, size, octaves=5):
    out = np.zeros((size, size, 3), np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        cells = 2 ** (octave + 2)
        grid = rng.random((cells, cells, 3)).astype(np.float32)
        up = np.asarray(Image.fromarray((grid * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float32) / 255
        out += amplitude * up
        amplitude *= 0.55
    out -= out.min((0, 1))
    out /= out.max((0, 1)) + 1e-6
    palette = np.stack([np.array(_colour(rng)), np.array(_colour(rng))]).astype(np.float32) / 255
    mixed = out[..., :1] * palette[0] + (1 - out[..., :1]) * palette[1]
    return np.clip(0.65 * mixed + 0.35 * out, 0, 1)


def _gradient(rng, size):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.random() * 2 * math.pi
    t = (np.cos(angle) * x + np.sin(angle) * y)
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    a, b = np.array(_colour(rng), np.float32) / 255, np.array(_colour(rng), np.float32) / 255
    return t[..., None] * a + (1 - t[..., None]) * b


def _shapes(draw, rng, size, count):
    for _ in range(count):
        kind = rng.integers(4)
        cx, cy, r = rng.random() * size, rng.random() * size, (0.03 + 0.15 * rng.random()) * size
        fill, outline = _colour(rng), _colour(rng)
        if kind == 0:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=max(1, int(r / 8)))
        elif kind == 1:
            draw.rectangle([cx - r, cy - r * rng.random(), cx + r * rng.random(), cy + r], fill=fill, outline=outline)
        elif kind == 2:
            pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in np.sort(rng.random(rng.integers(3, 7)) * 2 * math.pi)]
            draw.polygon(pts, fill=fill, outline=outline)
        else:
            draw.line([cx - r, cy - r, cx + r, cy + r * (2 * rng.random() - 1)], fill=fill, width=max(1, int(r / 4)))


def _stripes(rng, size):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.random() * math.pi
    freq = 4 + 20 * rng.random()
    u = np.cos(angle) * x + np.sin(angle) * y
    v = -np.sin(angle) * x + np.cos(angle) * y
    if rng.random() < 0.5:
        t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * u)
    else:
        t = ((np.floor(freq * u) + np.floor(freq * v)) % 2).astype(np.float32)
    a, b = np.array(_colour(rng), np.float32) / 255, np.array(_colour(rng), np.float32) / 255
    img = t[..., None] * a + (1 - t[..., None]) * b
    return np.clip(img + 0.25 * (_fractal_noise(rng, size, 4) - 0.5), 0, 1)


def _scene(rng, size):
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    horizon = int(size * (0.35 + 0.3 * rng.random()))
    sky_top, sky_bottom = np.array(_colour(rng)), np.array(_colour(rng))
    for row in range(horizon):
        t = row / max(horizon - 1, 1)
        draw.line([0, row, size, row], fill=tuple(int(v) for v in (1 - t) * sky_top + t * sky_bottom))
    sr = size * (0.04 + 0.06 * rng.random())
    sx, sy = rng.random() * size, rng.random() * horizon * 0.8
    draw.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=_colour(rng))
    for layer in range(rng.integers(1, 4)):
        base = horizon - size * 0.05 * layer
        xs = np.linspace(0, size, 24)
        ys = base - size * 0.18 * np.abs(np.cumsum(rng.normal(0, 0.35, 24))) / 3
        draw.polygon([(0, size)] + list(zip(xs, ys)) + [(size, size)], fill=_colour(rng))
    ground = np.asarray(img, np.float32) / 255
    texture = _fractal_noise(rng, size, 5)
    ground[horizon:] = 0.55 * ground[horizon:] + 0.45 * texture[horizon:]
    img = Image.fromarray((ground * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 12)):
        x, w = rng.random() * size, size * (0.03 + 0.08 * rng.random())
        h, y = w * (1 + 2 * rng.random()), horizon + rng.random() * (size - horizon)
        if rng.random() < 0.5:
            draw.rectangle([x, y - h, x + w, y], fill=_colour(rng), outline=(0, 0, 0))
            draw.polygon([(x - w * 0.1, y - h), (x + w * 0.5, y - h - w * 0.6), (x + w * 1.1, y - h)], fill=_colour(rng))
        else:
            draw.rectangle([x + w * 0.4, y - h * 0.4, x + w * 0.6, y], fill=(90, 60, 30))
            draw.ellipse([x, y - h, x + w, y - h * 0.3], fill=_colour(rng))
    return np.asarray(img, np.float32) / 255


def procedural_image(seed, size):
    """One seeded procedural RGB image in [0, 1], float32 (size, size, 3), anti-aliased."""
    rng = np.random.default_rng(seed)
    big = size * 2
    kind = seed % 4
    if kind == 0:
        base = _gradient(rng, big)
    elif kind == 1:
        base = _fractal_noise(rng, big)
    elif kind == 2:
        base = _stripes(rng, big)
    else:
        base = _scene(rng, big)
    img = Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8))
    if kind != 3:
        _shapes(ImageDraw.Draw(img), rng, big, int(rng.integers(4, 30)))
    img = img.resize((size, size), Image.BOX)
    return np.asarray(img, np.float32) / 255


def foreground_layer(seed, size):
    """An RGBA layer of a few opaque objects (for the parallax orbit), float32 (size, size, 4)."""
    rng = np.random.default_rng(seed + 7919)
    big = size * 2
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        cx, cy = (0.2 + 0.6 * rng.random()) * big, (0.2 + 0.6 * rng.random()) * big
        r = (0.05 + 0.1 * rng.random()) * big
        fill = _colour(rng) + (255,)
        if rng.random() < 0.5:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=(0, 0, 0, 255), width=max(1, int(r / 10)))
        else:
            draw.rectangle([cx - r, cy - 1.5 * r, cx + r, cy + 1.5 * r], fill=fill, outline=(0, 0, 0, 255), width=max(1, int(r / 10)))
    img = img.resize((size, size), Image.BOX)
    return np.asarray(img, np.float32) / 255


# ----------------------------------------------------------------------------- photographs

def load_photos(sources):
    """{wheel path: PIL RGB image} for the bundled photos found in the given wheels or folders.

    `sources` are .whl files or site-packages-like folders; when empty, installed packages are tried."""
    found = {}
    candidates = list(sources or [])
    if not candidates:
        for module in ("skimage", "sklearn"):
            try:
                mod = __import__(module)
                candidates.append(os.path.dirname(os.path.dirname(mod.__file__)))
            except ImportError:
                pass
    for source in candidates:
        if source.endswith(".whl"):
            with zipfile.ZipFile(source) as wheel:
                names = set(wheel.namelist())
                for path in PHOTOS:
                    if path in names:
                        found[path] = Image.open(io.BytesIO(wheel.read(path))).convert("RGB")
        else:
            for path in PHOTOS:
                full = os.path.join(source, path)
                if os.path.exists(full):
                    found[path] = Image.open(full).convert("RGB")
    return found


def photo_canvas(photo, size, rng):
    """A random square crop of a photo, resized to size×size, float32 in [0, 1]."""
    w, h = photo.size
    side = int(min(w, h) * (0.6 + 0.4 * rng.random()))
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    crop = photo.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BOX)
    return np.asarray(crop, np.float32) / 255


# ----------------------------------------------------------------------------- canvases and splits

CANVAS_MARGIN = 1.75  # canvas side / view side: room for pans, zoom-outs and rotations


def canvas_size(view):
    return int(round(view * CANVAS_MARGIN / 8)) * 8


def _procedural_pair(job):
    seed, size, procedural = job
    return (procedural_image(seed, size) if procedural else None), foreground_layer(seed, size)


def build_canvases(split, count, view, photos, seed=0, workers=None):
    """(canvases [N, S, S, 3] uint8, foregrounds [N, S, S, 4] uint8, names) for 'train' or 'heldout'.

    Procedural seeds are disjoint between splits (train seeds are ≥ 1_000_000); photos are split by
    HELD_OUT_PHOTOS. About a quarter of the training canvases are photo crops when photos are
    available; the held-out set starts with every held-out photo. Procedural images are drawn in
    `workers` processes (default: all cores)."""
    size = canvas_size(view)
    rng = np.random.default_rng(seed + (0 if split == "train" else 17))
    names = [p for p in photos if (p in HELD_OUT_PHOTOS) == (split == "heldout")]
    base = 1_000_000 + seed * 100_000 if split == "train" else seed * 1000
    labels, photo_canvases = [], {}
    for i in range(count):
        if names and (split == "heldout" and i < len(names) or split == "train" and rng.random() < 0.25):
            name = names[i % len(names)] if split == "heldout" else names[int(rng.integers(len(names)))]
            photo_canvases[i] = photo_canvas(photos[name], size, rng)
            labels.append(name)
        else:
            labels.append(f"procedural:{base + i}")
    jobs = [(base + i, size, i not in photo_canvases) for i in range(count)]
    workers = workers or os.cpu_count() or 1
    if workers > 1 and count > 4:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pairs = pool.map(_procedural_pair, jobs, chunksize=4)
    else:
        pairs = [_procedural_pair(job) for job in jobs]
    canvases = [photo_canvases[i] if i in photo_canvases else pairs[i][0] for i in range(count)]
    fgs = [pair[1] for pair in pairs]
    to8 = lambda a: (np.stack(a) * 255 + 0.5).astype(np.uint8)
    return to8(canvases), to8(fgs), labels


def heldout_images(count, width, height, photos, seed=0):
    """The held-out input images (frame 0 of a static clip), list of (name, float32 [H, W, 3])."""
    view = max(width, height)
    canvases, _, names = build_canvases("heldout", count, view, photos, seed)
    out = []
    for canvas, name in zip(canvases, names):
        frames = render(torch.from_numpy(canvas)[None].permute(0, 3, 1, 2).float() / 255, None,
                        motion_params(["static"], torch.zeros(1), 1, torch.zeros(1)), width, height)
        out.append((name, frames[0, 0].permute(1, 2, 0).numpy()))
    return out


# ----------------------------------------------------------------------------- rendering

def motion_params(motions, amounts, frames, jitter):
    """Per-frame camera parameters for a batch: dict of [B, F] tensors (scale, angle, dx, dy, parallax).

    amounts are speed multipliers; jitter ([B]) adds a small smooth wobble so clips are not all
    perfectly linear. Motion grows linearly (with the wobble) from 0 at frame 0 to its total at the end."""
    b = len(motions)
    t = torch.linspace(0, 1, frames)[None].repeat(b, 1)
    t = t + jitter[:, None] * torch.sin(math.pi * t) * 0.15
    z = torch.zeros(b, frames)
    log_scale, angle, dx, dy, par = z.clone(), z.clone(), z.clone(), z.clone(), z.clone()
    for i, (m, a) in enumerate(zip(motions, amounts.tolist())):
        if m == "zoom_in": log_scale[i] = ZOOM_LOG * a * t[i]
        elif m == "zoom_out": log_scale[i] = -ZOOM_LOG * a * t[i]
        elif m == "pan_left": dx[i] = PAN_FRACTION * a * t[i]      # content moves right
        elif m == "pan_right": dx[i] = -PAN_FRACTION * a * t[i]
        elif m == "pan_up": dy[i] = PAN_FRACTION * a * t[i]        # content moves down
        elif m == "pan_down": dy[i] = -PAN_FRACTION * a * t[i]
        elif m == "rotate_cw": angle[i] = ROTATE_RADIANS * a * t[i]
        elif m == "rotate_ccw": angle[i] = -ROTATE_RADIANS * a * t[i]
        elif m == "orbit_left": par[i] = ORBIT_FRACTION * a * t[i]
        elif m == "orbit_right": par[i] = -ORBIT_FRACTION * a * t[i]
    t0 = torch.linspace(0, 1, frames)[None].repeat(b, 1)
    frame0 = (t0 == 0)
    for p in (log_scale, angle, dx, dy, par):
        p[frame0] = 0  # frame 0 is exactly the input view
    return dict(scale=log_scale.exp(), angle=angle, dx=dx, dy=dy, parallax=par)


def _grid(params, shift_x, width, height, canvas, device):
    """Sampling grid mapping output pixels to canvas coordinates (grid_sample's [-1, 1])."""
    b, f = params["scale"].shape
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5 - height / 2)
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5 - width / 2)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")                    # output pixels about the centre
    s = params["scale"].to(device)[..., None, None]
    a = params["angle"].to(device)[..., None, None]
    # content scaled by s and rotated by a (clockwise on screen, y down) then shifted by (dx, dy)·view:
    # canvas point = R(-a)·(p - shift) / s
    view = max(width, height)
    px = gx - (params["dx"].to(device)[..., None, None] + shift_x) * view
    py = gy - params["dy"].to(device)[..., None, None] * view
    cos, sin = torch.cos(a), torch.sin(a)
    cx = (cos * px + sin * py) / s
    cy = (-sin * px + cos * py) / s
    return torch.stack([cx / (canvas / 2), cy / (canvas / 2)], -1).reshape(b * f, height, width, 2)


def render(canvas, foreground, params, width, height):
    """Frames [B, F, 3, H, W] in [0, 1] from canvases [B, 3, S, S] (and RGBA foregrounds for orbits)."""
    b, _, size, _ = canvas.shape
    f = params["scale"].shape[1]
    device = canvas.device
    bg_src = canvas[:, None].expand(b, f, -1, -1, -1).reshape(b * f, 3, size, size)
    orbit = params["parallax"].abs().amax() > 0
    bg_shift = params["parallax"].to(device)[..., None, None] if orbit else 0.0
    grid = _grid(params, bg_shift, width, height, size, device)
    frames = F.grid_sample(bg_src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if orbit and foreground is not None:
        fg_src = foreground[:, None].expand(b, f, -1, -1, -1).reshape(b * f, 4, size, size)
        fg_grid = _grid(params, -1.5 * bg_shift, width, height, size, device)
        fg = F.grid_sample(fg_src, fg_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        has_orbit = (params["parallax"].abs().amax(1) > 0).to(device).repeat_interleave(f)[:, None, None, None].float()
        alpha = fg[:, 3:] * has_orbit
        frames = frames * (1 - alpha) + fg[:, :3] * alpha
    return frames.reshape(b, f, 3, height, width).clamp(0, 1)


class ClipSampler:
    """Renders random training clips on `device` from a pool of canvases.

    sample(batch) -> (frames [B, F, 3, H, W] in [-1, 1], prompts [B], motions [B])."""

    def __init__(self, canvases, foregrounds, width, height, frames, device, seed=0, motion_weights=None):
        self.canvases = torch.from_numpy(canvases).to(device).permute(0, 3, 1, 2)       # uint8 on device
        self.foregrounds = torch.from_numpy(foregrounds).to(device).permute(0, 3, 1, 2)
        self.width, self.height, self.frames, self.device = width, height, frames, device
        self.rng = np.random.default_rng(seed)
        weights = np.array([motion_weights.get(m, 1.0) if motion_weights else 1.0 for m in MOTIONS], np.float64)
        self.motion_p = weights / weights.sum()

    def sample(self, batch):
        idx = torch.from_numpy(self.rng.integers(0, len(self.canvases), batch)).to(self.device)
        motions = list(self.rng.choice(MOTIONS, batch, p=self.motion_p))
        speeds = list(self.rng.choice(PROMPT_SPEEDS, batch, p=[0.3, 0.4, 0.3]))
        amounts = torch.tensor([SPEEDS[s] * (0.85 + 0.3 * self.rng.random()) for s in speeds])
        jitter = torch.from_numpy(self.rng.uniform(-1, 1, batch)).float()
        params = motion_params(motions, amounts, self.frames, jitter)
        canvas = self.canvases[idx].float() / 255
        flip = torch.from_numpy(self.rng.random(batch) < 0.5).to(self.device)       # mirrored canvases: more variety
        canvas = torch.where(flip[:, None, None, None], canvas.flip(-1), canvas)
        frames = render(canvas, self.foregrounds[idx].float() / 255, params, self.width, self.height)
        prompts = [prompt_for(m, s, self.rng) for m, s in zip(motions, speeds)]
        return frames * 2 - 1, prompts, motions


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for shard-XXXX.npz files")
    parser.add_argument("--clips", type=int, default=256, help="total clips")
    parser.add_argument("--per-shard", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="clip width and height")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--canvases", type=int, default=64)
    parser.add_argument("--split", choices=["train", "heldout"], default="train")
    parser.add_argument("--photo-sources", nargs="*", default=[], help="scikit-image / scikit-learn wheels or site-packages folders")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    photos = load_photos(args.photo_sources)
    print(f"photos: {len(photos)} ({', '.join(sorted(photos))})")
    canvases, fgs, names = build_canvases(args.split, args.canvases, args.size, photos, args.seed)
    sampler = ClipSampler(canvases, fgs, args.size, args.size, args.frames, "cpu", args.seed)
    for shard in range(0, args.clips, args.per_shard):
        frames, prompts, motions = sampler.sample(min(args.per_shard, args.clips - shard))
        u8 = ((frames + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
        path = os.path.join(args.out, f"shard-{shard // args.per_shard:04d}.npz")
        np.savez_compressed(path, frames=u8, prompts=np.array(prompts), motions=np.array(motions))
        print(f"{path}: {u8.shape}, e.g. {prompts[:3]}")


if __name__ == "__main__":
    main()
