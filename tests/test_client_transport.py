"""The client's own transport logic against a real gRPC server on loopback that records what it
receives: retries and backoff, status-code mapping, token metadata, ingest chunking and the
bookkeeping of failures. (The real services are exercised in test_client_live.py.)"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from PIL import Image

from ris.api import search_pb2, search_pb2_grpc
from ris.client import AsyncRisClient, IngestItem, NotFound, RetryPolicy, RisClient, Unavailable
from ris.client.config import ClientConfig
from ris.client.retry import backoff_delays
from ris.tools.harness import free_port

FAST = RetryPolicy(max_attempts=6, initial_backoff=0.05, max_backoff=0.3, jitter=0.1)


@dataclass
class Recorder(search_pb2_grpc.SearchServiceServicer):
    """Answers from memory and remembers every call; `unavailable` fails that many calls first."""

    unavailable: int = 0
    calls: list[str] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    ingest_messages: list[list[search_pb2.IngestRequest]] = field(default_factory=list)

    def _enter(self, name: str, context: grpc.ServicerContext) -> None:
        self.calls.append(name)
        self.metadata.append({k: v for k, v in context.invocation_metadata()})
        if self.unavailable > 0:
            self.unavailable -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")

    def ListCollections(self, request, context):
        self._enter("ListCollections", context)
        return search_pb2.ListCollectionsResponse(
            collections=[
                search_pb2.CollectionInfo(name="c", count=3, dim=2048, metric=search_pb2.COSINE)
            ]
        )

    def DescribeCollection(self, request, context):
        self._enter("DescribeCollection", context)
        context.abort(grpc.StatusCode.NOT_FOUND, f"no collection {request.name}")

    def Ingest(self, request_iterator, context):
        messages = list(request_iterator)
        self._enter("Ingest", context)
        self.ingest_messages.append(messages)
        items = [item for m in messages for item in m.items]
        failures = [
            search_pb2.ItemFailure(id=it.id, position=pos, error={"code": 3, "message": "bad"})
            for pos, it in enumerate(items)
            if it.label == "bad"
        ]
        return search_pb2.IngestResponse(
            received=len(items),
            stored=len(items) - len(failures),
            failed=len(failures),
            failures=failures,
        )


def serve(recorder: Recorder, port: int = 0) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    search_pb2_grpc.add_SearchServiceServicer_to_server(recorder, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


@pytest.fixture()
def recorder() -> Iterator[tuple[Recorder, str]]:
    rec = Recorder()
    server, port = serve(rec)
    yield rec, f"127.0.0.1:{port}"
    server.stop(None)


def test_backoff_grows_is_capped_and_bounded() -> None:
    policy = RetryPolicy(max_attempts=6, initial_backoff=0.1, max_backoff=0.5, jitter=0.0)
    assert list(backoff_delays(policy)) == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    jittered = list(backoff_delays(RetryPolicy(max_attempts=50, initial_backoff=1, jitter=0.2)))
    assert len(jittered) == 49
    assert all(0.8 <= d <= 6.0 for d in jittered) and len(set(jittered)) > 1


def test_client_waits_for_a_server_that_starts_late(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    rec = Recorder()
    started: list[grpc.Server] = []

    def start_later() -> None:
        time.sleep(0.4)
        started.append(serve(rec, port)[0])

    starter = threading.Thread(target=start_later)
    config = ClientConfig(address=f"127.0.0.1:{port}", timeout=5, retry=FAST)
    began = time.monotonic()
    starter.start()
    try:
        with caplog.at_level(logging.WARNING), RisClient(config) as ris:
            infos = ris.list_collections()
    finally:
        starter.join(5)
        for server in started:
            server.stop(None)
    assert [i.name for i in infos] == ["c"] and infos[0].metric == "COSINE"
    assert time.monotonic() - began >= 0.35
    assert any("retrying" in r.message for r in caplog.records)


def test_gives_up_after_the_configured_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.01)
    config = ClientConfig(address=f"127.0.0.1:{free_port()}", timeout=2, retry=policy)
    with RisClient(config) as ris, pytest.raises(Unavailable):
        ris.list_collections()


def test_retries_unavailable_but_not_other_codes(recorder: tuple[Recorder, str]) -> None:
    rec, address = recorder
    rec.unavailable = 2
    with RisClient(ClientConfig(address=address, retry=FAST)) as ris:
        assert len(ris.list_collections()) == 1
        assert rec.calls == ["ListCollections"] * 3
        with pytest.raises(NotFound, match="no collection ghost"):
            ris.describe_collection("ghost")
    assert rec.calls.count("DescribeCollection") == 1


def test_token_is_sent_as_bearer_metadata(recorder: tuple[Recorder, str]) -> None:
    rec, address = recorder
    with RisClient(address=address, token="t0k3n") as ris:
        ris.list_collections()
    assert rec.metadata[-1]["authorization"] == "Bearer t0k3n"


def _items(tmp_path: Path, count: int) -> list[IngestItem]:
    items = []
    for i in range(count):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (16, 16), (i * 10 % 255, 0, 0)).save(path)
        label = "bad" if i in (3, 7) else "ok"
        items.append(IngestItem(id=f"img{i}", path=path, label=label))
    items.insert(5, IngestItem(id="gone", path=tmp_path / "missing.png"))
    return items


def test_ingest_chunks_calls_and_positions(tmp_path: Path, recorder: tuple[Recorder, str]) -> None:
    rec, address = recorder
    items = _items(tmp_path, 10)  # 11 items: position 5 is a missing file
    with RisClient(address=address, retry=FAST) as ris:
        summary = ris.ingest("c", items, chunk_size=3, items_per_call=4)
    calls = rec.ingest_messages
    assert [[len(m.items) for m in call] for call in calls] == [[3, 1], [3], [3]]
    assert all(
        (call[0].collection == "c" and not call[1:2]) or not call[1].collection for call in calls
    )
    assert calls[0][0].items[0].display_uri == str(items[0].path)
    assert (summary.received, summary.stored, summary.failed) == (11, 8, 3)
    failed = sorted((f.position, f.id) for f in summary.failures)
    assert failed == [(3, "img3"), (5, "gone"), (8, "img7")]


def test_ingest_call_is_resent_whole_on_unavailable(
    tmp_path: Path, recorder: tuple[Recorder, str]
) -> None:
    rec, address = recorder
    rec.unavailable = 1
    items = [i for i in _items(tmp_path, 4) if i.id != "gone"]
    with RisClient(address=address, retry=FAST) as ris:
        summary = ris.ingest("c", items, chunk_size=2, show_progress=True)
    assert rec.calls == ["Ingest", "Ingest"]
    assert summary.stored == 3 and summary.failed == 1


def test_chunks_are_cut_by_bytes_too(tmp_path: Path, recorder: tuple[Recorder, str]) -> None:
    rec, address = recorder
    items = [IngestItem(id=f"b{i}", data=bytes(1000), label="ok") for i in range(5)]
    with RisClient(address=address) as ris:
        ris.ingest("c", items, chunk_size=32, max_chunk_bytes=2500)
    assert [len(m.items) for m in rec.ingest_messages[0]] == [2, 2, 1]


def test_async_client_same_behaviour(tmp_path: Path, recorder: tuple[Recorder, str]) -> None:
    rec, address = recorder
    rec.unavailable = 1

    async def main() -> tuple[int, int]:
        async with AsyncRisClient(address=address, token="x", retry=FAST) as ris:
            infos = await ris.list_collections()
            summary = await ris.ingest("c", _items(tmp_path, 5), chunk_size=2, items_per_call=3)
            with pytest.raises(NotFound):
                await ris.describe_collection("ghost")
            return len(infos), summary.stored

    assert asyncio.run(main()) == (1, 4)
    assert rec.calls[:2] == ["ListCollections", "ListCollections"]
    assert rec.metadata[-1]["authorization"] == "Bearer x"
