"""Every field checked at the edge (real search service, real embedder, Milvus Lite): bad index
params, metrics, model kinds, huge numbers and reserved names are INVALID_ARGUMENT naming the
field; a collection dropped under a search is NOT_FOUND; nothing answers INTERNAL with Milvus'
words in it."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from search_fixtures import Photo, ingest, item_of

from ris.api import embedder_pb2, search_pb2
from ris.common.errors import NotFound

DIM = 2048


def _refused(call: Callable[..., Any], request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value


def _name() -> str:
    return f"t_{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(
    ("index_type", "params", "field"),
    [
        ("HNSW", {"ef": str(2**40)}, "index_params.ef"),
        ("HNSW", {"efConstruction": "0"}, "index_params.efConstruction"),
        ("HNSW", {"M": "1"}, "index_params.M"),
        ("HNSW", {"M": "sixteen"}, "index_params.M"),
        ("IVF_FLAT", {"nprobe": str(2**31)}, "index_params.nprobe"),
        ("IVF_FLAT", {"ef": "64"}, "index_params"),
    ],
)
def test_index_params_are_checked_by_type_and_range(
    search_stub, index_type: str, params: dict[str, str], field: str
) -> None:
    request = search_pb2.CreateCollectionRequest(
        name=_name(), index_type=index_type, index_params=params
    )
    error = _refused(search_stub.CreateCollection, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.details()
    listed = search_stub.ListCollections(search_pb2.ListCollectionsRequest(), timeout=30)
    assert request.name not in {c.name for c in listed.collections}


def test_an_unknown_metric_is_refused_not_turned_into_cosine(search_stub) -> None:
    request = search_pb2.CreateCollectionRequest(name=_name())
    request.metric = 7  # type: ignore[assignment]
    error = _refused(search_stub.CreateCollection, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "metric" in error.details()


def test_a_text_model_cannot_be_the_model_of_an_image_collection(
    search_stub, embedder_stub
) -> None:
    info = embedder_stub.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=30)
    text = [m.name for m in info.models if m.modality == "text"]
    assert text, "the shared embedder serves models/minilm (scripts/export_text_model.py)"
    error = _refused(
        search_stub.CreateCollection,
        search_pb2.CreateCollectionRequest(name=_name(), model=text[0]),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "text model" in error.details()


def test_reserved_twin_names_are_invalid_and_reveal_nothing(search_stub, catalog: str) -> None:
    for name in (f"{catalog}__raw", "fresh__raw"):  # the first twin exists, the second not
        error = _refused(
            search_stub.CreateCollection, search_pb2.CreateCollectionRequest(name=name)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "reserved" in error.details() and "exist" not in error.details()


def test_huge_alpha_and_huge_vectors_are_refused_and_scores_stay_finite(
    search_stub, catalog: str
) -> None:
    unit = np.random.default_rng(1).standard_normal(DIM).astype(np.float32)
    unit /= np.linalg.norm(unit)
    request = search_pb2.SearchRequest(
        collection=catalog,
        queries=[search_pb2.Query(vector=search_pb2.Vector(values=unit.tolist()))],
        query_expansion=search_pb2.QueryExpansion(enabled=True, top_n=2, alpha=1e30),
    )
    error = _refused(search_stub.Search, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "query_expansion.alpha" in error.details()

    huge = np.full(DIM, 3e38, dtype=np.float32).tolist()
    zeros = [0.0] * DIM
    response = search_stub.Search(
        search_pb2.SearchRequest(
            collection=catalog,
            queries=[
                search_pb2.Query(vector=search_pb2.Vector(values=huge)),
                search_pb2.Query(vector=search_pb2.Vector(values=zeros)),
                search_pb2.Query(vector=search_pb2.Vector(values=(unit * 1e5).tolist())),
            ],
        ),
        timeout=30,
    )
    first, second, third = response.results
    assert first.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "within" in first.error.message
    assert second.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert third.hits and all(math.isfinite(h.score) for h in third.hits)


def test_a_collection_dropped_under_a_search_is_not_found(
    search_server, search_stub, photos: list[Photo]
) -> None:
    name = _name()
    search_stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), timeout=30)
    assert ingest(search_stub, name, [item_of(p) for p in photos[:4]]).stored == 4
    meta = search_server.store.describe(name)  # what a search had read before the drop
    search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name), timeout=30)
    with pytest.raises(NotFound, match="not found") as info:  # the real Milvus call's error
        search_server.store.search(meta, [np.ones(DIM, np.float32)], 3)
    assert "collection=" not in str(info.value)

    # and as callers see it: searches racing a drop answer OK or NOT_FOUND, nothing else
    search_stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), timeout=30)
    assert ingest(search_stub, name, [item_of(p) for p in photos[:4]]).stored == 4
    request = search_pb2.SearchRequest(collection=name, queries=[search_pb2.Query(id=photos[0].id)])
    codes: list[grpc.StatusCode] = []
    details: list[str] = []
    stop = threading.Event()

    def searches() -> None:
        while not stop.is_set() and len(codes) < 400:
            try:
                search_stub.Search(request, timeout=30)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                details.append(exc.details() or "")

    threads = [threading.Thread(target=searches) for _ in range(3)]
    for t in threads:
        t.start()
    while len(codes) < 6:
        threading.Event().wait(0.02)
    search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name), timeout=30)
    threading.Event().wait(0.3)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}, (set(codes), details)
    assert grpc.StatusCode.NOT_FOUND in codes
    assert not [d for d in details if "milvus" in d.lower()], details
