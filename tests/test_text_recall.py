"""Text search quality through the real embedder: class names and descriptions find their photo.

Runs scripts/eval_text_search.py against a server on 127.0.0.1 with 100 imagenet-sample photos
(100 classes, spread over the 500); the full 500-photo study is that script's default run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MINILM = ROOT / "models" / "minilm"
PHOTOS = 100


@pytest.fixture(scope="module")
def report(make_embedder, imagenet_sample, tmp_path_factory) -> dict:
    if not (MINILM / "model.onnx").exists():
        pytest.fail(f"{MINILM} missing: run python scripts/export_text_model.py first")
    out = tmp_path_factory.mktemp("text_eval") / "report.json"
    with make_embedder(text_models=str(MINILM), max_message_bytes=64 * 1024 * 1024) as server:
        proc = subprocess.run(
            [sys.executable, "scripts/eval_text_search.py", "--address", server.address,
             "--dataset", str(imagenet_sample), "--limit", str(PHOTOS), "--json", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_class_names_find_their_photo(report):
    (results,) = report["poolings"].values()  # the server's pooling (gem3 by default)
    names = results["class names"]
    assert names["queries"] == PHOTOS
    assert names["recall@1"] >= 0.75
    assert names["recall@10"] >= 0.90
    assert names["low_confidence"] == 0


def test_descriptions_find_their_photo(report):
    (results,) = report["poolings"].values()
    described = results["descriptions (eval)"]
    assert described["queries"] >= 10
    assert described["recall@10"] >= 0.75


def test_off_topic_texts_are_flagged(report):
    off = report["off_topic"]
    assert off["flagged_low_confidence"] == len(off["texts"])


def test_projection_is_close_to_its_oracle(report):
    (results,) = report["poolings"].values()
    oracle = results["oracle (class's own classifier row)"]
    assert results["class names"]["recall@1"] >= oracle["recall@1"] - 0.05
