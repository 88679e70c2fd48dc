"""scripts/bench_phone_photos.py end to end at a tiny size (real model, real services, Milvus
Lite): every photo of either size stored, and the ratios are the figures they claim to be."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_benchmarks_smoke import run_script


@pytest.mark.usefixtures("caltech")  # the photos are made from Caltech's
def test_bench_phone_photos_runs_both_sizes(model_path: Path, tmp_path: Path) -> None:
    data = run_script(
        "bench_phone_photos.py",
        ["--limit", "2", "--repeats", "1", "--model", str(model_path), "--raw-seconds", "1",
         "--raw-iters", "2", "--leg-seconds", "10", "--concurrency", "2", "--batch", "2",
         "--cache", str(tmp_path / "photos")],
        tmp_path,
    )  # fmt: skip
    assert data["photos_per_size"] == 2 and data["large_mean_bytes"] > 1_500_000
    for size in ("small", "large"):
        (run,) = data["end_to_end"][size]
        assert run["stored"] == 2 and run["failed"] == 0
    (e2e_pair,) = data["ratio_per_repeat"]["e2e_large_to_small"]  # one repeat: one pair
    assert e2e_pair == pytest.approx(
        data["end_to_end"]["large"][0]["images_per_s"]
        / data["end_to_end"]["small"][0]["images_per_s"]
    )
    assert data["ratios"]["e2e_large_to_small"] == pytest.approx(e2e_pair)
    (raw_run,) = data["raw_runs"]
    assert data["ratios"]["embedder_large_to_raw"] == pytest.approx(
        data["embedder_alone_images_per_s"]["large"][0] / raw_run["images_per_s"]
    )
    decode = data["decode_ms_one_thread"]
    assert decode["large_scaled"] < decode["large_full"]  # 12 MP JPEGs: scaled decoding pays
