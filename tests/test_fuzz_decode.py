"""Fuzzing the one decode path: whatever the bytes, an RGB image or ImageDecodeError, quickly."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fuzz_inputs import base_images, catalogue, mutated_images, png_claiming
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ris.embedder.preprocessing import ImageDecodeError, PreprocessSpec, decode_image, prepare

# Corrupt inputs make Pillow warn (bad EXIF, bomb-sized headers): expected here, not news.
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]
SPEC = PreprocessSpec()
LIMIT = 4_000_000  # pixels; like a server's limit, keeps every accepted decode small
ROOT = Path(__file__).resolve().parent.parent
FUZZ = settings(
    max_examples=150,
    deadline=3000,  # ms per example: a hang or a slow path fails the test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def check_decode(data: bytes) -> None:
    try:
        out = prepare(data, SPEC, LIMIT)
    except ImageDecodeError as exc:
        assert str(exc), "an ImageDecodeError must say why"
        return
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_decode_or_refuse(data: bytes) -> None:
    check_decode(data)


@FUZZ
@given(mutated_images())
def test_mutated_real_images_decode_or_refuse(data: bytes) -> None:
    check_decode(data)


@settings(FUZZ, max_examples=60)
@given(st.sampled_from(base_images()), st.data())
def test_every_prefix_of_a_real_image(data: bytes, draw: st.DataObject) -> None:
    """Truncation anywhere (a half-uploaded file) is refused or decodes; never another error."""
    check_decode(data[: draw.draw(st.integers(0, len(data)))])


@settings(FUZZ, max_examples=40)
@given(st.integers(1, 200_000), st.integers(1, 200_000))
def test_declared_dimensions_are_checked_before_decoding(width: int, height: int) -> None:
    data = png_claiming(width, height)
    if width * height > LIMIT:
        with pytest.raises(ImageDecodeError, match="too many pixels"):
            decode_image(data, LIMIT)
    else:
        check_decode(data)  # the 1-pixel payload cannot fill the claim: refused as corrupt


@pytest.mark.parametrize(("name", "data", "reason"), catalogue(), ids=lambda v: str(v)[:20])
def test_named_cases(name: str, data: bytes, reason: str | None) -> None:
    if reason is None:
        assert decode_image(data, LIMIT).mode == "RGB", name
    else:
        with pytest.raises(ImageDecodeError, match=reason):
            decode_image(data, LIMIT)


@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris not installed (optional: pip install atheris)",
)
def test_atheris_short_run(tmp_path: Path) -> None:
    """scripts/fuzz_decode.py under libFuzzer for a bounded number of runs: no crash."""
    result = subprocess.run(
        [sys.executable, "scripts/fuzz_decode.py", "-runs=400", f"-artifact_prefix={tmp_path}/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 400 runs" in result.stderr
