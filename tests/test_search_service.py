"""The search service over real gRPC on 127.0.0.1: real embedder (ResNet50), real Milvus.

Every test runs twice: against Milvus Lite and against a real Milvus 2.3 standalone server
(``milvus_server`` mark; deselect with ``-m "not milvus_server"``).
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import grpc
import pytest
from embedder_fixtures import metric_sum, scrape
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from search_fixtures import CLASSES, PER_CLASS, Photo, ingest, item_of

from ris.api import search_pb2
from ris.search.indexing import plan_index
from ris.search.server import SearchServer
from ris.search.store_schema import CollectionMeta

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]


def rpc_error(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value


def search(
    stub, collection: str, *queries: search_pb2.Query, **kwargs
) -> search_pb2.SearchResponse:
    return stub.Search(
        search_pb2.SearchRequest(collection=collection, queries=list(queries), **kwargs)
    )


# -- collections ---------------------------------------------------------------------------


def test_collection_lifecycle(search_stub, embedder_stub) -> None:
    from ris.api import embedder_pb2

    model = embedder_stub.GetModelInfo(embedder_pb2.GetModelInfoRequest()).default_model
    name = f"life_{uuid.uuid4().hex[:8]}"
    info = search_stub.CreateCollection(
        search_pb2.CreateCollectionRequest(name=name, description="holiday photos")
    )
    assert (info.name, info.count, info.dim) == (name, 0, model.dim)
    assert (info.model_name, info.model_version) == (model.name, model.version)
    assert info.metric == search_pb2.COSINE and info.index_type == "AUTOINDEX"
    assert info.description == "holiday photos"

    described = search_stub.DescribeCollection(search_pb2.DescribeCollectionRequest(name=name))
    assert described == info
    listed = search_stub.ListCollections(search_pb2.ListCollectionsRequest()).collections
    assert name in [c.name for c in listed]

    err = rpc_error(search_stub.CreateCollection, search_pb2.CreateCollectionRequest(name=name))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    again = search_stub.CreateCollection(
        search_pb2.CreateCollectionRequest(name=name, exist_ok=True)
    )
    assert again.name == name

    assert search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name)).dropped
    assert not search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name)).dropped
    err = rpc_error(search_stub.DescribeCollection, search_pb2.DescribeCollectionRequest(name=name))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_index_choice_is_stored_and_sized(search_stub) -> None:
    name = f"ivf_{uuid.uuid4().hex[:8]}"
    info = search_stub.CreateCollection(
        search_pb2.CreateCollectionRequest(
            name=name,
            metric=search_pb2.L2,
            index_type="IVF_FLAT",
            index_params={"expected_rows": "1000"},
        )
    )
    try:
        assert info.metric == search_pb2.L2 and info.index_type == "IVF_FLAT"
        assert info.index_params["nlist"] == "126"  # 4 * sqrt(1000), not a fixed 2048
    finally:
        search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name))
    big = search_stub.CreateCollection(
        search_pb2.CreateCollectionRequest(
            name=name, index_type="IVF_SQ8", index_params={"expected_rows": "1000000"}
        )
    )
    try:  # 4 * sqrt(one 512 MB segment of 2048-d rows), not 4 * sqrt(1M) = 4000
        assert big.index_params["nlist"] == "1020"
        described = search_stub.DescribeCollection(search_pb2.DescribeCollectionRequest(name=name))
        assert described.index_params["nlist"] == "1020"  # read back as built
    finally:
        search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name))


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"name": "1starts_with_digit"},
        {"name": "has-dash"},
        {"name": "ok_name", "index_type": "NOPE_INDEX"},
        {"name": "ok_name", "index_type": "HNSW", "index_params": {"M": "lots"}},
        {"name": "ok_name", "index_type": "HNSW", "index_params": {"nlist": "8"}},
    ],
)
def test_create_collection_refuses_bad_requests(search_stub, request_kwargs) -> None:
    err = rpc_error(
        search_stub.CreateCollection, search_pb2.CreateCollectionRequest(**request_kwargs)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_collection_is_not_found(search_stub) -> None:
    missing = "never_created_here"
    for call, request in [
        (search_stub.Count, search_pb2.CountRequest(collection=missing)),
        (search_stub.Get, search_pb2.GetRequest(collection=missing, ids=["a"])),
        (search_stub.Delete, search_pb2.DeleteRequest(collection=missing, ids=["a"])),
        (
            search_stub.Search,
            search_pb2.SearchRequest(collection=missing, queries=[search_pb2.Query(id="a")]),
        ),
    ]:
        assert rpc_error(call, request).code() == grpc.StatusCode.NOT_FOUND
    err = rpc_error(
        search_stub.Ingest,
        iter([search_pb2.IngestRequest(collection=missing, items=[search_pb2.Item(id="a")])]),
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


# -- search --------------------------------------------------------------------------------


def test_search_by_image_finds_the_class(search_stub, catalog, query_photos) -> None:
    """A held-out photo of each class: the best hits are photos of that class, best first."""
    labels = list(CLASSES)
    response = search(
        search_stub, catalog, *[search_pb2.Query(image=query_photos[c]) for c in labels], top_k=3
    )
    assert len(response.results) == len(labels)
    assert response.embed_seconds > 0 and response.milvus_seconds > 0
    for label, result in zip(labels, response.results, strict=True):
        assert not result.HasField("error")
        assert len(result.hits) == 3
        assert result.hits[0].label == label, (label, [h.label for h in result.hits])
        scores = [h.score for h in result.hits]
        assert scores == sorted(scores, reverse=True)
        assert all(-1.0001 <= s <= 1.0001 for s in scores)
        top = result.hits[0]
        assert top.metadata["class"] == label and top.uri.endswith(".jpg")
        assert Path(top.uri).parent.name == label


def test_search_by_id_and_vector(search_stub, catalog) -> None:
    target = f"{CLASSES[1]}-2"
    # The plain search (query expansion off): the item is its own best hit. The collection is
    # augmented (the default), so what is stored is a blend of the item and its neighbours and
    # the raw embedding scores below 1 against it; test_search_augmentation.py checks the blends.
    # Expansion is covered in test_search_query_expansion.py.
    plain = search_pb2.QueryExpansion(enabled=False)
    with_self = search(
        search_stub, catalog, search_pb2.Query(id=target), top_k=4, query_expansion=plain
    )
    hits = with_self.results[0].hits
    assert hits[0].id == target and 0.8 < hits[0].score < 0.999

    without = (
        search(
            search_stub,
            catalog,
            search_pb2.Query(id=target),
            top_k=4,
            exclude_self=True,
            query_expansion=plain,
        )
        .results[0]
        .hits
    )
    assert len(without) == 4 and target not in [h.id for h in without]
    assert [h.id for h in without[:3]] == [h.id for h in hits[1:4]]

    stored = search_stub.Get(
        search_pb2.GetRequest(collection=catalog, ids=[target], include_vectors=True)
    ).items[0]
    assert len(stored.vector) == 2048
    assert math.sqrt(sum(v * v for v in stored.vector)) == pytest.approx(1.0, abs=1e-3)
    by_vector = search(
        search_stub, catalog, search_pb2.Query(vector=search_pb2.Vector(values=stored.vector))
    )
    assert by_vector.results[0].hits[0].id == target
    assert by_vector.embed_seconds == 0  # no embedder involved


def test_batch_search_isolates_bad_queries(
    search_stub, catalog, query_photos, embedder_stub
) -> None:
    response = search(
        search_stub,
        catalog,
        search_pb2.Query(image=b"definitely not an image"),
        search_pb2.Query(id="no_such_item"),
        search_pb2.Query(vector=search_pb2.Vector(values=[0.1, 0.2])),
        search_pb2.Query(image=query_photos["Leopards"]),
        search_pb2.Query(text="a spotted cat"),
        top_k=2,
    )
    codes = [r.error.code for r in response.results]
    assert codes[:3] == [INVALID_ARGUMENT, NOT_FOUND, INVALID_ARGUMENT]
    assert codes[3] == 0 and response.results[3].hits[0].label == "Leopards"
    assert all(not r.hits for i, r in enumerate(response.results) if i not in (3, 4))
    text = response.results[4]
    if _serves_text_model(embedder_stub):
        assert codes[4] == 0 and text.hits  # the query got an answer, weak or not
    else:
        assert codes[4] == grpc.StatusCode.FAILED_PRECONDITION.value[0] and not text.hits
        assert "text model" in text.error.message


def _serves_text_model(embedder_stub) -> bool:
    from ris.api import embedder_pb2

    info = embedder_stub.GetModelInfo(embedder_pb2.GetModelInfoRequest())
    image_model = info.default_model.name
    return any(
        m.modality == "text" and getattr(m, "target_space", "") == image_model for m in info.models
    )


def test_search_by_text(search_stub, catalog, embedder_stub) -> None:
    """Text goes through the embedder's text model into the image space (when it has one)."""
    if not _serves_text_model(embedder_stub):
        response = search(search_stub, catalog, search_pb2.Query(text="a leopard"))
        assert response.results[0].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        return
    texts = {
        "a photo of a leopard": "Leopards",
        "a motorbike": "Motorbikes",
        "an accordion": "accordion",
    }
    queries = [search_pb2.Query(text=t) for t in [*texts, "qwxzy blorp"]]
    response = search(search_stub, catalog, *queries, top_k=PER_CLASS)
    for result in response.results:
        assert not result.HasField("error")
        scores = [h.score for h in result.hits]
        assert len(scores) == PER_CLASS and scores == sorted(scores, reverse=True)
    for label, result in zip(texts.values(), response.results, strict=False):
        assert result.hits[0].label == label and not result.low_confidence
    assert response.results[-1].low_confidence  # gibberish matches no concept
    assert response.embed_seconds > 0


