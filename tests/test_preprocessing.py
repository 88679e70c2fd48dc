"""The shared preprocessing: every input format and failure mode, made here with PIL."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ris.embedder.preprocessing import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    PreprocessSpec,
    decode_image,
    prepare,
    preprocess,
    with_resize_mode,
)

SPEC = PreprocessSpec()
SQUASH = PreprocessSpec(resize_mode="squash")
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def halves(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """Left half red, right half blue: orientation and colour order are both visible."""
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[:, : size[0] // 2] = RED
    array[:, size[0] // 2 :] = BLUE
    return Image.fromarray(array)


def centre(image: Image.Image) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(image)[image.height // 2, image.width // 2])


def assert_close(pixel: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> None:
    diff = max(abs(int(a) - int(b)) for a, b in zip(pixel, expected, strict=True))
    assert diff <= tol, (pixel, expected)


@pytest.mark.parametrize(
    ("fmt", "kwargs", "tol"),
    [
        ("JPEG", {"quality": 95}, 12),
        ("PNG", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
    ],
)
def test_rgb_formats_keep_colour_and_layout(fmt: str, kwargs: dict, tol: int) -> None:
    image = decode_image(encode(halves(), fmt, **kwargs))
    assert image.mode == "RGB"
    assert image.size == (64, 48)
    pixels = np.asarray(image)
    assert_close(tuple(pixels[24, 5]), RED, tol)
    assert_close(tuple(pixels[24, 58]), BLUE, tol)


def test_greyscale_jpeg_becomes_equal_channels() -> None:
    grey = Image.new("L", (40, 30), 77)
    pixel = centre(decode_image(encode(grey, "JPEG")))
    assert pixel[0] == pixel[1] == pixel[2]
    assert abs(pixel[0] - 77) <= 2


def test_cmyk_jpeg_converts_to_rgb() -> None:
    cyan = Image.new("CMYK", (40, 30), (255, 0, 0, 0))
    image = decode_image(encode(cyan, "JPEG", quality=95))
    assert image.mode == "RGB"
    assert_close(centre(image), (0, 255, 255))


def test_palette_png_keeps_colours() -> None:
    palette = halves().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    image = decode_image(encode(palette, "PNG"))
    assert_close(tuple(np.asarray(image)[10, 5]), RED, 0)
    assert_close(tuple(np.asarray(image)[10, 60]), BLUE, 0)


def test_palette_png_transparency_goes_white() -> None:
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (10, 0, 20, 20))
    data = encode(palette, "PNG", transparency=1)
    pixels = np.asarray(decode_image(data))
    assert tuple(pixels[5, 2]) == RED
    assert tuple(pixels[5, 15]) == WHITE


def test_rgba_png_composites_on_white() -> None:
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 255))
    rgba.paste((0, 0, 255, 0), (10, 0, 20, 20))
    pixels = np.asarray(decode_image(encode(rgba, "PNG")))
    assert tuple(pixels[5, 2]) == RED
    assert tuple(pixels[5, 15]) == WHITE


def test_half_transparent_blends_with_white() -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 128))
    assert_close(centre(decode_image(encode(rgba, "PNG"))), (127, 127, 127), 1)


def test_greyscale_alpha_png() -> None:
    la = Image.new("LA", (8, 8), (0, 0))
    assert centre(decode_image(encode(la, "PNG"))) == WHITE


def test_16bit_greyscale_png_is_scaled_not_clipped() -> None:
    array = np.full((16, 16), 128 * 257, dtype=np.uint16)
    data = encode(Image.fromarray(array), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    assert_close(centre(decode_image(data)), (128, 128, 128), 1)


def test_16bit_rgb_png() -> None:
    # PIL cannot write 48-bit PNGs, so build the file: IHDR bit depth 16, colour type 2.
    width, height = 4, 2
    row = b"\x00" + struct.pack(">HHH", 65535, 0, 0) * width
    raw = row * height

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    assert centre(decode_image(data)) == RED


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, BLUE, (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    assert centre(decode_image(data)) == RED


def test_animated_webp_uses_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in (BLUE, RED)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert centre(decode_image(data)) == BLUE


@pytest.mark.parametrize(
    ("orientation", "size", "top_left", "bottom_right"),
    [
        (1, (64, 48), RED, BLUE),
        (3, (64, 48), BLUE, RED),  # rotated 180
        (6, (48, 64), RED, BLUE),  # rotate 90 clockwise to view: left half goes to the top
        (8, (48, 64), BLUE, RED),  # rotate 90 counter-clockwise: right half goes to the top
    ],
)
def test_exif_orientation_is_applied(
    orientation: int, size: tuple[int, int], top_left: tuple, bottom_right: tuple
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = decode_image(encode(halves(), "JPEG", quality=95, exif=exif.tobytes()))
    assert image.size == size
    pixels = np.asarray(image)
    assert_close(tuple(pixels[2, 2]), top_left)
    assert_close(tuple(pixels[-3, -3]), bottom_right)


def test_zero_bytes() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")


def test_random_bytes() -> None:
    data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(data)


def test_text_is_not_an_image() -> None:
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(b"<html>hello</html>")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(fmt: str) -> None:
    noisy = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    with pytest.raises(ImageDecodeError, match=r"truncated|corrupt"):
        decode_image(data[: len(data) // 2])


def _png_header_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR is patched to declare width x height (CRC fixed)."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_decompression_bomb_header_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="too many pixels"):
        decode_image(_png_header_claiming(100_000, 100_000))


def test_pixel_limit_below_pillow_default_is_enforced() -> None:
    # 8000x8000 = 64 MP: under Pillow's own bomb limit, over ours; rejected before decoding.
    assert DEFAULT_MAX_PIXELS < 8000 * 8000
    with pytest.raises(ImageDecodeError, match="too many pixels: 8000x8000"):
        decode_image(_png_header_claiming(8000, 8000))


def test_custom_pixel_limit() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageDecodeError, match="too many pixels"):
        decode_image(data, max_pixels=9_999)
    assert decode_image(data, max_pixels=10_000).size == (100, 100)


def test_one_pixel_image() -> None:
    out = prepare(encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), SPEC)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert (out == np.array([10, 200, 30], dtype=np.uint8)).all()


def test_extreme_aspect_ratio_stays_small_and_centred() -> None:
    strip = halves((6000, 2))
    out = preprocess(strip, SPEC)
    assert out.shape == (224, 224, 3)
    # The centre crop sits on the red/blue boundary.
    assert_close(tuple(out[100, 5]), RED, 0)
    assert_close(tuple(out[100, 218]), BLUE, 0)


def test_preprocess_equals_resize_then_centre_crop(imagenet_sample) -> None:
    path = next((imagenet_sample / "images").iterdir())
    image = decode_image(path.read_bytes())
    width, height = image.size
    scale = 256 / min(width, height)
    rw, rh = round(width * scale), round(height * scale)
    full = np.asarray(image.resize((rw, rh), Image.Resampling.BILINEAR)).astype(int)
    left, top = round((rw - 224) / 2), round((rh - 224) / 2)
    expected = full[top : top + 224, left : left + 224]
    got = preprocess(image, SPEC).astype(int)
    assert np.abs(got - expected).max() <= 1
    assert np.abs(got - expected).mean() < 0.01


def test_resize_224_spec_keeps_whole_shorter_side() -> None:
    spec = PreprocessSpec(resize_shorter=224, crop_size=224)
    out = preprocess(halves((448, 224)), spec)
    assert out.shape == (224, 224, 3)
    assert_close(tuple(out[100, 0]), RED, 0)


@settings(max_examples=40, deadline=None)
@given(width=st.integers(1, 700), height=st.integers(1, 700))
def test_any_size_gives_crop_shape(width: int, height: int) -> None:
    out = preprocess(Image.new("RGB", (width, height), (1, 2, 3)), SPEC)
    assert out.shape == (224, 224, 3)
    assert (out == np.array([1, 2, 3], dtype=np.uint8)).all()


def test_spec_json_round_trip_and_validation() -> None:
    spec = PreprocessSpec(color_order="BGR", mean=(1.0, 2.0, 3.0), std=(1.0, 1.0, 1.0))
    assert PreprocessSpec.from_json(spec.to_json()) == spec
    assert (
        PreprocessSpec.from_json('{"color_order": "BGR", "future_field": 1}').color_order == "BGR"
    )
    with pytest.raises(ValueError):
        PreprocessSpec(color_order="XYZ")
    with pytest.raises(ValueError):
        PreprocessSpec(resize_shorter=200, crop_size=224)
    with pytest.raises(ValueError):
        PreprocessSpec(interpolation="magic")


def stripes(colours: list[tuple[int, int, int]], width: int, height: int) -> Image.Image:
    """Equal vertical stripes, one per colour, left to right."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    step = width // len(colours)
    for i, colour in enumerate(colours):
        array[:, i * step : (i + 1) * step] = colour
    return Image.fromarray(array)


