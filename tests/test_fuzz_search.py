"""Request validation of the live search service under hostile input.

Random top_k, vectors with NaN/inf or the wrong length, ids/labels/metadata with quotes,
backslashes, unicode and control characters, unknown collections, over-size messages: every case
answers OK or a specific code naming the problem (never UNKNOWN/INTERNAL), filters match
literally (no Milvus expression injection), and the service stays healthy.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_fixtures import Photo, ingest

from ris.api import search_pb2, search_pb2_grpc
from ris.search.store_schema import MAX_VECTOR_VALUE

DIM = 2048
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
NASTY = [
    'a" or id != "',
    '") or (id != "',
    "a\\",
    '\\"',
    "it's",
    "' or 1=1 --",
    'id in ["x"]',
    "[1, 2]",
    "${x} %s {0}",
    "naïve-ü-日本語",
    "emoji-😀",
    "rtl-\u202e-mark",
    "tab\there",
    "new\nline",
    "cr\rret",
    "bell\x07",
    "nul\x00byte",
    " ",
]
FUZZ = settings(
    max_examples=30,
    deadline=None,  # every call below carries its own gRPC deadline
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
any_text = st.text(max_size=80)


def outcome(call: Callable[[], object]) -> tuple[grpc.StatusCode, object]:
    """(OK, response) or (code, details); an UNKNOWN/INTERNAL failure fails the test."""
    try:
        return grpc.StatusCode.OK, call()
    except grpc.RpcError as exc:
        assert exc.code() not in BAD_CODES, (exc.code(), exc.details())
        assert exc.details(), "an error must name the problem"
        return exc.code(), exc.details()


def assert_healthy(search_server, stub, collection: str) -> None:
    channel = grpc.insecure_channel(search_server.address)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()
    assert stub.Count(search_pb2.CountRequest(collection=collection), timeout=30).count >= 0


@pytest.fixture(scope="module")
def nasty(search_stub, photos: list[Photo]) -> Iterator[tuple[str, dict[str, int]]]:
    """A collection holding one item per nasty id (label = the same string), plus plain ones.

    Returns the name and {id: ItemError code} for ids the service refused (0 = stored).
    """
    name = f"nasty_{uuid.uuid4().hex[:8]}"
    search_stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
    items = [
        search_pb2.Item(
            id=text, image=photos[i % len(photos)].data, label=text, metadata={"k": text}
        )
        for i, text in enumerate(NASTY)
    ]
    items += [search_pb2.Item(id=f"plain-{i}", image=photos[i].data, label="plain") for i in (0, 1)]
    summary = ingest(search_stub, name, items)
    refused = {f.id: f.error.code for f in summary.failures}
    # Refusals are allowed only as a clear INVALID_ARGUMENT; the neighbours are stored anyway.
    assert all(code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for code in refused.values())
    assert summary.stored == len(items) - len(refused) >= len(NASTY) - 3
    assert "plain-0" not in refused and "plain-1" not in refused
    yield name, refused
    search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name))


def count(stub, collection: str, **filter_fields: Any) -> int:
    request = search_pb2.CountRequest(
        collection=collection, filter=search_pb2.Filter(**filter_fields)
    )
    return int(stub.Count(request, timeout=30).count)


def test_nasty_ids_and_labels_match_literally(search_stub, nasty):
    name, refused = nasty
    stored = [t for t in NASTY if t not in refused]
    total = count(search_stub, name)
    assert total == len(stored) + 2
    for text in stored:
        got = search_stub.Get(search_pb2.GetRequest(collection=name, ids=[text]), timeout=30)
        assert [i.id for i in got.items] == [text]
        assert got.items[0].label == text and got.items[0].metadata["k"] == text
        assert count(search_stub, name, ids=[text]) == 1, text
        assert count(search_stub, name, labels=[text]) == 1, text
        assert count(search_stub, name, metadata={"k": text}) == 1, text
        hits = search_stub.Search(
            search_pb2.SearchRequest(
                collection=name,
                queries=[search_pb2.Query(id="plain-0")],
                top_k=5,
                filter=search_pb2.Filter(labels=[text]),
            ),
            timeout=60,
        ).results[0]
        assert not hits.error.code and [h.id for h in hits.hits] == [text]


def test_injection_shaped_delete_removes_only_its_own_item(search_stub, photos):
    name = f"inject_{uuid.uuid4().hex[:8]}"
    search_stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
    try:
        ids = ["victim-1", "victim-2", 'a" or id != "', '") or (id != "']
        items = [search_pb2.Item(id=i, image=photos[n].data) for n, i in enumerate(ids)]
        assert ingest(search_stub, name, items).stored == 4
        for attack in ('x" or id != "', '") or (id != "', 'a" or id != "', "*", ""):
            request = search_pb2.DeleteRequest(collection=name, ids=[attack] if attack else [])
            if not attack:
                request.filter.labels.append('" or label != "')
            before = count(search_stub, name)
            code, response = outcome(partial(search_stub.Delete, request, timeout=30))
            assert code == grpc.StatusCode.OK, response
            expected = 1 if attack in ids else 0
            assert response.deleted == expected, attack  # type: ignore[attr-defined]
            assert count(search_stub, name) == before - expected
        assert sorted(
            i.id
            for i in search_stub.Get(
                search_pb2.GetRequest(collection=name, ids=["victim-1", "victim-2"]), timeout=30
            ).items
        ) == ["victim-1", "victim-2"]
    finally:
        search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name))


@FUZZ
@given(
    top_k=st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, 1024, 1025, 10**6]))
)
def test_any_top_k(search_stub, catalog, top_k):
    request = search_pb2.SearchRequest(
        collection=catalog, queries=[search_pb2.Query(id="Leopards-0")], top_k=top_k
    )
    code, response = outcome(lambda: search_stub.Search(request, timeout=60))
    if 0 <= top_k <= 1024:
        assert code == grpc.StatusCode.OK, response
        hits = response.results[0].hits  # type: ignore[attr-defined]
        assert 1 <= len(hits) <= (top_k or 10)
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "top_k" in str(response)


special = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e38, -1e38, 1e-45])


@FUZZ
@given(
    length=st.sampled_from([0, 1, DIM - 1, DIM, DIM + 1, 4096]),
    poison=st.lists(st.tuples(st.integers(0, DIM - 1), special), max_size=3),
)
def test_vector_queries_with_bad_values_or_length(search_stub, catalog, length, poison):
    values = [0.01] * length
    for index, value in poison:
        if index < length:
            values[index] = value
    request = search_pb2.SearchRequest(
        collection=catalog,
        queries=[search_pb2.Query(vector=search_pb2.Vector(values=values))],
        top_k=3,
    )
    code, response = outcome(lambda: search_stub.Search(request, timeout=60))
    # Usable: finite, within the service's bound on |value| (1e38 is finite but refused), not 0.
    finite = all(math.isfinite(v) and abs(v) <= MAX_VECTOR_VALUE for v in values) and any(values)
    if code == grpc.StatusCode.OK:
        result = response.results[0]  # type: ignore[attr-defined]
        if length == DIM and finite:
            assert not result.error.code and result.hits
        else:
            assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], values[:4]
            assert result.error.message
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT and not (length == DIM and finite)


@FUZZ
@given(
    ids=st.lists(any_text, max_size=4),
    labels=st.lists(any_text, max_size=3),
    key=any_text,
    value=any_text,
)
def test_any_text_in_filters(search_stub, catalog, ids, labels, key, value):
    """Random strings in Get/Count/Delete/Search filters: literal matches or a clear refusal."""
    known = {
        f"{c}-{n}"
        for c in ("Leopards", "Motorbikes", "airplanes", "accordion", "sunflower")
        for n in range(4)
    }
    flt = search_pb2.Filter(ids=ids, labels=labels, metadata={key: value} if key else {})
    code, response = outcome(
        lambda: search_stub.Count(
            search_pb2.CountRequest(collection=catalog, filter=flt), timeout=30
        )
    )
    if code == grpc.StatusCode.OK:
        could_match = (not ids or set(ids) & known) and not labels and not key
        if not could_match:
            assert response.count == 0  # type: ignore[attr-defined]
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    if ids:  # (no ids = "every item", up to the limit)
        get = search_pb2.GetRequest(collection=catalog, ids=ids)
        code, response = outcome(lambda: search_stub.Get(get, timeout=30))
        if code == grpc.StatusCode.OK:
            assert {i.id for i in response.items} == set(ids) & known  # type: ignore[attr-defined]
        else:
            assert code == grpc.StatusCode.INVALID_ARGUMENT
    # A delete whose filter matches nothing real must delete nothing (the catalog is shared).
    if not set(ids) & known:
        delete = search_pb2.DeleteRequest(collection=catalog, ids=ids, filter=flt)
        code, response = outcome(lambda: search_stub.Delete(delete, timeout=30))
        if code == grpc.StatusCode.OK:
            assert response.deleted == 0  # type: ignore[attr-defined]
        else:
            assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert count(search_stub, catalog) == 20


def test_unknown_collection_is_not_found(search_stub):
    name = f"missing_{uuid.uuid4().hex[:8]}"
    calls = {
        "describe": lambda: search_stub.DescribeCollection(
            search_pb2.DescribeCollectionRequest(name=name), timeout=30
        ),
        "search": lambda: search_stub.Search(
            search_pb2.SearchRequest(collection=name, queries=[search_pb2.Query(id="x")]),
            timeout=30,
        ),
        "get": lambda: search_stub.Get(
            search_pb2.GetRequest(collection=name, ids=["x"]), timeout=30
        ),
        "count": lambda: search_stub.Count(search_pb2.CountRequest(collection=name), timeout=30),
        "delete": lambda: search_stub.Delete(
            search_pb2.DeleteRequest(collection=name, ids=["x"]), timeout=30
        ),
        "ingest": lambda: search_stub.Ingest(
            iter([search_pb2.IngestRequest(collection=name, items=[search_pb2.Item(id="x")])]),
            timeout=30,
        ),
    }
    for what, call in calls.items():
        code, details = outcome(call)
        assert code == grpc.StatusCode.NOT_FOUND, (what, code, details)
        assert name in str(details), (what, details)
    for bad in ("", "a b", "x" * 300, "drop;--", "ü"):
        request = search_pb2.CountRequest(collection=bad)
        code, details = outcome(partial(search_stub.Count, request, timeout=30))
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (bad, code)


def test_oversize_message_is_refused_and_service_survives(search_server, search_stub, catalog):
    limit = search_server.config.max_message_bytes
    channel = grpc.insecure_channel(
        search_server.address, options=[("grpc.max_send_message_length", limit + 1024 * 1024)]
    )
    try:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        huge = search_pb2.SearchRequest(
            collection=catalog, queries=[search_pb2.Query(image=b"\xff" * (limit + 16))]
        )
        code, details = outcome(lambda: stub.Search(huge, timeout=60))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    finally:
        channel.close()
    assert_healthy(search_server, search_stub, catalog)


def test_healthy_after_fuzzing(search_server, search_stub, catalog):
    assert_healthy(search_server, search_stub, catalog)
    assert count(search_stub, catalog) == 20
