"""Phone-sized photos made deterministically from small ones, for tests and benchmarks.

A 300 px data-set photo is upscaled to 4032 x 3024 (12 MP, a phone's main camera) and given
sensor-like noise (per-pixel Gaussian luminance noise plus weaker chroma noise), so that it
compresses like a camera file: ~2-3 MB at JPEG quality 92. Same input and seed, same bytes.

From the command line: ``python scripts/phone_photos.py SRC.jpg OUT.jpg [--seed 0]``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PHONE_SIZE = (4032, 3024)
QUALITY = 92
LUMA_NOISE = 3.5  # standard deviation, 0-255 scale
CHROMA_NOISE = 1.5
NOISE_TILE = 1021  # pixels; odd, so out of step with 8x8 JPEG blocks


def phone_photo(
    source: bytes,
    seed: int = 0,
    size: tuple[int, int] = PHONE_SIZE,
    quality: int = QUALITY,
    orientation: int = 1,
) -> bytes:
    """A JPEG of ``source`` at ``size`` (landscape sources stay landscape) with sensor noise.

    ``orientation`` != 1 stores the pixels rotated/flipped with that EXIF orientation tag, as a
    phone held upright does, so that the upright picture is ``source``'s."""
    image = Image.open(io.BytesIO(source)).convert("RGB")
    width, height = size if image.width >= image.height else (size[1], size[0])
    big = image.resize((width, height), Image.Resampling.BICUBIC)
    rng = np.random.default_rng(seed)
    # A seeded noise tile repeated over the frame (drawing 48 M normals per photo is slow); its
    # odd size keeps it out of step with JPEG's 8x8 blocks, so it compresses like real noise.
    tile_h, tile_w = min(height, NOISE_TILE), min(width, NOISE_TILE)
    luma = rng.standard_normal((tile_h, tile_w, 1), dtype=np.float32) * LUMA_NOISE
    chroma = rng.standard_normal((tile_h, tile_w, 3), dtype=np.float32) * CHROMA_NOISE
    reps = (-(-height // tile_h), -(-width // tile_w), 1)
    noise = np.tile(np.rint(luma + chroma).astype(np.int16), reps)[:height, :width]
    noisy = np.clip(np.asarray(big, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    out = Image.fromarray(noisy)
    exif = Image.Exif()
    if orientation != 1:
        # store what, turned by ``orientation``, shows upright: the inverse transform
        inverse = {2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}[orientation]
        out = out.transpose(_TRANSPOSE[inverse])
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    out.save(buffer, format="JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