def test_search_filters(search_stub, catalog, query_photos) -> None:
    query = search_pb2.Query(image=query_photos["Leopards"])
    only = search(
        search_stub, catalog, query, top_k=10, filter=search_pb2.Filter(labels=["airplanes"])
    )
    assert [h.label for h in only.results[0].hits] == ["airplanes"] * PER_CLASS

    meta = search(
        search_stub,
        catalog,
        query,
        top_k=10,
        filter=search_pb2.Filter(
            metadata={"class": "sunflower", "n": str(CLASSES.index("sunflower") * PER_CLASS)}
        ),
    )
    assert [h.id for h in meta.results[0].hits] == ["sunflower-0"]

    ids = search(
        search_stub, catalog, query, filter=search_pb2.Filter(ids=["accordion-1", "Motorbikes-3"])
    )
    assert sorted(h.id for h in ids.results[0].hits) == ["Motorbikes-3", "accordion-1"]


@pytest.mark.parametrize(
    "hostile",
    ['Leopards" or label != "', "Leopards\\", 'x"] or id != ["', "') or true or ('", "\n", ""],
)
def test_filter_values_are_literals(search_stub, catalog, hostile) -> None:
    """Expression syntax inside a filter value matches nothing instead of widening the filter."""
    count = search_stub.Count(
        search_pb2.CountRequest(collection=catalog, filter=search_pb2.Filter(labels=[hostile]))
    ).count
    assert count == 0
    meta = search_pb2.Filter(metadata={"class": hostile})
    assert search_stub.Count(search_pb2.CountRequest(collection=catalog, filter=meta)).count == 0


