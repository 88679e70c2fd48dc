"""The high-level client (sync and asyncio) against the real services: embedder with the real
ONNX model, search service on Milvus Lite, both started by `ris.launcher.serve.Services` on
loopback."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from embedder_fixtures import SERVED_DIM
from search_fixtures import live_client, serving

from ris.client import (
    AsyncRisClient,
    ById,
    InvalidArgument,
    NotFound,
    QueryFailed,
    RisClient,
)
from ris.launcher.serve import Services

CLASSES = ("Leopards", "Motorbikes", "accordion")
PER_CLASS = 4
COLLECTION = "live_photos"


@pytest.fixture(scope="module")
def services(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with serving(model_path, tmp_path_factory.mktemp("milvus")) as running:
        yield running


@pytest.fixture(scope="module")
def ris(services: Services) -> Iterator[RisClient]:
    with live_client(services.address) as client:
        yield client


@pytest.fixture(scope="module")
def sample_csv(caltech: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small seed-style CSV over real photos, plus one corrupt file and one missing file."""
    folder = tmp_path_factory.mktemp("sample")
    rows = [("bad", str(_corrupt(folder / "corrupt.jpg")), "junk"), ("nofile", "gone.jpg", "x")]
    for cls in CLASSES:
        for i in range(1, PER_CLASS + 1):
            rows.append((f"{cls}_{i}", str(caltech / "train" / cls / f"image_{i:04d}.jpg"), cls))
    path = folder / "sample.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([("id", "path", "label"), *rows])
    return path


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return path


@pytest.fixture(scope="module")
def ingested(ris: RisClient, sample_csv: Path) -> Path:
    info = ris.create_collection(COLLECTION, exist_ok=True)
    assert info.name == COLLECTION and info.dim == SERVED_DIM and info.metric == "COSINE"
    summary = ris.ingest_csv(COLLECTION, sample_csv, chunk_size=5)
    n = len(CLASSES) * PER_CLASS
    assert (summary.received, summary.stored, summary.failed) == (n + 1, n, 1)
    assert [(f.id, f.position) for f in summary.failures] == [("bad", 0)]
    assert len(summary.skipped) == 1 and "gone.jpg" in summary.skipped[0]
    return sample_csv


def test_collection_is_described_and_counted(ris: RisClient, ingested: Path) -> None:
    info = ris.describe_collection(COLLECTION)
    assert info.count == len(CLASSES) * PER_CLASS
    weights, rest = info.model_version.split("-", 1)
    pooling, geometry = rest.rsplit("-", 1)
    assert len(weights) == 16 and (pooling, geometry) == ("gem3+softmax-t1-w0.7", "squash")
    assert COLLECTION in [c.name for c in ris.list_collections()]
    assert ris.count(COLLECTION, labels=["Leopards"]) == PER_CLASS


def test_search_by_unseen_photo_finds_its_class(
    ris: RisClient, ingested: Path, caltech: Path
) -> None:
    for cls in CLASSES:
        query = caltech / "test" / cls / "image_0011.jpg"
        result = ris.search(COLLECTION, query, top_k=PER_CLASS)
        assert len(result.hits) == PER_CLASS
        assert [h.label for h in result.hits[:2]] == [cls, cls], result.hits
        # near duplicates first (most alike first), then the rest by score
        dups = [h for h in result.hits if h.near_duplicate]
        assert result.hits[: len(dups)] == dups
        assert all(h.visual_score is not None and h.visual_score >= 0.7 for h in dups)
        visual = [h.similarity for h in dups]
        assert visual == sorted(visual, reverse=True)
        scores = [h.score for h in result.hits[len(dups) :]]
        assert scores == sorted(scores, reverse=True)
        assert Path(result.hits[0].uri).is_file()  # the client path sent at ingest


