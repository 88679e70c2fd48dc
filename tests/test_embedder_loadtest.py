"""tools/loadtest.py against the real embedder: bounded runs, reports, JSON, error codes."""

from __future__ import annotations

import argparse
import json
import time

from ris.tools import loadtest


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    loadtest.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_embed_levels_are_bounded_and_reported(embedder_server, embedder_images, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, data in enumerate(embedder_images[:4]):
        (folder / f"{i}.jpg").write_bytes(data)
    out = tmp_path / "load.json"
    args = parse(
        "--target",
        embedder_server.address,
        "--call",
        "embed",
        "--concurrency",
        "1,3",
        "--requests",
        "6",
        "--duration",
        "60",
        "--warmup",
        "0",
        "--batch",
        "2",
        "--images",
        str(folder),
        "--json",
        str(out),
    )
    assert loadtest.run(args) == 0
    reports = json.loads(out.read_text())
    assert [r["concurrency"] for r in reports] == [1, 3]
    for report in reports:
        assert report["requests"] == report["ok"] == 6  # the count bound, not the time bound
        assert report["errors"] == {} and report["item_errors"] == 0
        assert report["images_per_s"] > 0 and report["qps"] > 0
        assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert "images/s" in capsys.readouterr().out


def test_time_bound_stops_a_run(embedder_server):
    spec = loadtest.LoadSpec(
        target=embedder_server.address,
        call="model-info",
        concurrency=2,
        max_requests=10**9,
        max_seconds=0.5,
        warmup_seconds=0,
    )
    started = time.monotonic()
    report = loadtest.run_level(spec, [])
    assert time.monotonic() - started < 10
    assert 0 < report.ok < 10**9 and report.seconds < 5


def test_errors_are_counted_by_code(embedder_server):
    # The embedder does not serve SearchService: every call fails with UNIMPLEMENTED.
    spec = loadtest.LoadSpec(
        target=embedder_server.address,
        call="search",
        concurrency=2,
        max_requests=4,
        max_seconds=30,
        warmup_seconds=0,
        collection="c",
    )
    report = loadtest.run_level(spec, [b"x"])
    assert report.errors == {"UNIMPLEMENTED": 4} and report.ok == 0


def test_bad_images_count_as_item_errors(embedder_server, embedder_images):
    spec = loadtest.LoadSpec(
        target=embedder_server.address,
        call="embed",
        concurrency=1,
        max_requests=2,
        max_seconds=30,
        warmup_seconds=0,
        batch=2,
    )
    report = loadtest.run_level(spec, [embedder_images[0], b"not an image"])
    assert report.ok == 2 and report.item_errors == 2
