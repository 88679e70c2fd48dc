"""The clients' shared operations (client/operations.py) driven by a script instead of a channel:
which calls each method makes, in which order, and what it makes of the answers. No network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import pytest

from ris.api import common_pb2, search_pb2
from ris.client import operations
from ris.client.config import ClientConfig
from ris.client.errors import NotFound, QueryFailed
from ris.client.ingest import CallAttempts
from ris.client.limits import RESOURCE_EXHAUSTED
from ris.client.types import ById, IngestItem, QueryLike

R = TypeVar("R")
Step = operations.Step


def drive(op: operations.Op[R], answer: Callable[[Step], Any]) -> tuple[R, list[Step]]:
    """operations.drive with ``answer(step)`` in place of a channel; also the steps taken."""
    steps: list[Step] = []

    def do(step: Step) -> Any:
        steps.append(step)
        return answer(step)

    return operations.drive(op, do), steps


def session() -> operations.Session:
    return operations.Session(ClientConfig())


def service_info(max_queries: int) -> search_pb2.ServiceInfo:
    return search_pb2.ServiceInfo(
        limits=search_pb2.ServiceLimits(max_queries=max_queries, max_item_bytes=1000),
        model=common_pb2.ModelInfo(name="m"),
    )


def named(method: str, steps: list[Step]) -> list[Any]:
    return [
        s
        for s in steps
        if isinstance(s, operations.Unary | operations.Probe) and s.method == method
    ]


def test_search_batch_asks_the_limits_once_and_cuts_its_calls_to_them() -> None:
    state = session()
    too_big = b"x" * 2000  # over the service's 1000 bytes per image
    queries: list[QueryLike] = [ById("a"), too_big, ById("b"), ById("c")]

    def answer(step: Step) -> Any:
        if isinstance(step, operations.Offload):
            return step.work()
        if isinstance(step, operations.Probe):
            return service_info(max_queries=2), None
        assert isinstance(step, operations.Unary) and step.method == "Search"
        ids = [q.id for q in step.request.queries]
        return search_pb2.SearchResponse(
            results=[search_pb2.QueryResult(hits=[search_pb2.Hit(id=i)]) for i in ids]
        )

    options: dict[str, Any] = dict(
        top_k=3, labels=["cat"], metadata=None, ids=None, exclude_self=True
    )
    results, steps = drive(operations.search_batch(state, "c", queries, **options), answer)
    searches = named("Search", steps)
    assert [[q.id for q in s.request.queries] for s in searches] == [["a", "b"], ["c"]]
    assert all(s.request.top_k == 3 and list(s.request.filter.labels) == ["cat"] for s in searches)
    assert [r.hits[0].id for r in (results[0], results[2], results[3])] == ["a", "b", "c"]
    assert results[1].error is not None and results[1].error.code == RESOURCE_EXHAUSTED
    assert state.limits is not None and state.limits.max_queries == 2

    _, again = drive(operations.search_batch(state, "c", [ById("a")], **options), answer)
    assert named("GetServiceInfo", again) == []  # kept from the first time


def test_search_raises_query_failed_for_a_failed_query() -> None:
    def answer(step: Step) -> Any:
        if isinstance(step, operations.Offload):
            return step.work()
        if isinstance(step, operations.Probe):
            return None, grpc.RpcError()  # no answer: the client's own limits, asked again later
        error = common_pb2.ItemError(code=3, message="not an image")
        return search_pb2.SearchResponse(results=[search_pb2.QueryResult(error=error)])

    options: dict[str, Any] = dict(
        top_k=1, labels=None, metadata=None, ids=None, exclude_self=False
    )
    state = session()
    with pytest.raises(QueryFailed, match="not an image"):
        drive(operations.search(state, "c", b"junk", **options), answer)
    assert state.limits is None


def test_ingest_that_cannot_ask_for_the_geometry_does_not_shrink(tmp_path: Any) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"not really a jpeg")
    sent: list[bytes] = []

    def answer(step: Step) -> Any:
        if isinstance(step, operations.Unary):  # GetServiceInfo for the collection
            raise NotFound("describe c: NOT_FOUND: no such collection")
        if isinstance(step, operations.Probe):
            return service_info(max_queries=8), None
        assert isinstance(step, CallAttempts)
        with step.attempt() as stream:
            sent.extend(i.image for r in stream.requests() for i in r.items)
        return search_pb2.IngestResponse(received=1, stored=1)

    items = [IngestItem("a", path=photo)]
    summary, steps = drive(operations.ingest(session(), "c", items, shrink=True), answer)
    assert sent == [b"not really a jpeg"]  # sent as it is
    assert summary.stored == 1 and summary.ok
    assert [type(s) for s in steps] == [operations.Unary, operations.Probe, CallAttempts]


def test_item_pages_follow_the_token_until_it_is_empty() -> None:
    tokens: list[str] = []

    def answer(step: Step) -> Any:
        assert isinstance(step, operations.Unary) and step.method == "ListItems"
        tokens.append(step.request.page_token)
        following = {"": "p2", "p2": "p3", "p3": ""}[step.request.page_token]
        item = search_pb2.StoredItem(id=step.request.page_token or "p1")
        return search_pb2.ListItemsResponse(items=[item], next_page_token=following)

    pages = operations.ItemPages(
        "c", page_size=1, labels=None, metadata=None, include_vectors=False
    )
    ids: list[str] = []
    while (page := pages.next_page()) is not None:
        items, _ = drive(page, answer)
        ids.extend(i.id for i in items)
    assert tokens == ["", "p2", "p3"] and ids == ["p1", "p2", "p3"]
