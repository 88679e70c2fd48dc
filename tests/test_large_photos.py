"""Phone-sized photos through the real services: no message limit fails an item that is valid on
its own, for Ingest and for Search, at every hop (client -> search service -> embedder).

The embedder here takes at most 24 MiB per message and 16 images per request, the search service
64 MiB and batches of 32: a run of 12 MP photos (~2.7 MB each) overflows the embedder's limit as
soon as nine share a batch, and one 30 MB BMP exceeds it alone. The same code paths serve the
defaults (64 MiB everywhere): tests/test_batching_units.py checks the group sizes there.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from large_photos import bmp, caltech_photo, phone_jpegs
from search_fixtures import running_search, search_config

from ris.api import search_pb2, search_pb2_grpc
from ris.client import AsyncRisClient, IngestItem, IngestSummary, RisClient
from ris.client.shrink import Geometry, shrink

EMBEDDER_LIMIT = 24 * 1024 * 1024
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
SMALL = ("airplanes/image_0002.jpg", "Leopards/image_0002.jpg", "accordion/image_0002.jpg")


@pytest.fixture(scope="module")
def address(make_embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with make_embedder(max_message_bytes=EMBEDDER_LIMIT, max_image_pixels=40_000_000) as embedder:
        db = tmp_path_factory.mktemp("large-photos") / "ris.db"
        config = search_config(embedder.address, str(db), ingest_batch_size=32)
        with running_search(config) as server:
            yield server.address


@pytest.fixture(scope="module")
def stub(address: str) -> Iterator[search_pb2_grpc.SearchServiceStub]:
    channel = grpc.insecure_channel(address)
    yield search_pb2_grpc.SearchServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def ris(address: str) -> Iterator[RisClient]:
    with RisClient(address=address, timeout=300) as client:
        yield client


def new_collection(ris: RisClient) -> str:
    name = f"photos_{uuid.uuid4().hex[:8]}"
    ris.create_collection(name, augmentation_top_n=0)
    return name


def phone_run() -> list[tuple[str, bytes]]:
    """12 large photos, 3 small ones and one 30 MB BMP, interleaved."""
    large, small = phone_jpegs(), [caltech_photo(n) for n in SMALL]
    run: list[tuple[str, bytes]] = [("small-0", small[0])]
    for r in range(4):
        run += [(f"large-{r}-{i}", data) for i, data in enumerate(large)]
        if r == 1:
            run.append(("oversize", bmp(3300, 3200)))  # 31.7 MB: more than the embedder takes
        if r < 2:
            run.append((f"small-{r + 1}", small[r + 1]))
    return run


def test_a_run_of_phone_photos_is_stored_and_the_oversize_one_fails_alone(stub, ris) -> None:
    """Straight to the search service: it groups by bytes and fails the BMP by itself."""
    name = new_collection(ris)
    run = phone_run()
    items = [search_pb2.Item(id=i, image=data, label=i.split("-")[0]) for i, data in run]
    messages = [search_pb2.IngestRequest(collection=name, items=items[:8])]
    messages += [search_pb2.IngestRequest(items=items[k : k + 1]) for k in range(8, len(items))]
    response = stub.Ingest(iter(messages), timeout=300)
    assert (response.received, response.stored, response.failed) == (len(run), len(run) - 1, 1)
    failure = response.failures[0]
    assert failure.id == "oversize" and failure.position == [i for i, _ in run].index("oversize")
    assert failure.error.code == RESOURCE_EXHAUSTED
    assert "item 'oversize'" in failure.error.message
    assert f"the embedder's max_message_bytes = {EMBEDDER_LIMIT} bytes" in failure.error.message
    assert ris.count(name) == len(run) - 1
    # every copy of the same photo got the same embedding, wherever its batch boundaries fell
    stored = {s.id: np.asarray(s.vector) for s in ris.get(name, include_vectors=True, limit=100)}
    for i in range(3):
        copies = [stored[f"large-{r}-{i}"] for r in range(4)]
        assert all(np.allclose(c, copies[0], atol=1e-5) for c in copies)


def test_the_client_fails_what_the_service_cannot_take_locally(ris) -> None:
    name = new_collection(ris)
    limits = ris.limits()  # the embedder's limit reached the client through GetServiceInfo
    assert limits.max_item_bytes == EMBEDDER_LIMIT - 4096 - 16
    run = phone_run()
    summary = ris.ingest(name, [IngestItem(id=i, data=data) for i, data in run], chunk_size=32)
    assert (summary.received, summary.stored, summary.failed) == (len(run), len(run) - 1, 1)
    (failure,) = summary.failures
    assert (failure.id, failure.code) == ("oversize", RESOURCE_EXHAUSTED)
    assert "over the service's limit per image" in failure.message


def test_image_queries_beyond_the_embedders_per_request_limit_are_split(stub, ris) -> None:
    """19 image queries (the embedder takes 16 per request) and one too large: 19 answered."""
    name = new_collection(ris)
    small = [caltech_photo(n) for n in SMALL]
    ris.ingest(name, [IngestItem(id=f"s{i}", data=d) for i, d in enumerate(small)])
    oversize = bmp(3300, 3200)
    images = [small[i % 3] for i in range(17)] + list(phone_jpegs()[:2]) + [oversize]
    request = search_pb2.SearchRequest(
        collection=name, queries=[search_pb2.Query(image=d) for d in images], top_k=3
    )
    response = stub.Search(request, timeout=300)
    assert len(response.results) == len(images)
    for i, result in enumerate(response.results[:17]):
        assert not result.error.code and result.hits[0].id == f"s{i % 3}", (i, result)
    assert all(not r.error.code and r.hits for r in response.results[17:19])
    error = response.results[19].error
    assert error.code == RESOURCE_EXHAUSTED and "query 19" in error.message
    # the client cuts on its side: the BMP never leaves it, its neighbours are answered
    results = ris.search_batch(name, [small[0], oversize, small[1]], top_k=3)
    assert [r.hits[0].id for r in (results[0], results[2])] == ["s0", "s1"]
    assert results[1].error is not None and results[1].error.code == RESOURCE_EXHAUSTED
    assert "query 1 is" in results[1].error.message


def test_more_queries_than_one_call_allows_are_split_by_the_client(ris) -> None:
    name = new_collection(ris)
    ris.ingest(name, [IngestItem(id=f"s{i}", data=caltech_photo(n)) for i, n in enumerate(SMALL)])
    vectors = {s.id: s.vector for s in ris.get(name, include_vectors=True)}
    assert ris.limits().max_queries == 256
    queries = [vectors[f"s{i % 3}"] for i in range(300)]
    results = ris.search_batch(name, queries, top_k=1)
    assert [r.hits[0].id for r in results] == [f"s{i % 3}" for i in range(300)]


def test_shrunk_uploads_embed_like_the_originals(ris, tmp_path: Path) -> None:
    """--shrink sends ~100 KB instead of ~2.7 MB; the model sees the same picture."""
    info = ris.service_info()
    assert info.geometry == Geometry("squash", 224, 256)  # the embedder's served geometry
    large = phone_jpegs()
    for data in large:
        assert len(shrink(data, info.geometry)) < 200_000
    paths = []
    for i, data in enumerate(large):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(data)
    full, shrunk = new_collection(ris), new_collection(ris)
    items = [IngestItem(id=str(i), path=p) for i, p in enumerate(paths)]
    assert ris.ingest(full, items).stored == 3
    assert ris.ingest(shrunk, items, shrink=True).stored == 3
    a = {s.id: np.asarray(s.vector) for s in ris.get(full, include_vectors=True)}
    b = {s.id: np.asarray(s.vector) for s in ris.get(shrunk, include_vectors=True)}
    for key in a:
        assert float(a[key] @ b[key]) > 0.99, key  # unit vectors: cosine similarity


def test_the_async_client_cuts_the_same_way(address: str, ris) -> None:
    name = new_collection(ris)
    small = [caltech_photo(n) for n in SMALL]

    async def run() -> tuple[IngestSummary, list]:
        async with AsyncRisClient(address=address, timeout=300) as client:
            items = [IngestItem(id=f"s{i}", data=d) for i, d in enumerate(small)]
            items.insert(1, IngestItem(id="oversize", data=bmp(3300, 3200)))
            summary = await client.ingest(name, items)
            vectors = {s.id: s.vector or [] for s in await client.get(name, include_vectors=True)}
            queries = [vectors[f"s{i % 3}"] for i in range(300)]
            return summary, await client.search_batch(name, queries, top_k=1)

    summary, results = asyncio.run(run())
    assert (summary.stored, [f.id for f in summary.failures]) == (3, ["oversize"])
    assert [r.hits[0].id for r in results] == [f"s{i % 3}" for i in range(300)]
