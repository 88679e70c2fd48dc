"""Coverage-guided fuzzing of image decoding with atheris (libFuzzer), bounded by default.

    python scripts/fuzz_decode.py                 # 5,000 runs from a generated seed corpus
    python scripts/fuzz_decode.py -runs=0 corpus/ # libFuzzer flags pass through

Anything but a clean image or ImageDecodeError (another exception, a crash, a hang past
-timeout) is a finding; libFuzzer writes the input to crash-*/timeout-* files.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import atheris
import numpy as np

# Pillow's Python side (format plugins, EXIF parsing) is instrumented too, for coverage feedback.
with atheris.instrument_imports(include=["PIL", "ris.embedder"]):
    from PIL import Image

    from ris.embedder.preprocessing import ImageDecodeError, PreprocessSpec, prepare

SPEC = PreprocessSpec()
MAX_PIXELS = 4_000_000


def test_one_input(data: bytes) -> None:
    try:
        out = prepare(data, SPEC, MAX_PIXELS)
    except ImageDecodeError:
        return
    if out.shape != (224, 224, 3):
        raise AssertionError(f"bad output shape {out.shape}")


def seed_corpus(folder: Path) -> Path:
    """Small valid images in each format: libFuzzer mutates from here."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP"):
        out = io.BytesIO()
        image.save(out, format=fmt)
        (folder / f"seed.{fmt.lower()}").write_bytes(out.getvalue())
    return folder


def main() -> None:
    args = list(sys.argv)
    if not any(a.startswith("-runs=") or a.startswith("-max_total_time=") for a in args):
        args.append("-runs=5000")
    if not any(a.startswith("-timeout=") for a in args):
        args.append("-timeout=10")
    if not any(a.startswith("-max_len=") for a in args):
        args.append("-max_len=65536")
    corpus = [a for a in args[1:] if not a.startswith("-")]
    with tempfile.TemporaryDirectory(prefix="fuzz-decode-") as tmp:
        if not corpus:
            args.append(str(seed_corpus(Path(tmp))))
        atheris.Setup(args, test_one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
