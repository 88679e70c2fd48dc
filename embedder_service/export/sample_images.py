"""Load a small deterministic batch of real photos (imagenet-sample) for export checks."""

from __future__ import annotations

import csv
from collections.abc import Collection
from pathlib import Path

import numpy as np

from ris.embedder.preprocessing import PreprocessSpec, prepare


def read_labels(images_dir: Path) -> list[tuple[Path, int]]:
    """(image path, class index) rows of imagenet-sample's labels.csv, in file order."""
    with (images_dir / "labels.csv").open(newline="") as fh:
        return [(images_dir / row["path"], int(row["class_index"])) for row in csv.DictReader(fh)]


def load_sample_batch(
    images_dir: Path, count: int, spec: PreprocessSpec, skip: Collection[str] = ()
) -> tuple[np.ndarray, list[str]]:
    """Photos spread evenly over the set, preprocessed; noise if the data set is absent.

    skip: file names to leave out (keeps a calibration set apart from a check set).
    """
    if (images_dir / "labels.csv").exists():
        rows = [(p, c) for p, c in read_labels(images_dir) if p.name not in skip]
        step = max(1, len(rows) // count)
        picked = [path for path, _ in rows[step // 2 if skip else 0 :: step][:count]]
        batch = np.stack([prepare(p.read_bytes(), spec) for p in picked])
        return batch, [p.name for p in picked]
    rng = np.random.default_rng(0)
    crop = spec.crop_size
    return rng.integers(0, 256, (count, crop, crop, 3), dtype=np.uint8), []
