"""Database-side augmentation through the real service (real embedder, Milvus Lite and a real
Milvus 2.3 server): what each collection searches must equal the blends computed here,
exhaustively, from the raw embeddings, after ingests in several calls, deletes and replaced
items; plus the settings, the raw companion's lifecycle and the arithmetic."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from search_fixtures import CLASSES, PER_CLASS, Photo, ingest, item_of, offline_augmented

from ris.api import search_pb2
from ris.common.errors import InvalidArgument
from ris.search.augmentation import blend, with_self
from ris.search.config import ConfigError, SearchConfig, from_env
from ris.search.operations import augmentation_settings
from ris.search.server import SearchServer
from ris.search.store_schema import RAW_SUFFIX

DBA = search_pb2.DatabaseAugmentation
PLAIN = search_pb2.QueryExpansion(enabled=False)


# -- settings and arithmetic (no network) --------------------------------------------------


def test_settings_request_over_server_defaults() -> None:
    config = SearchConfig()
    assert augmentation_settings(None, "COSINE", config) == (3, 3.0)  # on by default
    assert augmentation_settings(None, "IP", config) == (3, 3.0)
    assert augmentation_settings(None, "L2", config)[0] == 0  # no similarity to weight by
    assert augmentation_settings(DBA(enabled=False, top_n=5), "COSINE", config)[0] == 0
    assert augmentation_settings(DBA(enabled=True), "COSINE", config) == (3, 3.0)
    assert augmentation_settings(DBA(enabled=True, top_n=2, alpha=1), "IP", config) == (2, 1.0)
    off = SearchConfig(augmentation_top_n=0)
    assert augmentation_settings(None, "COSINE", off)[0] == 0
    assert augmentation_settings(DBA(enabled=True), "COSINE", off)[0] == 3
    for bad in (DBA(enabled=True, top_n=65), DBA(enabled=True, alpha=-1)):
        with pytest.raises(InvalidArgument):
            augmentation_settings(bad, "COSINE", config)
    with pytest.raises(InvalidArgument, match="COSINE or IP"):
        augmentation_settings(DBA(enabled=True), "L2", config)


def test_config_from_env_and_validation() -> None:
    env = {"RIS_SEARCH_AUGMENTATION_TOP_N": "0", "RIS_SEARCH_AUGMENTATION_ALPHA": "1.5"}
    config = from_env(env).validate()
    assert (config.augmentation_top_n, config.augmentation_alpha) == (0, 1.5)
    with pytest.raises(ConfigError, match="augmentation_top_n"):
        SearchConfig(augmentation_top_n=65).validate()
    with pytest.raises(ConfigError, match="augmentation_alpha"):
        SearchConfig(augmentation_alpha=-1).validate()


def test_blend_weights_neighbours_by_similarity_to_the_alpha() -> None:
    rng = np.random.default_rng(1)
    own, other = rng.normal(size=(2, 8))
    own = own / np.linalg.norm(own)
    got = blend(own * 4.0, [own, other * 3.0, -own], [1.0, 0.5, -1.0], alpha=2.0)
    mixed = own + 0.25 * other / np.linalg.norm(other)  # the opposite vector weighs 0
    np.testing.assert_allclose(got, 4.0 * mixed / np.linalg.norm(mixed), atol=1e-5)
    hood = with_self("a", [("b", 0.9), ("a", 1.0), ("c", 0.8), ("d", 0.7)], 3)
    assert hood == [("a", 1.0), ("b", 0.9), ("c", 0.8)]


# -- through the service -------------------------------------------------------------------


@pytest.fixture
def augmented(search_stub) -> Iterator[str]:
    name = f"dba_{uuid.uuid4().hex[:10]}"
    info = search_stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
    assert (info.augmentation.enabled, info.augmentation.top_n) == (True, 3)
    assert info.augmentation.alpha == pytest.approx(3.0)
    yield name
    search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name))


def assert_searches_offline_blends(stub, name: str, expected_count: int) -> None:
    """Every item's score against a probe equals the probe's cosine with the blend computed
    here from the raw embeddings Get returns; ranking included."""
    items = stub.Get(search_pb2.GetRequest(collection=name, limit=1000, include_vectors=True))
    ids = [i.id for i in items.items]
    raw = np.array([list(i.vector) for i in items.items], dtype=np.float64)
    assert len(ids) == expected_count
    np.testing.assert_allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)  # embeddings
    blends = offline_augmented(raw, 3, 3.0)
    for probe in (raw[0], raw[-1]):
        response = stub.Search(
            search_pb2.SearchRequest(
                collection=name,
                queries=[search_pb2.Query(vector=search_pb2.Vector(values=probe.tolist()))],
                top_k=len(ids),
                query_expansion=PLAIN,
            ),
            timeout=60,
        )
        got = {h.id: h.score for h in response.results[0].hits}
        assert set(got) == set(ids)
        want = blends @ (probe / np.linalg.norm(probe))
        np.testing.assert_allclose([got[i] for i in ids], want, atol=2e-4)


def test_blends_follow_ingests_deletes_and_replacements(
    search_stub, augmented: str, photos: list[Photo]
) -> None:
    items = [item_of(p) for p in photos]
    half = len(items) // 2
    for part in (items[:half], items[half:]):  # two calls: the first half gets re-blended
        summary = ingest(search_stub, augmented, part, per_message=3)
        assert (summary.stored, summary.failed) == (len(part), 0)
    assert_searches_offline_blends(search_stub, augmented, len(items))

    gone = [f"{CLASSES[0]}-{n}" for n in range(PER_CLASS)] + [f"{CLASSES[3]}-0"]
    deleted = search_stub.Delete(search_pb2.DeleteRequest(collection=augmented, ids=gone))
    assert deleted.deleted == len(gone)
    assert_searches_offline_blends(search_stub, augmented, len(items) - len(gone))

    # Replace an item's image with another class's photo: its old neighbours let go of it.
    moved = search_pb2.Item(id=f"{CLASSES[1]}-0", image=photos[-1].data, label="moved")
    assert ingest(search_stub, augmented, [moved]).stored == 1
    assert_searches_offline_blends(search_stub, augmented, len(items) - len(gone))

    by_filter = search_stub.Delete(
        search_pb2.DeleteRequest(
            collection=augmented, filter=search_pb2.Filter(labels=[CLASSES[2]])
        )
    )
    assert by_filter.deleted == PER_CLASS
    assert_searches_offline_blends(search_stub, augmented, len(items) - len(gone) - PER_CLASS)


def test_id_queries_use_the_raw_embedding(search_stub, augmented, photos) -> None:
    """An id query searches with the item's embedding, exactly as the same image would (not
    with its stored blend)."""
    assert ingest(search_stub, augmented, [item_of(p) for p in photos]).stored == len(photos)
    target = photos[5]
    by_id, by_image = search_stub.Search(
        search_pb2.SearchRequest(
            collection=augmented,
            queries=[search_pb2.Query(id=target.id), search_pb2.Query(image=target.data)],
            top_k=6,
            query_expansion=PLAIN,  # (with it, an id query skips itself as a neighbour)
        ),
        timeout=60,
    ).results
    assert [h.id for h in by_id.hits] == [h.id for h in by_image.hits]
    np.testing.assert_allclose(
        [h.score for h in by_id.hits], [h.score for h in by_image.hits], atol=1e-4
    )


def test_raw_space_on_request_with_filters(search_stub, augmented, photos) -> None:
    """space=RAW searches the embeddings themselves: the same photo scores 1, filters apply."""
    assert ingest(search_stub, augmented, [item_of(p) for p in photos]).stored == len(photos)
    target = photos[-1]
    request = search_pb2.SearchRequest(
        collection=augmented,
        queries=[search_pb2.Query(image=target.data)],
        top_k=3,
        query_expansion=PLAIN,
        space=search_pb2.SEARCH_SPACE_RAW,
        filter=search_pb2.Filter(labels=[target.label]),
    )
    raw = search_stub.Search(request, timeout=60).results[0].hits
    assert raw[0].id == target.id and raw[0].score == pytest.approx(1.0, abs=1e-3)
    assert {h.label for h in raw} == {target.label} and raw[0].uri == str(target.path)
    request.space = search_pb2.SEARCH_SPACE_DEFAULT  # image queries: the blends
    blended = search_stub.Search(request, timeout=60).results[0].hits
    assert blended[0].id == target.id and blended[0].score < 0.999


def test_text_queries_search_the_embeddings_by_default(search_stub, augmented, photos) -> None:
    assert ingest(search_stub, augmented, [item_of(p) for p in photos]).stored == len(photos)

    def hits(space: int) -> list[tuple[str, float]]:
        response = search_stub.Search(
            search_pb2.SearchRequest(
                collection=augmented,
                queries=[search_pb2.Query(text="a motorbike")],
                top_k=5,
                space=space,  # type: ignore[arg-type]
            ),
            timeout=60,
        )
        return [(h.id, round(h.score, 4)) for h in response.results[0].hits]

    default = hits(search_pb2.SEARCH_SPACE_DEFAULT)
    assert default[0][0].startswith("Motorbikes")
    assert default == hits(search_pb2.SEARCH_SPACE_RAW)
    assert default != hits(search_pb2.SEARCH_SPACE_AUGMENTED)


def test_raw_companion_is_hidden_reserved_and_dropped_with_its_parent(
    search_stub, search_server: SearchServer, augmented: str
) -> None:
    listed = search_stub.ListCollections(search_pb2.ListCollectionsRequest())
    names = [c.name for c in listed.collections]
    assert augmented in names and not any(n.endswith(RAW_SUFFIX) for n in names)
    assert search_server.store.exists(augmented + RAW_SUFFIX)
    for call, request in (  # internal: no RPC reaches it by name
        (search_stub.Count, search_pb2.CountRequest(collection=augmented + RAW_SUFFIX)),
        (
            search_stub.DescribeCollection,
            search_pb2.DescribeCollectionRequest(name=augmented + RAW_SUFFIX),
        ),
    ):
        with pytest.raises(grpc.RpcError) as missing:
            call(request)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        search_stub.CreateCollection(search_pb2.CreateCollectionRequest(name="x" + RAW_SUFFIX))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    twin = search_pb2.DropCollectionRequest(name=augmented + RAW_SUFFIX)
    with pytest.raises(grpc.RpcError) as err:  # reserved: refused, naming the field
        search_stub.DropCollection(twin)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("name:")
    assert search_server.store.exists(augmented + RAW_SUFFIX)
    search_stub.DropCollection(search_pb2.DropCollectionRequest(name=augmented))
    assert not search_server.store.exists(augmented + RAW_SUFFIX)


def test_collection_settings(search_stub, photos) -> None:
    name = f"dba_{uuid.uuid4().hex[:10]}"
    create = search_stub.CreateCollection
    try:
        info = create(
            search_pb2.CreateCollectionRequest(name=name, augmentation=DBA(enabled=False))
        )
        assert not info.augmentation.enabled
        assert ingest(search_stub, name, [item_of(p) for p in photos[:3]]).stored == 3
        plain = search_stub.Search(
            search_pb2.SearchRequest(
                collection=name,
                queries=[search_pb2.Query(id=photos[0].id)],
                query_expansion=PLAIN,
            ),
            timeout=60,
        )
        assert plain.results[0].hits[0].score == pytest.approx(1.0, abs=1e-3)  # raw stored
    finally:
        search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name))
    l2 = create(search_pb2.CreateCollectionRequest(name=name, metric=search_pb2.L2))
    assert not l2.augmentation.enabled  # the default skips L2 quietly
    search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name))
    custom = create(
        search_pb2.CreateCollectionRequest(name=name, augmentation=DBA(enabled=True, top_n=2))
    )
    described = search_stub.DescribeCollection(search_pb2.DescribeCollectionRequest(name=name))
    for got in (custom, described):
        assert (got.augmentation.enabled, got.augmentation.top_n) == (True, 2)
    search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name))
    for bad in (
        search_pb2.CreateCollectionRequest(
            name=name, metric=search_pb2.L2, augmentation=DBA(enabled=True)
        ),
        search_pb2.CreateCollectionRequest(name=name, augmentation=DBA(enabled=True, top_n=99)),
    ):
        with pytest.raises(grpc.RpcError) as err:
            create(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_blending_batch_by_batch_and_after_deletes_matches_offline(tmp_path) -> None:
    """Augmenter over Milvus Lite on clustered vectors: staged and blended ten at a time (so
    earlier items are re-blended as later ones arrive), then deleted in part; every stored
    blend equals the exhaustive offline one."""
    from ris.search.augmentation import Augmenter
    from ris.search.indexing import plan_index
    from ris.search.store import MilvusStore
    from ris.search.store_schema import CollectionMeta, Record

    store = MilvusStore(SearchConfig(milvus_uri=str(tmp_path / "dba.db")))
    try:
        flat = plan_index("FLAT", {}, "FLAT")
        store.create_collection(CollectionMeta("c", 32, "COSINE", flat, augment_top_n=3))
        meta = store.describe("c")
        rng = np.random.default_rng(7)
        centres = rng.normal(size=(6, 32))
        x = np.concatenate([c + 0.8 * rng.normal(size=(12, 32)) for c in centres])
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        ids = [f"i{n}" for n in rng.permutation(len(x))]
        augmenter = Augmenter(store)
        for start in range(0, len(x), 10):
            batch = [Record(ids[n], x[n]) for n in range(start, min(start + 10, len(x)))]
            augmenter.blend(meta, batch)

        def assert_offline(keep: list[int]) -> None:
            want = offline_augmented(x[keep].astype(np.float64), 3, 3.0)
            rows = store.get("c", ids=[ids[n] for n in keep], limit=len(keep), include_vectors=True)
            got = {r.id: np.asarray(r.vector) for r in rows}
            cosines = [float(got[ids[n]] @ want[j]) for j, n in enumerate(keep)]
            assert min(cosines) > 1 - 1e-5

        assert_offline(list(range(len(x))))
        assert augmenter.delete(meta, ids=ids[::3]) == len(ids[::3])
        assert_offline([n for n in range(len(x)) if n % 3])
    finally:
        store.close()
