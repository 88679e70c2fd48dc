"""Search and ingest together at concurrency 64 against real service processes (loopback):
no errors but RESOURCE_EXHAUSTED under overload, every acknowledged item stored exactly once,
RSS bounded after warm-up, p99 printed. The short variant (Milvus Lite) runs in CI; the long
one (``RIS_SOAK_SECONDS=300``, marked ``slow`` and ``milvus_server``: against a Milvus server,
so the search process's RSS is the service's own) is what ``scripts/soak.py`` also runs by hand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pytest

from ris.tools.bench import sample_images
from ris.tools.harness import ServiceProcess, start_embedder, start_search
from ris.tools.milvus_standalone import MilvusServerHandle
from ris.tools.soak import SoakReport, soak

ALLOWED = {"search:RESOURCE_EXHAUSTED", "ingest:RESOURCE_EXHAUSTED"}


@contextmanager
def _services(model_path: Path, milvus_uri: str) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    embedder = start_embedder(model_path)
    try:
        search = start_search(embedder.address, milvus_uri)
        try:
            yield embedder, search
        finally:
            search.stop()
    finally:
        embedder.stop()


def _run(
    services: tuple[ServiceProcess, ServiceProcess], seconds: float, warmup: float
) -> SoakReport:
    embedder, search = services
    report = soak(
        search,
        {"embedder": embedder.pid, "search": search.pid},
        sample_images(32),
        duration_s=seconds,
        concurrency=64,
        ingest_workers=8,
        warmup_s=warmup,
        rss_every_s=1.0,
    )
    summary = {k: v for k, v in asdict(report).items() if k != "rss_mb"}
    print(json.dumps(summary, indent=1))
    return report


def _check(report: SoakReport, rss_limit_mb: float) -> None:
    assert set(report.errors) <= ALLOWED, report.errors
    assert report.calls.get("search", 0) > 0 and report.calls.get("ingest", 0) > 0
    assert report.latency_ms["search"].get("p99", 0) > 0
    assert report.items_stored + report.items_failed == report.items_sent
    assert report.items_stored > 0
    assert report.count_after == report.items_stored, "stored items missing or extra"
    assert report.duplicates == 0
    for name, growth in report.rss_growth_mb.items():
        assert growth < rss_limit_mb, f"{name} RSS grew {growth} MB after warm-up"


def test_mixed_load_short(model_path: Path, tmp_path: Path) -> None:
    """On Milvus Lite, whose engine lives in the search process and grows with the data
    (~1 MB/s while ingesting here, docs/reliability.md): hence the loose RSS bound."""
    with _services(model_path, str(tmp_path / "load.db")) as services:
        _check(_run(services, seconds=30.0, warmup=10.0), rss_limit_mb=150.0)


@pytest.mark.slow
@pytest.mark.milvus_server
@pytest.mark.skipif(not os.environ.get("RIS_SOAK_SECONDS"), reason="set RIS_SOAK_SECONDS to run")
def test_mixed_load_soak(model_path: Path, milvus_server: MilvusServerHandle) -> None:
    """Minutes of load against a Milvus server, so the search process holds only the service:
    its RSS must stay flat."""
    seconds = float(os.environ["RIS_SOAK_SECONDS"])
    with _services(model_path, milvus_server.uri) as services:
        _check(_run(services, seconds=seconds, warmup=min(60.0, seconds / 4)), rss_limit_mb=30.0)
