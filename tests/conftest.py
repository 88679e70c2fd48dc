"""Shared test configuration. Service fixtures live in plugin modules, one per service."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["embedder_fixtures", "search_fixtures", "milvus_server"]

ROOT = Path(__file__).resolve().parent.parent

SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
CALTECH = SHARED_DATASETS / "caltech101-ris"
IMAGENET_SAMPLE = SHARED_DATASETS / "imagenet-sample"
MODELS = ROOT / "models"


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The exported fp32 ResNet50 ONNX model (made by scripts/export_onnx.py before the tests)."""
    path = MODELS / "resnet50.onnx"
    if not path.exists():
        pytest.fail(f"{path} missing: run python scripts/export_onnx.py first")
    return path


@pytest.fixture(scope="session")
def imagenet_sample() -> Path:
    if not IMAGENET_SAMPLE.exists():
        pytest.skip(f"{IMAGENET_SAMPLE} not present")
    return IMAGENET_SAMPLE


@pytest.fixture(scope="session")
def caltech() -> Path:
    if not CALTECH.exists():
        pytest.skip(f"{CALTECH} not present")
    return CALTECH