def test_get_and_count(search_stub, catalog, photos) -> None:
    total = search_stub.Count(search_pb2.CountRequest(collection=catalog)).count
    assert total == len(photos)
    leopards = search_pb2.Filter(labels=["Leopards"])
    assert (
        search_stub.Count(search_pb2.CountRequest(collection=catalog, filter=leopards)).count
        == PER_CLASS
    )

    got = search_stub.Get(
        search_pb2.GetRequest(collection=catalog, ids=["sunflower-1", "nope", "Leopards-0"])
    )
    assert [i.id for i in got.items] == ["sunflower-1", "Leopards-0"]
    assert got.items[0].label == "sunflower" and not got.items[0].vector
    assert got.items[1].uri.endswith("image_0001.jpg")

    page = search_stub.Get(search_pb2.GetRequest(collection=catalog, filter=leopards, limit=2))
    assert len(page.items) == 2 and {i.label for i in page.items} == {"Leopards"}
    err = rpc_error(search_stub.Get, search_pb2.GetRequest(collection=catalog, limit=100000))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- ingest --------------------------------------------------------------------------------


def test_upsert_is_idempotent(search_stub, collection, photos) -> None:
    subset = photos[:6]
    first = ingest(search_stub, collection, [item_of(p) for p in subset])
    assert (first.received, first.stored, first.failed) == (6, 6, 0)
    changed = [item_of(p) for p in subset]
    changed[0].label = "relabelled"
    changed[0].metadata["extra"] = "yes"
    again = ingest(search_stub, collection, changed, per_message=2)
    assert (again.stored, again.failed) == (6, 0)
    assert search_stub.Count(search_pb2.CountRequest(collection=collection)).count == 6
    item = search_stub.Get(search_pb2.GetRequest(collection=collection, ids=[subset[0].id])).items
    assert len(item) == 1 and item[0].label == "relabelled" and item[0].metadata["extra"] == "yes"
    # the same id twice in one stream: the later one wins, still one row
    twice = [item_of(subset[1]), item_of(subset[2])]
    twice[1].id = subset[1].id
    twice[1].label = "second"
    summary = ingest(search_stub, collection, twice)
    assert summary.stored == 2
    assert search_stub.Count(search_pb2.CountRequest(collection=collection)).count == 6
    row = search_stub.Get(search_pb2.GetRequest(collection=collection, ids=[subset[1].id])).items
    assert [r.label for r in row] == ["second"]