def test_squash_keeps_the_whole_width_of_a_wide_image() -> None:
    # 4:1 panorama: green | red | blue | white. The centre crop only sees red and blue.
    green = (0, 255, 0)
    image = stripes([green, RED, BLUE, WHITE], 800, 200)
    squashed = prepare(encode(image, "PNG"), SQUASH)
    assert squashed.shape == (224, 224, 3) and squashed.dtype == np.uint8
    for x, colour in ((20, green), (84, RED), (140, BLUE), (204, WHITE)):
        assert_close(tuple(squashed[112, x]), colour, 0)
    cropped = preprocess(image, SPEC)
    assert_close(tuple(cropped[112, 5]), RED, 0)
    assert_close(tuple(cropped[112, 218]), BLUE, 0)
    assert not (np.abs(cropped.astype(int) - green).sum(axis=2) == 0).any()


def test_squash_keeps_the_whole_height_of_a_tall_image() -> None:
    tall = stripes([RED, BLUE], 200, 100).rotate(90, expand=True)  # 100 wide, 200 high
    out = preprocess(tall, SQUASH)
    top, bottom = tuple(out[10, 112]), tuple(out[213, 112])
    assert {top, bottom} == {RED, BLUE}


def test_squash_equals_whole_image_resize(imagenet_sample) -> None:
    """The retrieval study's `sq224` geometry, pixel for pixel."""
    path = next((imagenet_sample / "images").iterdir())
    image = decode_image(path.read_bytes())
    expected = np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR))
    got = preprocess(image, SQUASH)
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, preprocess(image, SPEC))


def test_resize_mode_in_json_and_overrides() -> None:
    assert PreprocessSpec.from_json(SQUASH.to_json()) == SQUASH
    # Models exported before resize_mode existed were evaluated with the centre crop.
    legacy = '{"color_order": "RGB", "resize_shorter": 256, "crop_size": 224}'
    assert PreprocessSpec.from_json(legacy).resize_mode == "shorter_crop"
    assert with_resize_mode(SPEC, "squash") == SQUASH
    assert with_resize_mode(SQUASH, "model") is SQUASH
    assert with_resize_mode(SQUASH, "shorter_crop") == SPEC
    with pytest.raises(ValueError, match="resize_mode"):
        PreprocessSpec(resize_mode="stretch")
