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
         "--raw-iters", "2", "--leg-seconds", "10", "--concurrency", "2",
         "--cache", str(tmp_path / "photos")],
        tmp_path,
    )  # fmt: skip
    assert data["photos_per_size"] == 2 and data["large_mean_bytes"] > 1_500_000
    for size in ("small", "large"):
        (run,) = data["end_to_end"][size]
        assert run["stored"] == 2 and run["failed"] == 0
    best = data["best"]
    assert data["ratios"]["e2e_large_to_small"] == pytest.approx(
        best["end_to_end"]["large"] / best["end_to_end"]["small"]
    )
    assert data["ratios"]["embedder_large_to_raw"] == pytest.approx(
        best["embedder_alone"]["large"] / data["raw"]["images_per_s"]
    )
    decode = data["decode_ms_one_thread"]
    assert decode["large_scaled"] < decode["large_full"]  # 12 MP JPEGs: scaled decoding pays