def test_bad_items_inside_a_good_stream(
    search_stub, collection, photos, caltech: Path, tmp_path
) -> None:
    good = [item_of(p) for p in photos[:5]]
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(photos[0].data)
    link = caltech / "train" / "escape_link.jpg"  # not created: caltech is read-only
    truncated = photos[1].data[: len(photos[1].data) // 3]
    items = [
        good[0],
        search_pb2.Item(id="garbage", image=b"GIF89a but not really"),
        good[1],
        search_pb2.Item(id="truncated", image=truncated),
        search_pb2.Item(id="", image=photos[2].data),
        search_pb2.Item(id="no_source"),
        good[2],
        search_pb2.Item(id="outside_root", uri=str(outside)),
        search_pb2.Item(id="traversal", uri=str(caltech / ".." / ".." / "etc" / "passwd")),
        search_pb2.Item(id="remote", uri="https://example.com/cat.jpg"),
        search_pb2.Item(id="missing", uri=str(link)),
        search_pb2.Item(id="server_path", uri=str(photos[3].path), label=photos[3].label),
        good[4],
    ]
    summary = ingest(search_stub, collection, items, per_message=3)
    assert summary.received == len(items)
    expected_failures = {
        "garbage": (1, INVALID_ARGUMENT),
        "truncated": (3, INVALID_ARGUMENT),
        "": (4, INVALID_ARGUMENT),
        "no_source": (5, INVALID_ARGUMENT),
        "outside_root": (7, PERMISSION_DENIED),
        "traversal": (8, PERMISSION_DENIED),
        "remote": (9, INVALID_ARGUMENT),
        "missing": (10, NOT_FOUND),
    }
    got = {f.id: (f.position, f.error.code) for f in summary.failures}
    assert got == expected_failures, summary.failures
    assert all(f.error.message for f in summary.failures)
    assert summary.stored == 5 and summary.failed == len(expected_failures)
    stored_ids = {good[i].id for i in (0, 1, 2, 4)} | {"server_path"}
    rows = search_stub.Get(search_pb2.GetRequest(collection=collection, limit=100)).items
    assert {r.id for r in rows} == stored_ids
    server_row = next(r for r in rows if r.id == "server_path")
    assert server_row.uri == str(photos[3].path)


def test_ingest_is_searchable_when_it_returns(search_stub, collection, photos) -> None:
    """No sleep, no flush from the client: the next call sees every item (Strong reads)."""
    for i, photo in enumerate(photos[:3]):
        summary = ingest(search_stub, collection, [item_of(photo)])
        assert summary.stored == 1
        count = search_stub.Count(search_pb2.CountRequest(collection=collection)).count
        assert count == i + 1
        hit = search(search_stub, collection, search_pb2.Query(id=photo.id), top_k=1)
        assert hit.results[0].hits[0].id == photo.id


def test_ingest_refuses_a_second_collection_in_one_stream(search_stub, collection, photos) -> None:
    def messages():
        yield search_pb2.IngestRequest(collection=collection, items=[item_of(photos[0])])
        yield search_pb2.IngestRequest(collection="other", items=[item_of(photos[1])])

    err = rpc_error(search_stub.Ingest, messages())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- delete --------------------------------------------------------------------------------


def test_delete_by_ids_and_filter(search_stub, collection, photos) -> None:
    subset = photos[: 2 * PER_CLASS]  # two classes
    assert ingest(search_stub, collection, [item_of(p) for p in subset]).stored == len(subset)
    first, second = subset[0], subset[1]
    deleted = search_stub.Delete(
        search_pb2.DeleteRequest(collection=collection, ids=[first.id, "not_there"])
    ).deleted
    assert deleted == 1
    assert (
        search_stub.Count(search_pb2.CountRequest(collection=collection)).count == len(subset) - 1
    )
    assert not search_stub.Get(search_pb2.GetRequest(collection=collection, ids=[first.id])).items
    hits = search(search_stub, collection, search_pb2.Query(image=first.data), top_k=10)
    assert first.id not in [h.id for h in hits.results[0].hits]

    by_label = search_pb2.Filter(labels=[second.label])
    deleted = search_stub.Delete(search_pb2.DeleteRequest(collection=collection, filter=by_label))
    assert deleted.deleted == PER_CLASS - 1
    remaining = search_stub.Get(search_pb2.GetRequest(collection=collection)).items
    assert {r.label for r in remaining} == {subset[-1].label}
    assert len(remaining) == PER_CLASS

    err = rpc_error(search_stub.Delete, search_pb2.DeleteRequest(collection=collection))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert search_stub.Count(search_pb2.CountRequest(collection=collection)).count == PER_CLASS


# -- model guard ---------------------------------------------------------------------------


@pytest.mark.parametrize("mismatch", ["model", "dim"])
def test_model_mismatch_is_refused(
    search_stub, search_server: SearchServer, photos, mismatch
) -> None:
    """A collection filled by another model (or of another dim) refuses image ingest/search."""
    model = search_server.embedder.model_info()
    name = f"mm_{mismatch}_{uuid.uuid4().hex[:8]}"
    meta = CollectionMeta(
        name=name,
        dim=model.dim if mismatch == "model" else 512,
        metric="COSINE",
        index=plan_index("FLAT", {}, "AUTOINDEX"),
        model_name="clip-vit-b32" if mismatch == "model" else model.name,
        model_version="0123456789abcdef" if mismatch == "model" else model.version,
    )
    search_server.store.create_collection(meta)
    try:
        err = rpc_error(
            search_stub.Ingest,
            iter([search_pb2.IngestRequest(collection=name, items=[item_of(photos[0])])]),
        )
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (model.name in err.details()) or ("512" in err.details())
        err = rpc_error(
            search_stub.Search,
            search_pb2.SearchRequest(
                collection=name, queries=[search_pb2.Query(image=photos[0].data)]
            ),
        )
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert search_stub.Count(search_pb2.CountRequest(collection=name)).count == 0
    finally:
        search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name))