def test_bytes_vector_and_id_queries_agree(ris: RisClient, ingested: Path, caltech: Path) -> None:
    photo = caltech / "train" / "Motorbikes" / "image_0002.jpg"
    by_bytes = ris.search(COLLECTION, photo.read_bytes(), top_k=3)
    # The same photo is its own best hit; below 1 because the stored vector is its blend with
    # its neighbours (database-side augmentation, the default).
    assert by_bytes.hits[0].id == "Motorbikes_2" and by_bytes.hits[0].score > 0.95
    [stored] = ris.get(COLLECTION, ["Motorbikes_2"], include_vectors=True)
    assert stored.vector is not None and len(stored.vector) == SERVED_DIM
    assert np.linalg.norm(stored.vector) == pytest.approx(1.0, abs=1e-3)
    by_vector = ris.search(COLLECTION, np.asarray(stored.vector), top_k=3)
    assert [h.id for h in by_vector.hits] == [h.id for h in by_bytes.hits]
    by_id = ris.search(COLLECTION, ById("Motorbikes_2"), top_k=3, exclude_self=True)
    assert "Motorbikes_2" not in [h.id for h in by_id.hits]
    assert by_id.hits[0].label == "Motorbikes"


def test_filters_and_per_query_errors(ris: RisClient, ingested: Path, caltech: Path) -> None:
    query = caltech / "test" / "Leopards" / "image_0011.jpg"
    only = ris.search(COLLECTION, query, top_k=10, labels=["accordion"])
    assert only.hits and {h.label for h in only.hits} == {"accordion"}
    good, bad = ris.search_batch(COLLECTION, [query, b"not an image"], top_k=2)
    assert good.ok and len(good.hits) == 2
    assert bad.error is not None and bad.error.message and not bad.hits
    with pytest.raises(QueryFailed):
        ris.search(COLLECTION, b"not an image")


def test_augmentation_is_chosen_at_creation(ris: RisClient, ingested: Path) -> None:
    assert ris.describe_collection(COLLECTION).augmentation_top_n == 3  # the server default
    for top_n in (0, 2):
        name = f"{COLLECTION}_dba{top_n}"
        try:
            info = ris.create_collection(name, augmentation_top_n=top_n)
            assert info.augmentation_top_n == top_n
            assert ris.describe_collection(name).augmentation_top_n == top_n
        finally:
            ris.drop_collection(name)
    with pytest.raises(ValueError):
        ris.create_collection(f"{COLLECTION}_bad", augmentation_top_n=-1)


def test_errors_are_typed(ris: RisClient, ingested: Path) -> None:
    with pytest.raises(NotFound):
        ris.describe_collection("no_such_collection")
    with pytest.raises(InvalidArgument):
        ris.create_collection("bad name!")


def test_async_client_matches_sync(ris: RisClient, services: Services, ingested: Path) -> None:
    expected = [h.id for h in ris.search(COLLECTION, ById("accordion_1"), top_k=4).hits]

    async def main() -> tuple[list[str], int]:
        async with AsyncRisClient(address=services.address, timeout=120) as aris:
            await aris.wait_ready(30)
            result = await aris.search(COLLECTION, ById("accordion_1"), top_k=4)
            return [h.id for h in result.hits], await aris.count(COLLECTION)

    ids, count = asyncio.run(main())
    assert ids == expected and count == len(CLASSES) * PER_CLASS


def test_reingest_upserts_then_delete_and_drop(ris: RisClient, ingested: Path) -> None:
    before = ris.count(COLLECTION)
    again = ris.ingest_csv(COLLECTION, ingested)
    assert again.stored == before and ris.count(COLLECTION) == before
    assert ris.delete(COLLECTION, ["Leopards_1", "Leopards_2"]) == 2
    assert ris.count(COLLECTION) == before - 2
    assert ris.get(COLLECTION, ["Leopards_1"]) == []
    assert ris.drop_collection(COLLECTION) is True
    with pytest.raises(NotFound):
        ris.describe_collection(COLLECTION)
