"""Image geometry and colour shared by the client's upload shrinking and the embedder's decoding.

Pure Pillow/numpy (no gRPC, no server extras), so the client imports it too and both sides
agree on the two things they must agree on: the smallest upright size from which a model's
geometry makes its input without upsampling (``needed_size``), and how any image becomes RGB
(``to_rgb``: transparency composited onto white). HEIC/HEIF (what iPhones save) is read through
the pillow-heif plugin where it is installed (``heif_supported``; the embedder extras install it).
"""

from __future__ import annotations

import functools
from typing import Protocol

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112  # the EXIF tag
SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that transpose the picture
_ALPHA_BACKGROUND = (255, 255, 255)
# ISO-BMFF brands of HEIC/HEIF stills (bytes 8-12 after "ftyp"): what the pillow-heif plugin reads.
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})


def is_heif(data: bytes) -> bool:
    """Whether ``data`` starts like a HEIC/HEIF still (its ftyp box names a HEIF brand)."""
    return data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS


@functools.cache
def heif_supported() -> bool:
    """Register pillow-heif's opener with Pillow (once per process); False when it is absent.

    After this, ``Image.open`` reads HEIC/HEIF like any other format (and ``draft`` picks an
    embedded thumbnail large enough, when the file has one)."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


class Geometry(Protocol):
    """How a model turns an image into its input ("squash" or "shorter_crop" and its sizes)."""

    @property
    def resize_mode(self) -> str: ...

    @property
    def crop_size(self) -> int: ...

    @property
    def resize_shorter(self) -> int: ...


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) once EXIF ``orientation`` is applied."""
    return (height, width) if orientation in SWAPS_SIDES else (width, height)


def needed_size(geometry: Geometry, width: int, height: int) -> tuple[int, int]:
    """The smallest (width, height) of an upright ``width`` x ``height`` image from which
    ``geometry`` makes its input without upsampling."""
    if geometry.resize_mode == "squash":
        return geometry.crop_size, geometry.crop_size
    scale = geometry.resize_shorter / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB; alpha is composited onto white, 16-bit/float scaled to 8."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or array.max(initial=0) > 255:
            array = array / 257.0
        elif mode == "F" and array.max(initial=0) <= 1.0:
            array = array * 255.0
        grey = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