# -- operations ----------------------------------------------------------------------------


def test_health_reflection_and_metrics(
    search_server: SearchServer, search_stub, catalog, query_photos
) -> None:
    channel = grpc.insecure_channel(search_server.address)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ris.v1.SearchService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(
            reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        )
        names = {s.name for s in answer.list_services_response.service}
        assert "ris.v1.SearchService" in names and "grpc.health.v1.Health" in names
    finally:
        channel.close()

    search(search_stub, catalog, search_pb2.Query(image=query_photos["sunflower"]))
    assert search_server.metrics_port
    values = scrape(search_server.metrics_port)
    assert metric_sum(values, "ris_search_ingest_items_total") >= len(CLASSES) * PER_CLASS
    assert values['ris_search_stage_seconds_count{op="search",stage="embed"}'] >= 1
    assert values['ris_search_stage_seconds_count{op="search",stage="milvus"}'] >= 1
    assert values['ris_search_requests_total{code="OK",method="Search"}'] >= 1


def test_restart_keeps_the_data(
    milvus_uri: str, embedder_server, photos: list[Photo], tmp_path
) -> None:
    """Stop the search service, start a new one on the same Milvus: items are still there."""
    from search_fixtures import running_search, search_client, search_config

    if milvus_uri.endswith(".db"):  # its own Lite dir: the shared server holds the other one
        milvus_uri = str(tmp_path / "restart.db")
    config = search_config(embedder_server.address, milvus_uri)
    name = f"restart_{uuid.uuid4().hex[:8]}"
    with running_search(config) as server, search_client(server.address) as stub:
        stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
        assert ingest(stub, name, [item_of(p) for p in photos[:4]]).stored == 4
    with running_search(config) as server, search_client(server.address) as stub:
        try:
            assert stub.Count(search_pb2.CountRequest(collection=name)).count == 4
            info = stub.DescribeCollection(search_pb2.DescribeCollectionRequest(name=name))
            assert info.model_name and info.dim == 2048
            hits = search(stub, name, search_pb2.Query(image=photos[2].data), top_k=1)
            assert hits.results[0].hits[0].id == photos[2].id
        finally:
            stub.DropCollection(search_pb2.DropCollectionRequest(name=name))
