"""Deterministic edited copies of photos (crop, resize, JPEG, rotation, flip, colour, brightness,
greyscale, borders, overlaid text, a combination) and the copy-detection index they are searched
in (imagenet-sample originals, Caltech-101 distractors).

Used by scripts/copy_detection.py, scripts/dedup_quality.py and the tests.
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from ris.tools.evaluation import Candidate

WORDS = ("COPY", "sample", "© 2024", "sale!", "meme", "watermark", "hello", "RIS", "photo")

# ---------------------------------------------------------------------------------------------
# Edits: each takes the RGB image and its own seeded random generator.
# ---------------------------------------------------------------------------------------------


def edit_crop(im: Image.Image, rng: random.Random) -> Image.Image:
    """Keep 40-70% of the area, at a random position."""
    w, h = im.size
    frac = math.sqrt(rng.uniform(0.4, 0.7))
    cw, ch = max(1, round(w * frac)), max(1, round(h * frac))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return im.crop((x, y, x + cw, y + ch))


def edit_resize(im: Image.Image, rng: random.Random) -> Image.Image:
    """Downscale to 20-40% of each side (a thumbnail)."""
    s = rng.uniform(0.2, 0.4)
    w, h = im.size
    return im.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BILINEAR)


def edit_jpeg(im: Image.Image, rng: random.Random) -> Image.Image:
    """Re-encode at JPEG quality 5-20 (blocking artefacts)."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=rng.randint(5, 20))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def edit_rotation(im: Image.Image, rng: random.Random) -> Image.Image:
    """Rotate 10-30 degrees either way; the corners fill black."""
    angle = rng.uniform(10, 30) * rng.choice((-1, 1))
    return im.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)


def edit_flip(im: Image.Image, rng: random.Random) -> Image.Image:
    """Mirror left-right."""
    return ImageOps.mirror(im)


def edit_colour(im: Image.Image, rng: random.Random) -> Image.Image:
    """Saturation and contrast change plus a per-channel tint."""
    im = ImageEnhance.Color(im).enhance(rng.choice((rng.uniform(0.2, 0.5), rng.uniform(1.6, 2.5))))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.6, 1.5))
    gains = np.array([rng.uniform(0.75, 1.25) for _ in range(3)], dtype=np.float32)
    arr = np.clip(np.asarray(im, dtype=np.float32) * gains, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def edit_brightness(im: Image.Image, rng: random.Random) -> Image.Image:
    """Darken to 40-65% or brighten to 140-180%."""
    factor = rng.choice((rng.uniform(0.4, 0.65), rng.uniform(1.4, 1.8)))
    return ImageEnhance.Brightness(im).enhance(factor)


def edit_greyscale(im: Image.Image, rng: random.Random) -> Image.Image:
    return ImageOps.grayscale(im).convert("RGB")


def edit_borders(im: Image.Image, rng: random.Random) -> Image.Image:
    """A plain frame 10-25% of the shorter side wide, in a random colour."""
    pad = round(min(im.size) * rng.uniform(0.10, 0.25))
    colour = tuple(rng.randint(0, 255) for _ in range(3))
    return ImageOps.expand(im, border=pad, fill=colour)


def edit_text(im: Image.Image, rng: random.Random) -> Image.Image:
    """Two or three lines of large text over the picture (a meme / watermark)."""
    im = im.copy()
    draw = ImageDraw.Draw(im)
    w, h = im.size
    for _ in range(rng.randint(2, 3)):
        size = max(10, round(h * rng.uniform(0.08, 0.15)))
        font = ImageFont.load_default(size=size)
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        xy = (rng.uniform(0, w * 0.4), rng.uniform(0, h * 0.85))
        fill = tuple(rng.randint(0, 255) for _ in range(3))
        draw.text(xy, text, font=font, fill=fill, stroke_width=max(1, size // 12), stroke_fill=0)
    return im


def edit_combo(im: Image.Image, rng: random.Random) -> Image.Image:
    """Crop, then brightness, then a text line, then JPEG quality 30-50."""
    im = edit_crop(im, rng)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3))
    im = edit_text(im, rng)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=rng.randint(30, 50))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


EDITS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "crop": edit_crop,
    "resize": edit_resize,
    "jpeg": edit_jpeg,
    "rotation": edit_rotation,
    "flip": edit_flip,
    "colour": edit_colour,
    "brightness": edit_brightness,
    "greyscale": edit_greyscale,
    "borders": edit_borders,
    "text": edit_text,
    "combo": edit_combo,
}


def make_copy(data: bytes, edit: str, seed: int, key: str) -> bytes:
    """The edited copy of one image as encoded bytes; same (edit, seed, key) -> same bytes."""
    rng = random.Random(f"{seed}:{edit}:{key}")
    im: Image.Image = Image.open(io.BytesIO(data))
    im = ImageOps.exif_transpose(im).convert("RGB")
    out = EDITS[edit](im, rng)
    buf = io.BytesIO()
    if edit in ("jpeg", "combo"):  # already carries its artefacts: store them losslessly
        out.save(buf, "PNG")
    else:
        out.save(buf, "JPEG", quality=95)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------------------------


def load_index(
    imagenet: Path, caltech: Path, limit: int, distractors: int
) -> tuple[list[Candidate], list[Candidate]]:
    """(originals, distractors) as Candidates with unique ids."""
    with (imagenet / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if limit:
        rows = rows[:limit]
    originals = [
        Candidate(f"orig_{i:04d}", imagenet / r["path"], r["name"]) for i, r in enumerate(rows)
    ]
    with (caltech / "reverse_image_search.csv").open(newline="") as fh:
        crows = list(csv.DictReader(fh))
    if distractors >= 0:
        crows = crows[:distractors]
    extra = [Candidate(f"caltech_{r['id']}", caltech / r["path"], r["label"]) for r in crows]
    return originals, extra
