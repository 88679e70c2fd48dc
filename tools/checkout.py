"""Where a checkout keeps what scripts and tests read by default: models/, the data sets in
../shared/datasets, docker-compose.yml and the Dockerfiles' build context.

Meaningful when ris is installed from a checkout in editable mode (how the scripts and tests
run); an installed wheel has no checkout, and its tools take explicit paths instead.
"""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = CHECKOUT / "models" / "resnet50.onnx"
DATASETS = CHECKOUT.parent / "shared" / "datasets"
CALTECH_TRAIN = DATASETS / "caltech101-ris" / "train"
CALTECH_TEST = DATASETS / "caltech101-ris" / "test"
IMAGENET = DATASETS / "imagenet-sample" / "images"
