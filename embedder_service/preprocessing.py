"""The one image preprocessing path: bytes -> RGB image -> uint8 [crop, crop, 3].

Used by the embedder, the export check and the accuracy evaluation, so that all of
them see the same pixels. Colour order and mean/std are applied inside the ONNX graph;
this module only decodes, orients, converts to RGB and resizes, with the sizes read from
the model's metadata (PreprocessSpec), never hard-coded by callers. Two geometries:
"shorter_crop" (shorter side to resize_shorter, centre crop: what ImageNet weights were
evaluated with) and "squash" (the whole image to crop x crop: nothing at the borders is
lost, which retrieves better; see docs/results/retrieval_study.json).

Decoding costs what the model needs, not what the photo holds: a JPEG is decoded at 1/2, 1/4 or
1/8 scale (libjpeg's scaled IDCT, Pillow's ``draft``) when that still leaves at least the size
the geometry needs (each side, EXIF orientation accounted for; common/imaging.py, which the
client's upload shrinking shares), and a large image of any format is shrunk by whole-pixel box
averaging (``reduce``) down to >= ``REDUCING_GAP`` x the crop before the final resample. Images
under 2x the needed size (the 300 px data-set photos) decode exactly as before; a 12 MP photo's
model input stays within the tolerance tests/test_preprocessing.py checks.
A HEIC/HEIF photo (pillow-heif's plugin) has no scaled decode (HEVC has no scaled IDCT): it is
decoded at full size (~0.3-0.65 s and a 36 MB frame for 12 MP here) after the pixel limit is
checked on its header, then box-reduced like any large image. Its embedded thumbnail, which
pillow-heif's ``draft`` would pick, is never used: a libheif thumbnail of a 12 MP photo is off by
2.8-4.4 grey levels on average (up to 75) from the full decode, beyond the tolerance (1.0 mean)
the JPEG path is held to.
Formats: whatever this Pillow reads (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, ...) and HEIC/HEIF
through pillow-heif (the embedder extras); without that plugin HEIC/HEIF gets a clear per-item
error (see ``_unsupported``).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ris.common.imaging import (
    EXIF_ORIENTATION,
    heif_supported,
    is_heif,
    needed_size,
    to_rgb,
    upright_size,
)

# 50 megapixels: larger than any phone photo in common use, small enough that a
# decoded RGB frame (150 MB) cannot exhaust a server. Callers may pass their own.
DEFAULT_MAX_PIXELS = 50_000_000

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
# How an image becomes crop x crop: see the module docstring.
RESIZE_MODES = ("shorter_crop", "squash")
# Large images are box-reduced to at least this many times the crop before the last resample,
# which then still averages several pixels per output pixel (Pillow's reducing_gap).
REDUCING_GAP = 3.0
# Pillow's own bomb error quotes its size: "Image size (N pixels) exceeds limit of ...".
_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")
HEIF_READABLE = heif_supported()  # registers pillow-heif's opener once, where it is installed


class ImageDecodeError(ValueError):
    """The bytes are not a usable image; the message says why."""


@dataclass(frozen=True)
class PreprocessSpec:
    """What the model's weights expect; stored as JSON in the ONNX metadata.

    mean/std are in 0-255 pixel units, in the channel order named by color_order,
    and are applied inside the graph; callers only resize and crop.
    """

    color_order: str = "RGB"
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    resize_shorter: int = 256
    crop_size: int = 224
    interpolation: str = "bilinear"
    input_layout: str = "NHWC"
    resize_mode: str = "shorter_crop"  # metadata without it: what the weights were trained on

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, not {self.resize_mode!r}")
        if self.color_order not in ("RGB", "BGR"):
            raise ValueError(f"color_order must be RGB or BGR, not {self.color_order!r}")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}")
        if self.input_layout != "NHWC":
            raise ValueError(f"only NHWC input is supported, not {self.input_layout!r}")
        if not 0 < self.crop_size <= self.resize_shorter:
            raise ValueError("need 0 < crop_size <= resize_shorter")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each, std > 0")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreprocessSpec:
        raw: dict[str, Any] = json.loads(text)
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)


def _unsupported(data: bytes) -> str:
    """A clearer reason than 'unrecognised' for formats known but not readable here."""
    if is_heif(data) and HEIF_READABLE:
        return "corrupt HEIC/HEIF image: pillow-heif cannot read its header"
    if is_heif(data):
        return (
            "HEIC/HEIF images are not supported by this server (the pillow-heif plugin is not "
            "installed here: pip install 'ris[embedder]'): convert to JPEG, or shrink on the "
            "client (ris ingest --shrink) where pillow-heif is installed"
        )
    return "not an image: unrecognised or unsupported format"


def _bomb(exc: Image.DecompressionBombError, max_pixels: int) -> ImageDecodeError:
    """Pillow's bomb error, told against the configured limit (its own is another number)."""
    found = _BOMB_SIZE.search(str(exc))
    size = f"{int(found.group(1))} pixels" if found else "more pixels than Pillow allows"
    return ImageDecodeError(f"too many pixels (decompression bomb?): {size} > limit {max_pixels}")


