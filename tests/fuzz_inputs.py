"""Bad and awkward image inputs shared by the fuzz tests: real encodings, then broken on purpose.

Each case is (name, bytes, expected): expected is None for an image that must embed, or a regex
the INVALID_ARGUMENT message must match.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from hypothesis import strategies as st
from PIL import Image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def photo(seed: int = 0, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A noisy RGB picture (noise makes every corrupted byte matter to the decoder)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    array[:, : size[0] // 2, 0] = 255  # left half reddish: orientation is visible
    return Image.fromarray(array)


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR declares width x height (CRC fixed): a decompression bomb."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def png16_rgb(width: int = 8, height: int = 8) -> bytes:
    """A 48-bit RGB PNG (Pillow cannot write one)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    row = b"\x00" + struct.pack(">HHH", 65535, 30000, 0) * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def png16_grey() -> bytes:
    return encode(Image.fromarray(np.full((8, 8), 40000, np.uint16)), "PNG")


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(photo(3), "JPEG", quality=90, exif=exif.tobytes())


def corrupt_middle(data: bytes) -> bytes:
    """Overwrite a run of bytes in the middle (entropy-coded data for JPEG, IDAT for PNG)."""
    middle = len(data) // 2
    return data[:middle] + b"\xff\x00" * 64 + data[middle + 128 :]


def catalogue() -> list[tuple[str, bytes, str | None]]:
    """The issue's named cases; None = must embed, else the reason's regex."""
    jpeg = encode(photo(1), "JPEG", quality=90)
    png = encode(photo(2), "PNG")
    webp = encode(photo(4), "WEBP", quality=80)
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    rng = np.random.default_rng(7)
    return [
        ("random bytes", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not an image"),
        ("empty", b"", "empty"),
        ("text", b"GET / HTTP/1.1\r\n\r\n", "not an image"),
        ("truncated jpeg", jpeg[: len(jpeg) // 2], "truncated|corrupt"),
        ("truncated png", png[: len(png) // 2], "truncated|corrupt"),
        ("truncated webp", webp[: len(webp) // 2], "truncated|corrupt|not an image"),
        ("header-only jpeg", jpeg[:200], "truncated|corrupt"),
        ("corrupted png", corrupt_middle(png), "truncated|corrupt"),
        ("bomb 100k x 100k", png_claiming(100_000, 100_000), "too many pixels"),
        ("jpeg", jpeg, None),
        ("png", png, None),
        ("webp", webp, None),
        ("1x1 png", encode(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG"), None),
        ("animated gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), None),
        (
            "16-bit grey png",
            encode(Image.fromarray(np.full((8, 8), 40000, np.uint16)), "PNG"),
            None,
        ),
        ("16-bit rgb png", png16_rgb(), None),
        ("palette png", encode(photo(5).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), None),
        ("cmyk jpeg", encode(photo(6).convert("CMYK"), "JPEG", quality=90), None),
        ("exif-rotated jpeg", exif_rotated_jpeg(), None),
    ]


def base_images() -> list[bytes]:
    """Small valid images in each container format, the seeds for mutation."""
    image = photo(11, (48, 40))
    return [
        encode(image, "JPEG", quality=85),
        encode(image, "JPEG", quality=85, progressive=True),
        encode(image, "PNG"),
        encode(image.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        encode(image, "WEBP", quality=70),
        encode(image, "GIF"),
        encode(image, "BMP"),
        encode(image, "TIFF"),
    ]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A real image with a few bytes flipped, a slice cut, or a tail cut off."""
    data = bytearray(draw(st.sampled_from(base_images())))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "truncate", "insert"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[position : position + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del data[position:]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=32))
    return bytes(data)


any_image_bytes = st.one_of(st.binary(max_size=2048), mutated_images())
