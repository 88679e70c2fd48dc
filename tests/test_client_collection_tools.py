"""Whole-collection tools through the client and the `ris` CLI, against the real services
(embedder with the real model, search service on Milvus Lite, `client.serve.Services` on
loopback): score thresholds, listing and export, folder sync, duplicates."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import AsyncRisClient, ById, RetryPolicy, RisClient
from client.serve import ServeOptions, Services

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("Leopards", "Motorbikes", "accordion")
PER_CLASS = 3
COLLECTION = "tools_photos"


@pytest.fixture(scope="module")
def services(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    data = tmp_path_factory.mktemp("milvus")
    options = ServeOptions(
        port=0, embedder_port=0, model=model_path, provider="cpu", milvus_uri=str(data / "m.db")
    )
    with Services(options) as running:
        yield running


@pytest.fixture(scope="module")
def ris(services: Services) -> Iterator[RisClient]:
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.1)
    with RisClient(address=services.address, timeout=120, retry=retry) as client:
        client.wait_ready(30)
        yield client


def cli(services: Services, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args, "--address", services.address],
        cwd=ROOT,
        env={**os.environ, "RIS_RETRIES": "3"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def folder(caltech: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PER_CLASS real photos per class, one subfolder per class."""
    root = tmp_path_factory.mktemp("photos")
    for cls in CLASSES:
        (root / cls).mkdir()
        for i in range(1, PER_CLASS + 1):
            name = f"image_{i:04d}.jpg"
            shutil.copy(caltech / "train" / cls / name, root / cls / name)
    return root


@pytest.fixture(scope="module")
def ingested(ris: RisClient, folder: Path) -> str:
    ris.create_collection(COLLECTION, exist_ok=True)
    summary = ris.ingest_folder(COLLECTION, folder)
    assert summary.stored == len(CLASSES) * PER_CLASS and summary.failed == 0
    return COLLECTION


# -- score threshold -----------------------------------------------------------------------


def test_min_score_sync_async_and_cli(ris: RisClient, services: Services, ingested: str) -> None:
    query = ById("Leopards/image_0001.jpg")
    full = ris.search(ingested, query, top_k=9, expansion=False, exclude_self=True)
    threshold = (full.hits[1].score + full.hits[2].score) / 2
    cut = ris.search(
        ingested, query, top_k=9, expansion=False, exclude_self=True, min_score=threshold
    )
    assert [h.id for h in cut.hits] == [h.id for h in full.hits[:2]]

    async def run() -> list[str]:
        async with AsyncRisClient(address=services.address, timeout=60) as aris:
            result = await aris.search(
                ingested, query, top_k=9, expansion=False, exclude_self=True, min_score=threshold
            )
            return [h.id for h in result.hits]

    assert asyncio.run(run()) == [h.id for h in cut.hits]
    shown = cli(
        services, "search", ingested, query.id, "--by-id", "--exclude-self", "--json",
        "--no-page", "--min-score", "0.99",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[0]["hits"] == []  # no other photo is that close


# -- listing and export --------------------------------------------------------------------


def test_iter_items_sync_and_async(ris: RisClient, services: Services, ingested: str) -> None:
    expected = sorted(ris_ids(ris, ingested))
    assert [i.id for i in ris.iter_items(ingested, page_size=2)] == expected
    with_vectors = list(ris.iter_items(ingested, page_size=4, include_vectors=True))
    assert all(len(i.vector or []) == 2048 for i in with_vectors)
    labelled = [i.id for i in ris.iter_items(ingested, labels=["accordion"], page_size=1)]
    assert labelled == [i for i in expected if i.startswith("accordion/")]

    async def run() -> list[str]:
        async with AsyncRisClient(address=services.address, timeout=60) as aris:
            return [i.id async for i in aris.iter_items(ingested, page_size=3)]

    assert asyncio.run(run()) == expected


def ris_ids(ris: RisClient, collection: str) -> list[str]:
    return [i.id for i in ris.get(collection, limit=1000)]


def test_export_cli_writes_jsonl(services: Services, ingested: str, tmp_path: Path) -> None:
    out = tmp_path / "export.jsonl"
    done = cli(services, "collections", "export", ingested, "--out", str(out), "--vectors")
    assert done.returncode == 0, done.stderr
    assert f"exported {len(CLASSES) * PER_CLASS} items" in done.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == sorted(r["id"] for r in records)
    assert len(records) == len(CLASSES) * PER_CLASS
    first = records[0]
    assert first["label"] == first["id"].split("/")[0] and len(first["vector"]) == 2048
    assert not (tmp_path / "export.jsonl.partial").exists()
