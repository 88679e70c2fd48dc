"""The search service as a process and under stress: ``python -m ris.search``, a dead
embedder, concurrent calls."""

from __future__ import annotations

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
from search_fixtures import (
    Photo,
    ingest,
    item_of,
    running_search,
    search_client,
    search_config,
    search_process,
)

from ris.api import search_pb2
from ris.search.indexing import plan_index
from ris.search.server import start_server
from ris.search.store_schema import CollectionMeta
from ris.tools.harness import free_port


def test_module_entry_point_serves_and_stops_on_sigterm(embedder_server, tmp_path: Path) -> None:
    env = {
        "RIS_MILVUS_URI": str(tmp_path / "proc.db"),
        "RIS_EMBEDDER_ADDRESS": embedder_server.address,
    }
    with search_process(env, tmp_path) as address:  # exits 0 on SIGTERM after the block
        assert address.startswith("127.0.0.1:")
        with search_client(address) as stub:
            channel = grpc.insecure_channel(address)
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="ris.v1.SearchService"), timeout=10
            )
            channel.close()
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            info = stub.CreateCollection(search_pb2.CreateCollectionRequest(name="proc"))
            assert info.dim == 2048


def _code(call, request) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value.code()


def test_dead_embedder_is_unavailable_but_vectors_still_work(
    tmp_path: Path, photos: list[Photo]
) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = search_config(dead, str(tmp_path / "dead.db"), embed_timeout_s=5.0)
    with running_search(config) as server, search_client(server.address) as stub:
        assert _code(stub.CreateCollection, search_pb2.CreateCollectionRequest(name="c")) == (
            grpc.StatusCode.UNAVAILABLE
        )
        meta = CollectionMeta("c", 4, "COSINE", plan_index("FLAT", {}, "AUTOINDEX"))
        server.store.create_collection(meta)
        one = [search_pb2.IngestRequest(collection="c", items=[item_of(photos[0])])]
        assert _code(stub.Ingest, iter(one)) == grpc.StatusCode.UNAVAILABLE
        by_image = search_pb2.Query(image=photos[0].data)
        request = search_pb2.SearchRequest(collection="c", queries=[by_image])
        assert _code(stub.Search, request) == grpc.StatusCode.UNAVAILABLE
        vector = search_pb2.Query(vector=search_pb2.Vector(values=[1, 0, 0, 0]))
        ok = stub.Search(search_pb2.SearchRequest(collection="c", queries=[vector]))
        assert not ok.results[0].HasField("error") and not ok.results[0].hits


def test_concurrent_ingests_and_searches(search_stub, collection: str, photos: list[Photo]) -> None:
    """Three streams and a stream of searches at once: every item stored once, no call fails."""
    streams = []
    for k in range(3):
        items = [item_of(p) for p in photos[k * 5 : k * 5 + 5]]
        for item in items:
            item.id = f"s{k}-{item.id}"
        streams.append(items)
    stop = threading.Event()
    searched = []

    def searcher() -> None:
        probe = search_pb2.Query(vector=search_pb2.Vector(values=np.ones(2048).tolist()))
        for _ in range(200):  # bounded
            if stop.is_set():
                return
            r = search_stub.Search(search_pb2.SearchRequest(collection=collection, queries=[probe]))
            searched.append(len(r.results[0].hits))

    with ThreadPoolExecutor(4) as pool:
        watcher = pool.submit(searcher)
        results = list(pool.map(lambda items: ingest(search_stub, collection, items, 2), streams))
        stop.set()
        watcher.result(timeout=60)
    assert [(r.stored, r.failed) for r in results] == [(5, 0)] * 3
    assert search_stub.Count(search_pb2.CountRequest(collection=collection)).count == 15
    assert searched and max(searched) <= 10


def test_stop_lets_running_ingest_finish(
    embedder_server, tmp_path: Path, photos: list[Photo]
) -> None:
    """A graceful stop waits for an in-flight Ingest; its items are there after a restart."""
    config = search_config(embedder_server.address, str(tmp_path / "drain.db"))
    name = f"drain_{uuid.uuid4().hex[:6]}"
    items = [item_of(p) for p in photos[:8]]
    server = start_server(config)
    try:
        with search_client(server.address) as stub:
            stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
            started = threading.Event()

            def slow_stream() -> Iterator[search_pb2.IngestRequest]:
                for i, item in enumerate(items):
                    if i == 2:
                        started.set()  # gRPC pulls message 2 once the call is under way
                    yield search_pb2.IngestRequest(collection=name, items=[item])
                    time.sleep(0.1)

            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(stub.Ingest, slow_stream(), timeout=120)
                assert started.wait(timeout=60)
                server.stop(grace=30)  # returns once the in-flight Ingest has finished
                summary = pending.result(timeout=60)
        assert summary.stored == len(items)
    finally:
        server.stop(grace=1)
    with running_search(config) as again, search_client(again.address) as stub:
        assert stub.Count(search_pb2.CountRequest(collection=name)).count == len(items)
