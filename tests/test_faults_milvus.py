"""Faults on the Milvus side: a real Milvus 2.3 standalone (PyPI ``milvus``) stopped and started
again on the same data dir and ports under search and ingest traffic; the search service
restarted over the same Milvus. A private server per module (the session's shared one must not
go down under other tests).
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from search_fixtures import running_search, search_client, search_config

from ris.api import search_pb2, search_pb2_grpc
from ris.tools.milvus_standalone import (
    MilvusServerHandle,
    restart_milvus_server,
    start_milvus_server,
)

pytestmark = pytest.mark.milvus_server
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
MILVUS_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def private_milvus() -> Iterator[list[MilvusServerHandle]]:
    """A one-element list so a test can swap in the restarted handle."""
    pytest.importorskip("milvus", reason="PyPI milvus (milvus-server) not installed")
    with tempfile.TemporaryDirectory(prefix="ris-milvus-faults-") as tmp:
        handles = [start_milvus_server(Path(tmp))]
        try:
            yield handles
        finally:
            handles[0].stop()


@pytest.fixture(scope="module")
def photo_bytes(caltech: Path) -> list[bytes]:
    files = sorted((caltech / "train").glob("*/*.jpg"))[::11][:24]
    return [p.read_bytes() for p in files]


def _items(prefix: str, images: list[bytes], count: int) -> list[search_pb2.Item]:
    return [
        search_pb2.Item(id=f"{prefix}{i}", image=images[i % len(images)], label=prefix)
        for i in range(count)
    ]


def _present(stub: search_pb2_grpc.SearchServiceStub, name: str, ids: list[str]) -> list[str]:
    got = stub.Get(search_pb2.GetRequest(collection=name, ids=ids, limit=16384), timeout=60)
    return [item.id for item in got.items]


def test_milvus_restart_under_traffic_loses_nothing(
    private_milvus: list[MilvusServerHandle], embedder_server, photo_bytes: list[bytes]
) -> None:
    milvus = private_milvus[0]
    config = search_config(
        embedder_server.address, milvus.uri, milvus_timeout_s=MILVUS_TIMEOUT_S, ingest_batch_size=2
    )
    name = f"mf_{uuid.uuid4().hex[:6]}"
    before = _items("a", photo_bytes, 16)
    during = _items("b", photo_bytes, 40)
    with running_search(config) as server, search_client(server.address) as stub:
        stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), timeout=60)
        first = stub.Ingest(iter([search_pb2.IngestRequest(collection=name, items=before)]))
        assert (first.stored, first.failed) == (16, 0)

        stop = threading.Event()
        searches: list[tuple[float, str, float]] = []  # (seconds, code name, finished at)
        reported_failed: set[str] = set()
        stored_claimed: set[str] = set()
        ingest_codes: list[str] = []
        details: list[tuple[float, str]] = []
        partial_calls: list[tuple[int, int]] = []  # (stored, failed) of calls cut mid-stream

        def searcher() -> None:
            probe = search_pb2.Query(vector=search_pb2.Vector(values=np.ones(2048).tolist()))
            request = search_pb2.SearchRequest(collection=name, queries=[probe])
            for _ in range(3000):  # bounded; stop ends it sooner, once a search is OK again
                # (a search during Milvus' reload fails after milvus_timeout_s instead of
                # waiting out the reload: recovery is the first OK after that, not a fixed wait)
                if stop.is_set() and searches and searches[-1][1] == "OK":
                    return
                began = time.monotonic()
                try:
                    stub.Search(request, timeout=60)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                    details.append((time.monotonic(), exc.details()))
                searches.append((time.monotonic() - began, code, time.monotonic()))
                time.sleep(0.05)

        def slowly(chunk: list[search_pb2.Item]) -> Iterator[search_pb2.IngestRequest]:
            for k, item in enumerate(chunk):  # one item per message: the call spans ~1 s
                yield search_pb2.IngestRequest(collection=name if k == 0 else "", items=[item])
                time.sleep(0.12)

        def ingester() -> None:
            for start in range(0, len(during), 8):  # five calls of eight items
                chunk = during[start : start + 8]
                try:
                    summary = stub.Ingest(slowly(chunk), timeout=120)
                except grpc.RpcError as exc:  # the whole call failed: all eight are reported
                    ingest_codes.append(exc.code().name)
                    reported_failed.update(i.id for i in chunk)
                else:
                    ingest_codes.append("OK")
                    assert summary.received == len(chunk)
                    assert summary.stored + summary.failed == len(chunk)
                    failed = {f.id for f in summary.failures}
                    reported_failed.update(failed)
                    stored_claimed.update(i.id for i in chunk if i.id not in failed)
                    assert {f.error.code for f in summary.failures} <= {UNAVAILABLE.value[0]}
                    if summary.stored and summary.failed:
                        partial_calls.append((summary.stored, summary.failed))
                time.sleep(0.2)

        crashed: list[BaseException] = []

        def guarded(fn: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    fn()
                except BaseException as exc:  # an assertion in a thread must fail the test
                    crashed.append(exc)

            return run

        threads = [threading.Thread(target=guarded(f)) for f in (searcher, ingester)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.5)
            milvus.stop()  # SIGTERM under traffic
            time.sleep(3.0)
            milvus = private_milvus[0] = restart_milvus_server(milvus)
            healthy_at = time.monotonic()
        finally:
            threads[1].join(timeout=300)
            time.sleep(2.0)
            stop.set()
            threads[0].join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        assert not crashed, crashed

        # Searches: only UNAVAILABLE while Milvus was down, each one bounded; OK again after.
        codes = {code for _, code, _ in searches}
        assert codes <= {"OK", "UNAVAILABLE"}, codes
        assert "UNAVAILABLE" in codes, "the outage was not observed"
        slowest_failure = max(s for s, code, _ in searches if code != "OK")
        assert slowest_failure < MILVUS_TIMEOUT_S * 3 + 5, slowest_failure
        assert searches[-1][1] == "OK", f"no recovery without a service restart: {details[-3:]}"
        assert set(ingest_codes) <= {"OK", "UNAVAILABLE"}, ingest_codes
        failures = [s for s, code, _ in searches if code != "OK"]
        first_ok = min(t for _, code, t in searches if code == "OK" and t > healthy_at)
        print(
            f"\nmilvus restart: {len(searches)} searches, {len(failures)} UNAVAILABLE "
            f"(slowest {slowest_failure:.2f} s, median {np.median(failures):.2f} s); "
            f"first OK search {first_ok - healthy_at:.2f} s after Milvus was healthy; "
            f"ingest calls {ingest_codes}, cut mid-stream (stored, failed): {partial_calls}; "
            f"{len(reported_failed)} items reported failed"
        )

        # Data written before the stop is all there; nothing from the traffic silently lost.
        all_ids = [i.id for i in before + during]
        assert sorted(_present(stub, name, [i.id for i in before])) == sorted(i.id for i in before)
        present = set(_present(stub, name, all_ids))
        assert stored_claimed <= present, "acknowledged items lost"
        lost = set(all_ids) - present - reported_failed
        assert not lost, f"neither stored nor reported failed: {sorted(lost)}"

        # Re-sending what failed stores it, with no duplicates.
        again = [i for i in during if i.id in reported_failed]
        if again:
            resent = stub.Ingest(iter([search_pb2.IngestRequest(collection=name, items=again)]))
            assert (resent.stored, resent.failed) == (len(again), 0), resent.failures
        assert stub.Count(search_pb2.CountRequest(collection=name)).count == len(all_ids)
        assert sorted(_present(stub, name, all_ids)) == sorted(all_ids)


def test_search_service_restart_keeps_remote_collections(
    private_milvus: list[MilvusServerHandle], embedder_server, photo_bytes: list[bytes]
) -> None:
    config = search_config(embedder_server.address, private_milvus[0].uri)
    name = f"rs_{uuid.uuid4().hex[:6]}"
    items = _items("r", photo_bytes, 12)
    with running_search(config) as server, search_client(server.address) as stub:
        stub.CreateCollection(
            search_pb2.CreateCollectionRequest(name=name, index_type="HNSW"), timeout=60
        )
        summary = stub.Ingest(iter([search_pb2.IngestRequest(collection=name, items=items)]))
        assert summary.stored == 12
        info = stub.DescribeCollection(search_pb2.DescribeCollectionRequest(name=name))
        query = search_pb2.SearchRequest(collection=name, queries=[search_pb2.Query(id="r3")])
        hits = [h.id for h in stub.Search(query, timeout=60).results[0].hits]
    with running_search(config) as again, search_client(again.address) as stub:
        after = stub.DescribeCollection(search_pb2.DescribeCollectionRequest(name=name))
        assert after == info
        assert after.count == 12
        assert sorted(_present(stub, name, [i.id for i in items])) == sorted(i.id for i in items)
        assert [h.id for h in stub.Search(query, timeout=60).results[0].hits] == hits
