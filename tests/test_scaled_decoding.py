"""Scaled decoding of large photos: the model input stays within a stated tolerance of decoding
every pixel, EXIF orientation still applies, and small photos decode exactly as before.

Tolerance (mean absolute difference of the uint8 224x224 model input against the full decode and
exact resample): <= 1.0 grey level, no pixel off by more than 16. Measured on 12 MP phone photos:
0.30-0.37 mean, 5-6 max (squash and shorter_crop); 0.15 for a 12 MP PNG (box reduction only).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from large_photos import caltech_photo, phone_jpegs
from PIL import Image, ImageOps, features

from ris.common.imaging import heif_supported, needed_size
from ris.embedder.preprocessing import ImageDecodeError, PreprocessSpec, decode_image, prepare

SQUASH = PreprocessSpec(resize_mode="squash")
CROP = PreprocessSpec(resize_mode="shorter_crop")
MEAN_TOLERANCE = 1.0
MAX_TOLERANCE = 16


def difference(data: bytes, spec: PreprocessSpec) -> tuple[float, int]:
    exact = prepare(data, spec, scaled=False).astype(np.int16)
    scaled = prepare(data, spec).astype(np.int16)
    diff = np.abs(exact - scaled)
    return float(diff.mean()), int(diff.max())


@pytest.mark.parametrize("spec", [SQUASH, CROP], ids=["squash", "shorter_crop"])
def test_phone_photos_decode_scaled_within_tolerance(spec: PreprocessSpec) -> None:
    for data in phone_jpegs():
        full = Image.open(io.BytesIO(data)).size
        scaled = decode_image(data, spec=spec)
        # decoded at a fraction of the pixels, never below what the geometry needs
        assert scaled.width * scaled.height <= full[0] * full[1] // 16
        need = needed_size(spec, scaled.width, scaled.height)
        assert scaled.width >= need[0] and scaled.height >= need[1]
        mean, worst = difference(data, spec)
        assert mean <= MEAN_TOLERANCE and worst <= MAX_TOLERANCE, (spec.resize_mode, mean, worst)


def test_orientation_is_applied_after_scaled_decoding() -> None:
    rotated = phone_jpegs()[1]  # a landscape picture stored portrait, EXIF orientation 6
    assert Image.open(io.BytesIO(rotated)).size == (3024, 4032)
    upright = decode_image(rotated, spec=CROP)
    assert upright.width > upright.height
    assert min(upright.size) >= CROP.resize_shorter
    assert upright.width * upright.height <= 4032 * 3024 // 16
    assert abs(upright.width / upright.height - 4032 / 3024) < 0.01
    assert difference(rotated, CROP)[0] <= MEAN_TOLERANCE


@pytest.mark.parametrize("spec", [SQUASH, CROP], ids=["squash", "shorter_crop"])
def test_small_photos_decode_exactly_as_before(spec: PreprocessSpec) -> None:
    """Under 2x the needed size nothing is scaled: the data sets' ~300 px photos are unchanged."""
    for name in ("airplanes/image_0001.jpg", "Leopards/image_0002.jpg", "accordion/image_0001.jpg"):
        data = caltech_photo(name)
        np.testing.assert_array_equal(prepare(data, spec), prepare(data, spec, scaled=False))


def test_large_png_is_box_reduced_within_tolerance() -> None:
    image = Image.open(io.BytesIO(phone_jpegs()[0])).resize((2400, 1800))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    mean, worst = difference(out.getvalue(), SQUASH)
    assert 0 < mean <= MEAN_TOLERANCE and worst <= MAX_TOLERANCE


@pytest.mark.skipif(not heif_supported(), reason="pillow-heif is not installed")
def test_heic_decodes_at_full_size_within_tolerance() -> None:
    """A real 12 MP HEIC (pillow-heif, with a 512 px thumbnail as phones embed one) decodes
    from its full-size image, never the thumbnail, which is off by ~3 grey levels on average;
    measured: 0.15 mean, 2 max against the exact resample."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(phone_jpegs()[1])))
    out = io.BytesIO()
    image.save(out, format="HEIF", quality=90, thumbnails=[512], enc_params={"preset": "ultrafast"})
    heic = out.getvalue()
    assert Image.open(io.BytesIO(heic)).info["thumbnails"] == [512]
    for spec in (SQUASH, CROP):
        assert decode_image(heic, spec=spec).size == (4032, 3024)
        mean, worst = difference(heic, spec)
        assert mean <= MEAN_TOLERANCE and worst <= MAX_TOLERANCE, (spec.resize_mode, mean, worst)


def test_a_broken_heic_is_refused_with_a_clear_reason() -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    with pytest.raises(ImageDecodeError) as caught:
        prepare(heic, SQUASH)
    if heif_supported():  # read as HEIF, found broken
        assert "corrupt HEIC/HEIF image" in str(caught.value)
    else:
        assert "HEIC/HEIF images are not supported" in str(caught.value)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
def test_avif_decodes() -> None:
    array = np.zeros((96, 128, 3), dtype=np.uint8)
    array[:, :64] = (255, 0, 0)
    array[:, 64:] = (0, 0, 255)
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="AVIF", quality=90)
    got = prepare(out.getvalue(), SQUASH).astype(int)
    assert got[112, 20, 0] > 200 and got[112, 20, 2] < 60  # red left
    assert got[112, 200, 2] > 200 and got[112, 200, 0] < 60  # blue right
