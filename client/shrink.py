"""Shrinking photos before upload, for clients on slow links (``ris ingest --shrink``).

A 12 MP phone photo is ~3 MB; the model sees 224 x 224 of it. The server says which geometry it
serves (GetServiceInfo -> ModelInfo.preprocessing: squash or shorter_crop, and their sizes); the
photo is decoded at a reduced scale, turned upright (EXIF orientation), scaled so that each side
keeps at least ``FACTOR`` x what that geometry needs (the server's own resize then still averages
over several source pixels, as it does for the original), aspect ratio kept, and sent as a JPEG
of ~50-100 KB. Embeddings of a shrunk upload match the original's within the tolerance tested in
tests/test_large_photos.py. Images already small enough, or that this client cannot read, are
sent unchanged (the server reports the unreadable ones).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageOps

from ris.api import common_pb2
from ris.common.imaging import EXIF_ORIENTATION, needed_size, to_rgb, upright_size

log = logging.getLogger(__name__)
FACTOR = 2  # each side kept at >= 2x what the model needs
QUALITY = 90  # JPEG quality of the shrunk upload


@dataclass(frozen=True)
class Geometry:
    """How the served model turns an image into its input (ModelInfo.preprocessing)."""

    resize_mode: str  # "squash" or "shorter_crop"
    crop_size: int
    resize_shorter: int

    @classmethod
    def from_model(cls, info: common_pb2.ModelInfo) -> Geometry | None:
        p = info.preprocessing
        if not p.crop_size or p.resize_mode not in ("squash", "shorter_crop"):
            return None  # a server that does not say: nothing is shrunk
        return cls(p.resize_mode, int(p.crop_size), int(p.resize_shorter or p.crop_size))


def shrink(data: bytes, geometry: Geometry) -> bytes:
    """A smaller JPEG of the same upright picture, or ``data`` when shrinking would not help."""
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        if image.mode.startswith(("I", "F")):  # 16-bit / float: leave it to the server
            return data
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        upright = upright_size(*image.size, orientation)
        need_w, need_h = needed_size(geometry, *upright)
        scale = max(FACTOR * need_w / upright[0], FACTOR * need_h / upright[1])
        if scale > 0.5:  # less than halving: not worth a re-encode
            return data
        target = (max(1, round(upright[0] * scale)), max(1, round(upright[1] * scale)))
        stored = upright_size(*target, orientation)  # a transpose undoes itself
        if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale, still >= target; other
            image.draft("RGB", stored)  # plugins' draft (HEIF: the embedded thumbnail) is coarser
        image = ImageOps.exif_transpose(image) or image
        image = to_rgb(image).resize(target, Image.Resampling.BILINEAR)  # as the server does
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=QUALITY)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return data  # not readable here: the server decides (and reports) what it is
    shrunk = out.getvalue()
    return shrunk if len(shrunk) < len(data) else data


def shrinker(geometry: Geometry | None) -> Callable[[bytes], bytes] | None:
    """The transform for an ingest with shrinking asked for; None (logged) without a geometry."""
    if geometry is None:
        log.warning("not shrinking: the service does not report its model's geometry")
        return None
    return lambda data: shrink(data, geometry)