def _draft(image: Image.Image, spec: PreprocessSpec) -> None:
    """JPEG: decode at the smallest 1/2^k scale that keeps >= what ``spec`` needs (only JPEG:
    pillow-heif's ``draft`` swaps in a thumbnail; see the module docstring)."""
    if image.format != "JPEG":
        return
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block: decode at full size, orientation as it comes
        orientation = 1
    need = needed_size(spec, *upright_size(*image.size, orientation))
    image.draft(
        image.mode, upright_size(*need, orientation)
    )  # stored sides: a transpose undoes itself


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageDecodeError("empty image data (0 bytes)")
    try:
        # No warnings.catch_warnings here: it is not thread-safe and servers decode in
        # threads. Pillow's own bomb error (> 2x its MAX_IMAGE_PIXELS) is caught below;
        # our max_pixels check follows before any pixel is decoded.
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(_unsupported(data)) from exc
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, max_pixels) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt image header: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"too many pixels: {width}x{height} = {width * height} > limit {max_pixels}"
        )
    return image


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, spec: PreprocessSpec | None = None
) -> Image.Image:
    """Decode JPEG/PNG/WebP/GIF/BMP/... bytes to an upright RGB image (first frame).

    With ``spec``, a JPEG is decoded at the smallest scale that still serves ``spec`` (the
    pixel limit applies to the full size all the same)."""
    image = _open(data, max_pixels)
    try:
        image.seek(0)
        if spec is not None:
            _draft(image, spec)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"truncated or corrupt image data: {exc}") from exc
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, max_pixels) from exc
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        upright = image
    try:
        return to_rgb(upright if upright is not None else image)
    except (ValueError, OSError) as exc:
        raise ImageDecodeError(f"unsupported colour mode {image.mode}: {exc}") from exc


def with_resize_mode(spec: PreprocessSpec, mode: str) -> PreprocessSpec:
    """spec with another geometry; "model" (or "") keeps the model's own."""
    if mode in ("", "model"):
        return spec
    return replace(spec, resize_mode=mode)


def preprocess(image: Image.Image, spec: PreprocessSpec, exact: bool = False) -> np.ndarray:
    """The model input: uint8 [crop, crop, 3] by spec.resize_mode.

    shorter_crop resamples only the crop's source box, which gives the same pixels as
    resizing the whole image then cropping, without allocating a huge frame for extreme
    aspect ratios. squash resizes the whole image, aspect ratio not kept. ``exact`` resamples
    from every pixel (no box reduction first: the reference for the tolerance tests).
    """
    if image.mode != "RGB":
        image = to_rgb(image)
    crop = spec.crop_size
    resample = _RESAMPLE[spec.interpolation]
    gap = None if exact else REDUCING_GAP
    if spec.resize_mode == "squash":
        out = image.resize((crop, crop), resample, reducing_gap=gap)
        return np.asarray(out, dtype=np.uint8).reshape(crop, crop, 3)
    width, height = image.size
    scale = spec.resize_shorter / min(width, height)
    resized_w = max(spec.resize_shorter, round(width * scale))
    resized_h = max(spec.resize_shorter, round(height * scale))
    left = round((resized_w - crop) / 2)
    top = round((resized_h - crop) / 2)
    sx, sy = width / resized_w, height / resized_h
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    out = image.resize((crop, crop), resample, box=box, reducing_gap=gap)
    return np.asarray(out, dtype=np.uint8).reshape(crop, crop, 3)


def prepare(
    data: bytes,
    spec: PreprocessSpec,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    scaled: bool = True,
) -> np.ndarray:
    """Bytes to the model's uint8 [crop, crop, 3] input; raises ImageDecodeError.

    ``scaled=False`` decodes and resamples every pixel, as before scaled decoding (the reference
    it is tested against)."""
    image = decode_image(data, max_pixels, spec if scaled else None)
    return preprocess(image, spec, exact=not scaled)
