"""Deadlines and cancellation end the work (real search service, real embedder, Milvus Lite):
an ingest cancelled or past its deadline stops storing within 1 s; the stored prefix stays."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from embedder_fixtures import scrape
from search_fixtures import Photo, running_search, search_client, search_config

from ris.api import search_pb2, search_pb2_grpc

ITEMS = 160


def _items(photos: list[Photo]) -> Iterator[search_pb2.IngestRequest]:
    for start in range(0, ITEMS, 8):
        items = [
            search_pb2.Item(id=f"p{i}", image=photos[i % len(photos)].data, label="x")
            for i in range(start, start + 8)
        ]
        yield search_pb2.IngestRequest(collection="", items=items)


def _count(stub: search_pb2_grpc.SearchServiceStub, name: str) -> int:
    return stub.Count(search_pb2.CountRequest(collection=name), timeout=30).count


def _requests(name: str, photos: list[Photo]) -> Iterator[search_pb2.IngestRequest]:
    yield search_pb2.IngestRequest(collection=name)
    yield from _items(photos)


def _settles_within_one_second(stub: search_pb2_grpc.SearchServiceStub, name: str) -> int:
    """The count 1 s after the call ended equals the count 3 s after: nothing more stored."""
    time.sleep(1.0)
    after_1s = _count(stub, name)
    time.sleep(2.0)
    after_3s = _count(stub, name)
    assert after_1s == after_3s, (after_1s, after_3s)
    return after_3s


@pytest.fixture
def service(embedder_server, tmp_path: Path) -> Iterator[search_pb2_grpc.SearchServiceStub]:
    config = search_config(embedder_server.address, str(tmp_path / "ris.db"))
    with running_search(config) as server, search_client(server.address) as stub:
        yield stub


def _raw_collection(stub: search_pb2_grpc.SearchServiceStub) -> str:
    name = f"t_{uuid.uuid4().hex[:8]}"
    stub.CreateCollection(
        search_pb2.CreateCollectionRequest(
            name=name, augmentation=search_pb2.DatabaseAugmentation(enabled=False)
        ),
        timeout=30,
    )
    return name


def test_a_cancelled_ingest_stops_storing_within_a_second(
    service: search_pb2_grpc.SearchServiceStub, photos: list[Photo]
) -> None:
    name = _raw_collection(service)
    call = service.Ingest.future(_requests(name, photos), timeout=300)
    deadline = time.monotonic() + 120
    while _count(service, name) < 8 and time.monotonic() < deadline:  # some stored already
        time.sleep(0.1)
    assert call.cancel()
    with pytest.raises(grpc.FutureCancelledError):
        call.result()
    stored = _settles_within_one_second(service, name)
    assert 8 <= stored < ITEMS  # the prefix stored before the cancel stays; the rest never came


def test_an_ingest_past_its_deadline_stops_storing_within_a_second(
    service: search_pb2_grpc.SearchServiceStub, photos: list[Photo]
) -> None:
    name = _raw_collection(service)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        service.Ingest(_requests(name, photos), timeout=2.0)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3.0
    stored = _settles_within_one_second(service, name)
    assert stored < ITEMS


def test_a_search_passes_its_deadline_to_the_embedder(
    embedder_server, service: search_pb2_grpc.SearchServiceStub, photos: list[Photo]
) -> None:
    """16 image queries with a 0.3 s deadline: the embedder's Embed call ends with
    DEADLINE_EXCEEDED too (it got the caller's deadline, not the fixed embed_timeout_s, and
    dropped the work), as its own metrics show."""
    name = _raw_collection(service)
    key = 'ris_embedder_requests_total{code="DEADLINE_EXCEEDED",method="Embed"}'
    before = scrape(embedder_server.metrics_port).get(key, 0.0)
    request = search_pb2.SearchRequest(
        collection=name, queries=[search_pb2.Query(image=p.data) for p in photos[:16]]
    )
    with pytest.raises(grpc.RpcError) as info:
        service.Search(request, timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while scrape(embedder_server.metrics_port).get(key, 0.0) <= before:
        assert time.monotonic() < deadline, "the embedder never saw the caller's deadline"
        time.sleep(0.2)
