"""Admission (common/admission.py) on the real search service over the real embedder:
idle ingest streams starve neither health checks nor searches, calls queue instead of being
refused, beyond the queue they are refused with a retry hint, RisClient honours it, and an
idle stream is ended with its stored count."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from search_fixtures import Photo, item_of, running_search, search_client, search_config

from ris.api import search_pb2
from ris.client import RisClient
from ris.client.aio import AsyncRisClient
from ris.common.admission import PUSHBACK_KEY

DIM = 2048


def _vector_search(name: str) -> search_pb2.SearchRequest:
    vector = np.random.default_rng(0).random(DIM, dtype=np.float32).tolist()
    return search_pb2.SearchRequest(
        collection=name, queries=[search_pb2.Query(vector=search_pb2.Vector(values=vector))]
    )


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=3).status


def _trailing(error: grpc.RpcError) -> dict[str, str]:
    return dict(error.trailing_metadata() or ())


@pytest.fixture
def lite(tmp_path: Path) -> str:
    return str(tmp_path / "ris.db")


def test_idle_ingest_streams_starve_neither_health_nor_search_and_time_out(
    embedder_server, lite: str, photos: list[Photo]
) -> None:
    config = search_config(
        embedder_server.address,
        lite,
        grpc_workers=16,  # the defaults: 16 unary slots, 16 stream slots
        max_concurrent_streams=16,
        max_queue_wait_s=1.0,
        stream_idle_timeout_s=4.0,
    )
    release = threading.Event()
    with running_search(config) as server, search_client(server.address) as stub:
        name = f"t_{uuid.uuid4().hex[:8]}"
        stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), timeout=30)

        def one_then_silence() -> Iterator[search_pb2.IngestRequest]:
            yield search_pb2.IngestRequest(collection=name, items=[item_of(photos[0])])
            release.wait(timeout=60)

        streams = [stub.Ingest.future(one_then_silence(), timeout=60) for _ in range(16)]
        try:
            time.sleep(1.0)  # all 16 admitted and waiting for their second message
            assert not any(s.done() for s in streams)
            started = time.monotonic()
            assert _health(server.address) == health_pb2.HealthCheckResponse.SERVING
            response = stub.Search(_vector_search(name), timeout=5)
            assert not response.results[0].HasField("error")
            assert time.monotonic() - started < 3.0

            # a 17th stream finds no stream slot: queued for max_queue_wait_s, then refused
            with pytest.raises(grpc.RpcError) as refused:
                stub.Ingest(one_then_silence(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert int(_trailing(refused.value)[PUSHBACK_KEY]) >= 50
            assert "no streaming slot free" in refused.value.details()

            # the idle limit ends every silent stream (its one item was still waiting for a
            # batch to fill: nothing stored, and the trailing metadata says so)
            for stream in streams:
                error = stream.exception(timeout=15)
                assert error is not None and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert "stream_idle_timeout_s" in error.details()
                assert _trailing(error)["ris-stored-count"] == "0"
            assert stub.Count(search_pb2.CountRequest(collection=name), timeout=10).count == 0
        finally:
            release.set()


def test_calls_queue_up_to_the_bound_then_are_refused_with_a_hint_the_client_honours(
    embedder_server, lite: str, photos: list[Photo]
) -> None:
    # 2 slots and 6 queue places; each image search holds its slot for an embedding.
    config = search_config(embedder_server.address, lite, grpc_workers=2, max_queued_calls=6)
    with running_search(config) as server, search_client(server.address) as stub:
        name = f"t_{uuid.uuid4().hex[:8]}"
        stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), timeout=30)
        image = search_pb2.SearchRequest(
            collection=name, queries=[search_pb2.Query(image=photos[0].data)] * 4
        )

        def raw(_: int) -> tuple[grpc.StatusCode, dict[str, str]]:
            try:
                stub.Search(image, timeout=60)
                return grpc.StatusCode.OK, {}
            except grpc.RpcError as exc:
                return exc.code(), _trailing(exc)

        with ThreadPoolExecutor(24) as pool:
            outcomes = list(pool.map(raw, range(24)))
        codes = [code for code, _ in outcomes]
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        assert codes.count(grpc.StatusCode.OK) >= 8  # every slot and queue place was served
        refused = [meta for code, meta in outcomes if code != grpc.StatusCode.OK]
        assert refused and all(int(m[PUSHBACK_KEY]) >= 50 for m in refused)

        # RisClient retries RESOURCE_EXHAUSTED with backoff + the hint: every caller served
        with (
            RisClient(address=server.address, retries=30, timeout=120) as ris,
            ThreadPoolExecutor(24) as pool,
        ):
            results = list(pool.map(lambda _: ris.search(name, photos[0].data), range(24)))
        assert len(results) == 24

        async def together() -> int:  # AsyncRisClient retries the same way
            async with AsyncRisClient(address=server.address, retries=30, timeout=120) as aio:
                found = await asyncio.gather(*(aio.search(name, photos[0].data) for _ in range(24)))
            return len(found)

        assert asyncio.run(together()) == 24


def test_100_concurrent_searches_with_the_default_queue_are_all_served(
    embedder_server, lite: str
) -> None:
    config = search_config(embedder_server.address, lite, grpc_workers=16)  # defaults otherwise
    with running_search(config) as server, search_client(server.address) as stub:
        name = f"t_{uuid.uuid4().hex[:8]}"
        stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), timeout=30)
        request = _vector_search(name)
        gate = threading.Barrier(100)

        def one(_: int) -> grpc.StatusCode:
            gate.wait(timeout=30)
            try:
                stub.Search(request, timeout=60)  # raw stub: no client retry
                return grpc.StatusCode.OK
            except grpc.RpcError as exc:
                return exc.code()

        with ThreadPoolExecutor(100) as pool:
            codes = list(pool.map(one, range(100)))
        assert codes == [grpc.StatusCode.OK] * 100, {c: codes.count(c) for c in set(codes)}
