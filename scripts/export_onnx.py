"""Export ResNet50 to ONNX into this checkout's models/, checked on the imagenet-sample photos
in ../shared/datasets when present (the code lives in embedder_service/export/onnx_export.py;
`ris model fetch` does the same for an installed ris). --help lists the options."""

from __future__ import annotations

import sys
from pathlib import Path

from ris.embedder.export import onnx_export

ROOT = Path(__file__).resolve().parent.parent

CHECK_PHOTOS = ROOT.parent / "shared" / "datasets" / "imagenet-sample"


def main(argv: list[str] | None = None) -> int:
    return onnx_export.main(
        argv, default_models_dir=ROOT / "models", default_images_dir=CHECK_PHOTOS
    )


if __name__ == "__main__":
    sys.exit(main())
