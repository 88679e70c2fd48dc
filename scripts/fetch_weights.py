"""Fetch the ResNet50 ImageNet weights into this checkout's models/ (the code lives in
embedder_service/export/fetch_weights.py; `ris model fetch` does the same for an installed ris)."""

from __future__ import annotations

import sys
from pathlib import Path

from ris.embedder.export import fetch_weights

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    return fetch_weights.main(argv, default_models_dir=ROOT / "models")


if __name__ == "__main__":
    sys.exit(main())
