"""Phone-sized test photos, made once per test session from Caltech photos (ris.tools.phone_photos:
upscaled to 12 MP with sensor-like noise, ~2.7 MB JPEGs), and a few other large images."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ris.tools.phone_photos import phone_photo

CALTECH = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "caltech101-ris"
SOURCES = ("airplanes/image_0001.jpg", "Leopards/image_0001.jpg", "Motorbikes/image_0001.jpg")


def caltech_photo(relative: str) -> bytes:
    path = CALTECH / "train" / relative
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path.read_bytes()


@functools.cache
def phone_jpegs() -> tuple[bytes, ...]:
    """Three 4032x3024 JPEGs; the second is stored rotated with EXIF orientation 6."""
    return tuple(
        phone_photo(caltech_photo(name), seed=i, orientation=6 if i == 1 else 1)
        for i, name in enumerate(SOURCES)
    )


def bmp(width: int, height: int, seed: int = 0) -> bytes:
    """An uncompressed BMP of width x height (3 bytes a pixel): large in bytes, cheap to make."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 64 + 1, width // 64 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="BMP")
    return out.getvalue()
