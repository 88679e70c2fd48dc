"""Score thresholds and listing a whole collection, through the real service (real embedder,
Milvus Lite and the Milvus 2.3 server): ``min_score`` per metric, ``ListItems`` paging."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest
from search_fixtures import Photo, ingest, item_of

from ris.api import search_pb2

PLAIN = search_pb2.QueryExpansion(enabled=False)


def _scores(result: search_pb2.QueryResult) -> list[float]:
    return [h.score for h in result.hits]


def test_min_score_cuts_the_hits(search_stub, catalog) -> None:
    """Hits under the threshold go; the rest are the unfiltered hits' prefix, in order."""
    query = search_pb2.Query(id="Leopards-0")
    full = search_stub.Search(
        search_pb2.SearchRequest(
            collection=catalog, queries=[query], top_k=20, query_expansion=PLAIN
        )
    ).results[0]
    scores = _scores(full)
    assert len(scores) == 20 and scores[4] > scores[10]
    threshold = (scores[4] + scores[5]) / 2
    cut = search_stub.Search(
        search_pb2.SearchRequest(
            collection=catalog,
            queries=[query],
            top_k=20,
            query_expansion=PLAIN,
            min_score=threshold,
        )
    ).results[0]
    assert [h.id for h in cut.hits] == [h.id for h in full.hits[:5]]
    assert all(h.score >= threshold for h in cut.hits)

    none = search_stub.Search(
        search_pb2.SearchRequest(collection=catalog, queries=[query], min_score=1.5)
    ).results[0]
    assert not none.HasField("error") and list(none.hits) == []
    # 0 is a threshold, not "unset": cosine scores of unrelated photos stay above it
    zero = search_stub.Search(
        search_pb2.SearchRequest(collection=catalog, queries=[query], top_k=20, min_score=0.0)
    ).results[0]
    assert len(zero.hits) == 20


def test_min_score_must_be_finite(search_stub, catalog) -> None:
    with pytest.raises(grpc.RpcError) as info:
        search_stub.Search(
            search_pb2.SearchRequest(
                collection=catalog, queries=[search_pb2.Query(id="x")], min_score=float("nan")
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "min_score" in info.value.details()


def test_min_score_on_l2_is_minus_the_squared_distance(search_stub, photos: list[Photo]) -> None:
    """What proto documents: an L2 hit's score is -|q - v|^2, so min_score=-d keeps distance^2
    <= d."""
    name = f"l2_{uuid.uuid4().hex[:10]}"
    search_stub.CreateCollection(
        search_pb2.CreateCollectionRequest(name=name, metric=search_pb2.L2, index_type="FLAT")
    )
    try:
        chosen = photos[:6]
        assert ingest(search_stub, name, [item_of(p) for p in chosen]).stored == 6
        stored = search_stub.Get(
            search_pb2.GetRequest(collection=name, ids=[p.id for p in chosen], include_vectors=True)
        ).items
        vectors = {i.id: np.asarray(i.vector, dtype=np.float64) for i in stored}
        query = vectors[chosen[0].id]
        result = search_stub.Search(
            search_pb2.SearchRequest(
                collection=name,
                queries=[search_pb2.Query(vector=search_pb2.Vector(values=query.tolist()))],
                top_k=6,
            )
        ).results[0]
        for hit in result.hits:
            expected = -float(np.sum((vectors[hit.id] - query) ** 2))
            assert hit.score == pytest.approx(expected, rel=1e-3, abs=1e-3)
        bound = (result.hits[2].score + result.hits[3].score) / 2
        cut = search_stub.Search(
            search_pb2.SearchRequest(
                collection=name,
                queries=[search_pb2.Query(vector=search_pb2.Vector(values=query.tolist()))],
                top_k=6,
                min_score=bound,
            )
        ).results[0]
        assert [h.id for h in cut.hits] == [h.id for h in result.hits[:3]]
    finally:
        search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name))


def _list_all(stub, collection: str, **kwargs) -> tuple[list[search_pb2.StoredItem], int]:
    items: list[search_pb2.StoredItem] = []
    token = ""
    for pages in range(1, 100):
        page = stub.ListItems(
            search_pb2.ListItemsRequest(collection=collection, page_token=token, **kwargs)
        )
        items += page.items
        if not page.next_page_token:
            return items, pages
        token = page.next_page_token
    raise AssertionError("listing did not end")


def test_list_items_pages_through_everything(search_stub, catalog, photos: list[Photo]) -> None:
    items, pages = _list_all(search_stub, catalog, page_size=3)
    assert [i.id for i in items] == sorted((p.id for p in photos), key=str.encode)
    assert pages == -(-len(photos) // 3) + (1 if len(photos) % 3 == 0 else 0)
    by_id = {p.id: p for p in photos}
    for item in items:
        assert item.label == by_id[item.id].label and item.metadata["class"] == item.label
        assert item.uri == str(by_id[item.id].path) and not item.vector

    # vectors: the raw embeddings (the catalog is augmented), the same Get returns
    with_vectors, _ = _list_all(search_stub, catalog, page_size=7, include_vectors=True)
    got = search_stub.Get(
        search_pb2.GetRequest(collection=catalog, ids=[items[0].id], include_vectors=True)
    ).items[0]
    assert len(with_vectors[0].vector) == 2048
    assert np.allclose(with_vectors[0].vector, got.vector, atol=1e-6)

    leopards, _ = _list_all(
        search_stub, catalog, page_size=2, filter=search_pb2.Filter(labels=["Leopards"])
    )
    assert [i.id for i in leopards] == sorted(p.id for p in photos if p.label == "Leopards")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"page_size": 5000}, "page_size"),
        ({"page_size": -1}, "page_size"),
        ({"page_token": "not base64 !!"}, "page_token"),
        ({"page_token": "__4="}, "page_token"),  # not UTF-8
        ({"page_token": "eHh4" * 200}, "page_token"),  # an id longer than any stored one
    ],
)
def test_list_items_refuses_bad_requests(search_stub, catalog, kwargs, needle) -> None:
    with pytest.raises(grpc.RpcError) as info:
        search_stub.ListItems(search_pb2.ListItemsRequest(collection=catalog, **kwargs))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in info.value.details()


def test_list_items_of_a_missing_collection(search_stub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        search_stub.ListItems(search_pb2.ListItemsRequest(collection="no_such_collection_x"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
