"""Faults on the embedder side: a real embedder process SIGKILLed in the middle of an ingest
stream and under searches, then restarted on the same port; two embedders behind one search
service, one of them killed under traffic.

The search service runs in-process over Milvus Lite; the embedders are real subprocesses on
127.0.0.1 (ris.tools.harness), so the kill is a real kill.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from embedder_fixtures import SERVED_DIM, metric_sum, scrape
from search_fixtures import running_search, search_client, search_config

from ris.api import search_pb2, search_pb2_grpc
from ris.search.embedder_client import EmbedderClient
from ris.tools.harness import ServiceProcess, start_embedder

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
N_ITEMS = 40


@pytest.fixture(scope="module")
def photo_bytes(caltech: Path) -> list[bytes]:
    files = sorted((caltech / "train").glob("*/*.jpg"))[::7][:N_ITEMS]
    assert len(files) == N_ITEMS
    return [p.read_bytes() for p in files]


@pytest.fixture
def embedder_process(model_path: Path) -> Iterator[ServiceProcess]:
    process = start_embedder(model_path, extra_args=["--max-batch-size", "4"])
    try:
        yield process
    finally:
        process.kill()


def _stored_ids(stub: search_pb2_grpc.SearchServiceStub, name: str, ids: list[str]) -> list[str]:
    got = stub.Get(search_pb2.GetRequest(collection=name, ids=ids, limit=16384), timeout=60)
    return [item.id for item in got.items]


def _wait_count(stub: search_pb2_grpc.SearchServiceStub, name: str, at_least: int) -> int:
    """Poll Count (bounded: 60 s) until it reaches ``at_least``."""
    count = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        count = stub.Count(search_pb2.CountRequest(collection=name), timeout=30).count
        if count >= at_least:
            return count
        time.sleep(0.1)
    raise AssertionError(f"count stayed at {count} < {at_least}")


def _image_search(
    stub: search_pb2_grpc.SearchServiceStub, name: str, image: bytes, timeout: float = 30
) -> search_pb2.SearchResponse:
    query = search_pb2.Query(image=image)
    return stub.Search(search_pb2.SearchRequest(collection=name, queries=[query]), timeout=timeout)


def _wait_recovered(stub: search_pb2_grpc.SearchServiceStub, name: str, image: bytes) -> float:
    """Seconds until an image search succeeds again (bounded: 60 s, one try per 0.2 s)."""
    start = time.monotonic()
    for _ in range(300):
        try:
            _image_search(stub, name, image, timeout=10)
            return time.monotonic() - start
        except grpc.RpcError as exc:
            assert exc.code() == UNAVAILABLE, exc
        time.sleep(0.2)
    raise AssertionError("searches did not recover within 60 s of the embedder's restart")


def _wait_embedded(process: ServiceProcess, at_least: float) -> None:
    """Until the embedder has embedded ``at_least`` images since it started (bounded: 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if metric_sum(scrape(process.metrics_port), "ris_embedder_images_total") >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"the embedder did not reach {at_least} images")


@pytest.mark.parametrize("augmented", [False, True], ids=["raw", "augmented"])
def test_embedder_killed_mid_ingest_loses_nothing_and_recovers(
    embedder_process: ServiceProcess, photo_bytes: list[bytes], tmp_path: Path, augmented: bool
) -> None:
    """An augmented collection stores (blends) at the end of the call, so the kill waits for
    embedded images there, for stored rows otherwise."""
    config = search_config(embedder_process.address, str(tmp_path / "kill.db"), ingest_batch_size=4)
    name = f"kill_{uuid.uuid4().hex[:6]}"
    before = metric_sum(scrape(embedder_process.metrics_port), "ris_embedder_images_total")
    ids = [f"p{i}" for i in range(N_ITEMS)]
    items = [
        search_pb2.Item(id=i, image=d, label="x", metadata={"n": i})
        for i, d in zip(ids, photo_bytes, strict=True)
    ]
    with running_search(config) as server, search_client(server.address) as stub:
        augmentation = search_pb2.DatabaseAugmentation(enabled=augmented)
        stub.CreateCollection(
            search_pb2.CreateCollectionRequest(name=name, augmentation=augmentation), timeout=60
        )

        def stream() -> Iterator[search_pb2.IngestRequest]:
            for start in range(0, N_ITEMS, 2):
                if start == 12:  # some items stored, some in flight: kill the embedder now
                    if augmented:
                        _wait_embedded(embedder_process, before + 4)
                    else:
                        _wait_count(stub, name, 4)
                    embedder_process.kill()
                yield search_pb2.IngestRequest(
                    collection=name if start == 0 else "", items=items[start : start + 2]
                )
                time.sleep(0.02)

        summary = stub.Ingest(stream(), timeout=120)

        # Accounting: every item is stored or reported failed; none silently lost.
        assert summary.received == N_ITEMS
        assert summary.stored + summary.failed == N_ITEMS
        assert summary.stored >= 4 and summary.failed > 0
        failed = {f.id for f in summary.failures}
        assert all(f.error.code == UNAVAILABLE.value[0] for f in summary.failures)
        present = set(_stored_ids(stub, name, ids))
        assert not set(ids) - present - failed, "items neither stored nor reported failed"
        assert len(present) == summary.stored
        assert stub.Count(search_pb2.CountRequest(collection=name)).count == summary.stored

        # During the outage: image searches fail fast with UNAVAILABLE; vector searches work.
        outage_s = 0.0
        for _ in range(3):
            began = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                _image_search(stub, name, photo_bytes[0])
            assert info.value.code() == UNAVAILABLE
            outage_s = max(outage_s, time.monotonic() - began)
        assert outage_s < 5.0, f"an outage must fail fast, not hang ({outage_s:.1f} s)"
        vector = search_pb2.Query(vector=search_pb2.Vector(values=[1.0] * SERVED_DIM))
        ok = stub.Search(search_pb2.SearchRequest(collection=name, queries=[vector]), timeout=30)
        assert len(ok.results[0].hits) == min(10, summary.stored)

        # The embedder returns on the same port; the search service was never restarted.
        embedder_process.restart()
        recovery_s = _wait_recovered(stub, name, photo_bytes[0])
        assert recovery_s < 15.0, f"took {recovery_s:.1f} s to use the restarted embedder"
        print(
            f"\nembedder kill: stored {summary.stored}, failed {summary.failed} of {N_ITEMS}; "
            f"outage search failed in {outage_s:.3f} s max; "
            f"recovered {recovery_s:.2f} s after restart"
        )

        # Re-sending the failed ids stores them, with no duplicates.
        again = [it for it in items if it.id in failed]
        resent = stub.Ingest(iter([search_pb2.IngestRequest(collection=name, items=again)]))
        assert (resent.stored, resent.failed) == (len(again), 0), resent.failures
        assert stub.Count(search_pb2.CountRequest(collection=name)).count == N_ITEMS
        stored = _stored_ids(stub, name, ids)
        assert sorted(stored) == sorted(ids), "every id exactly once"


def _embed_calls(process: ServiceProcess) -> float:
    values = scrape(process.metrics_port)
    return sum(
        v
        for k, v in values.items()
        if k.startswith("ris_embedder_requests_total{") and 'method="Embed"' in k
    ) or metric_sum(values, "ris_embedder_requests_total")


def test_two_embedders_share_searches_and_losing_one_loses_no_request(
    model_path: Path, photo_bytes: list[bytes], tmp_path: Path
) -> None:
    first = start_embedder(model_path)
    second = start_embedder(model_path)
    try:
        address = f"{first.address},{second.address}"
        config = search_config(address, str(tmp_path / "rr.db"))
        with running_search(config) as server, search_client(server.address) as stub:
            name = "rr"
            stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), timeout=60)
            for image in photo_bytes[:8]:
                _image_search(stub, name, image)
            assert _embed_calls(first) > 0 and _embed_calls(second) > 0, "both get traffic"

            done: list[int] = []
            errors: list[grpc.RpcError] = []
            lock = threading.Lock()

            def searcher(k: int) -> None:
                for n in range(10):  # bounded
                    try:
                        _image_search(stub, name, photo_bytes[(k * 10 + n) % N_ITEMS], 60)
                    except grpc.RpcError as exc:
                        with lock:
                            errors.append(exc)
                    with lock:
                        done.append(1)

            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(searcher, k) for k in range(4)]
                deadline = time.monotonic() + 60
                while len(done) < 8 and time.monotonic() < deadline:
                    time.sleep(0.05)
                second.kill()  # with requests in flight
                for f in futures:
                    f.result(timeout=180)
            assert len(done) == 40
            assert not errors, [e.code() for e in errors]
            before = _embed_calls(first)
            for image in photo_bytes[:4]:
                _image_search(stub, name, image)
            assert _embed_calls(first) >= before + 4, "the survivor takes all the traffic"
    finally:
        first.kill()
        second.kill()


def test_one_channel_over_several_addresses_balances_and_survives_a_loss(
    model_path: Path, photo_bytes: list[bytes]
) -> None:
    """What a DNS name with several addresses gets: one channel, gRPC's round_robin over its
    addresses, UNAVAILABLE retried on another one (here an ``ipv4:`` list stands in for DNS)."""
    first = start_embedder(model_path)
    second = start_embedder(model_path)
    client = EmbedderClient([f"ipv4:127.0.0.1:{first.port},127.0.0.1:{second.port}"], 60.0)
    try:
        for image in photo_bytes[:8]:
            assert client.embed([image]).results[0].vector is not None
        assert _embed_calls(first) > 0 and _embed_calls(second) > 0, "both get traffic"
        second.kill()
        for image in photo_bytes[8:20]:  # none may fail
            assert client.embed([image]).results[0].vector is not None
    finally:
        client.close()
        first.kill()
        second.kill()
