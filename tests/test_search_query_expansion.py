"""Alpha query expansion: the settings, the arithmetic, and the real service (real embedder,
real Milvus) checked against the same expansion computed here from the stored vectors (the
collections are augmented by default: the blends are recomputed here from the raw vectors)."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest
from search_fixtures import CLASSES, PER_CLASS, ingest, item_of, offline_augmented

from ris.api import embedder_pb2, search_pb2
from ris.common.errors import InvalidArgument
from ris.search.config import ConfigError, SearchConfig, from_env
from ris.search.query_expansion import OFF, ExpansionSettings, expand, resolve

QE = search_pb2.QueryExpansion
PLAIN = QE(enabled=False)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# -- settings and arithmetic (no network) --------------------------------------------------


def test_resolve_request_over_server_defaults() -> None:
    config = SearchConfig()
    assert resolve(None, config) == ExpansionSettings(1, 3.0)  # absent = on by default
    assert resolve(QE(enabled=False, top_n=5), config) == OFF
    assert resolve(QE(enabled=True), config) == ExpansionSettings(1, 3.0)
    assert resolve(QE(enabled=True, top_n=3, alpha=0.5), config) == ExpansionSettings(3, 0.5)
    off_by_default = SearchConfig(query_expansion_top_n=0, query_expansion_alpha=2.0)
    assert not resolve(None, off_by_default).enabled
    assert resolve(QE(enabled=True), off_by_default) == ExpansionSettings(1, 2.0)
    for bad in (QE(enabled=True, top_n=65), QE(enabled=True, top_n=-1), QE(enabled=True, alpha=-1)):
        with pytest.raises(InvalidArgument):
            resolve(bad, config)
    with pytest.raises(InvalidArgument):
        resolve(QE(enabled=True, alpha=float("nan")), config)


def test_config_from_env_and_validation() -> None:
    env = {"RIS_SEARCH_QUERY_EXPANSION_TOP_N": "0", "RIS_SEARCH_QUERY_EXPANSION_ALPHA": "2.5"}
    config = from_env(env).validate()
    assert (config.query_expansion_top_n, config.query_expansion_alpha) == (0, 2.5)
    with pytest.raises(ConfigError, match="query_expansion_top_n"):
        SearchConfig(query_expansion_top_n=-1).validate()
    with pytest.raises(ConfigError, match="query_expansion_alpha"):
        SearchConfig(query_expansion_alpha=-0.1).validate()


def test_expand_weights_neighbours_by_similarity_to_the_alpha() -> None:
    rng = np.random.default_rng(0)
    q, a, b = unit(rng.normal(size=(3, 16)))
    close = unit(q + 0.5 * a)  # similar to q
    away = -close  # negative similarity: weight 0
    got = expand(q, [close, away], alpha=3.0)
    expected = unit(q + float(close @ q) ** 3 * close)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_array_equal(expand(q, [], 3.0), q.astype(np.float32))
    # IP: the expanded query keeps the query's length (scores stay on its scale).
    assert np.linalg.norm(expand(5.0 * q, [b * 7.0], 1.0)) == pytest.approx(5.0, rel=1e-5)
    # Neighbours count by direction only.
    np.testing.assert_allclose(expand(q, [close * 9.0], 3.0), expected, atol=1e-6)


# -- through the service -------------------------------------------------------------------


def raw_vectors(stub, collection: str) -> tuple[list[str], np.ndarray]:
    """The items' embeddings, as Get returns them."""
    items = stub.Get(
        search_pb2.GetRequest(collection=collection, limit=1000, include_vectors=True)
    ).items
    return [i.id for i in items], np.array([list(i.vector) for i in items], dtype=np.float64)


def stored_vectors(stub, collection: str) -> tuple[list[str], np.ndarray]:
    """What the collection searches: the embeddings, or their blends when augmented."""
    ids, raw = raw_vectors(stub, collection)
    info = stub.DescribeCollection(search_pb2.DescribeCollectionRequest(name=collection))
    if info.augmentation.enabled:
        raw = offline_augmented(raw, info.augmentation.top_n, info.augmentation.alpha)
    return ids, raw


def ranking(ids: list[str], db: np.ndarray, q: np.ndarray, k: int) -> list[tuple[str, float]]:
    scores = db @ unit(q)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(ids[j], float(scores[j])) for j in order]


def expected_expanded(
    ids: list[str], db: np.ndarray, q: np.ndarray, skip: str = "", alpha: float = 3.0
) -> np.ndarray:
    """The top-1 neighbour of q (other than `skip`), folded in with weight sim^alpha."""
    first = next((i, s) for i, s in ranking(ids, db, q, len(ids)) if i != skip)
    return unit(unit(q) + max(first[1], 0.0) ** alpha * db[ids.index(first[0])])


def hits_of(result: search_pb2.QueryResult) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in result.hits]


def assert_same_hits(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=2e-4)


def search(stub, collection: str, *queries: search_pb2.Query, **kwargs):
    return stub.Search(
        search_pb2.SearchRequest(collection=collection, queries=list(queries), **kwargs),
        timeout=60,
    )


def test_default_search_is_the_expanded_query(
    search_stub, catalog, query_photos, embedder_stub
) -> None:
    """On by default (top_n 1, alpha 3); QE off is the plain search; both match a brute-force
    ranking over the stored vectors, the expansion computed here from the query's embedding."""
    ids, db = stored_vectors(search_stub, catalog)
    assert len(ids) == len(CLASSES) * PER_CLASS
    photos = [query_photos[c] for c in CLASSES]
    embedded = embedder_stub.Embed(
        embedder_pb2.EmbedRequest(images=[embedder_pb2.ImageInput(data=d) for d in photos]),
        timeout=60,
    )
    vectors = np.array([list(r.embedding) for r in embedded.results], dtype=np.float64)
    images = [search_pb2.Query(image=d) for d in photos]
    k = len(ids)
    plain = search(search_stub, catalog, *images, top_k=k, query_expansion=PLAIN)
    default = search(search_stub, catalog, *images, top_k=k)
    explicit = search(
        search_stub, catalog, *images, top_k=k, query_expansion=QE(enabled=True, top_n=1, alpha=3)
    )
    assert default.milvus_seconds > 0 and default.embed_seconds > 0
    for n, label in enumerate(CLASSES):
        assert hits_of(default.results[n]) == hits_of(explicit.results[n])
        assert_same_hits(hits_of(plain.results[n]), ranking(ids, db, vectors[n], k))
        want = ranking(ids, db, expected_expanded(ids, db, vectors[n]), k)
        assert_same_hits(hits_of(default.results[n]), want)
        assert hits_of(default.results[n]) != hits_of(plain.results[n])  # the scores move
        assert default.results[n].hits[0].label == label


def test_vector_query_matches_brute_force_with_and_without_expansion(
    search_stub, catalog, query_photos
) -> None:
    ids, db = stored_vectors(search_stub, catalog)
    rng = np.random.default_rng(3)
    # A query between two stored items of one class, nudged off both.
    noise = unit(rng.normal(size=(db.shape[1],)))
    q = unit(db[0] + db[1] + 0.3 * noise)
    query = search_pb2.Query(vector=search_pb2.Vector(values=q.astype(np.float32).tolist()))
    k = 8
    plain = search(search_stub, catalog, query, top_k=k, query_expansion=PLAIN).results[0]
    assert_same_hits(hits_of(plain), ranking(ids, db, q, k))
    expanded = search(search_stub, catalog, query, top_k=k).results[0]
    assert_same_hits(hits_of(expanded), ranking(ids, db, expected_expanded(ids, db, q), k))
    assert hits_of(expanded) != hits_of(plain)
    # top_n and alpha from the request are honoured.
    three = search(
        search_stub, catalog, query, top_k=k, query_expansion=QE(enabled=True, top_n=3, alpha=1)
    ).results[0]
    top3 = ranking(ids, db, q, 3)
    q3 = unit(q + np.sum([s * db[ids.index(i)] for i, s in top3], axis=0))
    assert_same_hits(hits_of(three), ranking(ids, db, q3, k))


def test_id_query_never_expands_with_itself(search_stub, catalog) -> None:
    """exclude_self: the item is neither a hit nor a neighbour; without it, the item is still
    not its own neighbour, so both rank the same expanded query."""
    ids, db = stored_vectors(search_stub, catalog)
    target = f"{CLASSES[2]}-1"
    q = raw_vectors(search_stub, catalog)[1][ids.index(target)]  # id queries are raw
    expanded = expected_expanded(ids, db, q, skip=target)
    k = 5
    without = search(search_stub, catalog, search_pb2.Query(id=target), top_k=k, exclude_self=True)
    hits = hits_of(without.results[0])
    assert target not in [i for i, _ in hits] and len(hits) == k
    brute = [(i, s) for i, s in ranking(ids, db, expanded, k + 1) if i != target][:k]
    assert_same_hits(hits, brute)
    with_self = hits_of(search(search_stub, catalog, search_pb2.Query(id=target)).results[0])
    assert with_self[0][0] == target and with_self[0][1] < 0.9999  # expanded: not q itself
    assert [i for i, _ in with_self[1 : k + 1]] == [i for i, _ in hits]
    plain = search(
        search_stub, catalog, search_pb2.Query(id=target), exclude_self=True, query_expansion=PLAIN
    )
    assert hits_of(plain.results[0]) != hits


def test_bad_expansion_settings_are_refused(search_stub, catalog) -> None:
    query = search_pb2.Query(id=f"{CLASSES[0]}-0")
    with pytest.raises(grpc.RpcError) as info:
        search(search_stub, catalog, query, query_expansion=QE(enabled=True, top_n=1000))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "top_n" in (info.value.details() or "")


def test_l2_collections_skip_expansion(search_stub, photos) -> None:
    name = f"l2_{uuid.uuid4().hex[:10]}"
    search_stub.CreateCollection(
        search_pb2.CreateCollectionRequest(name=name, metric=search_pb2.L2, index_type="FLAT")
    )
    try:
        chosen = photos[::2]
        summary = ingest(search_stub, name, [item_of(p) for p in chosen])
        assert summary.stored == len(chosen)
        query = search_pb2.Query(id=chosen[0].id)
        default = search(search_stub, name, query, top_k=5).results[0]
        plain = search(search_stub, name, query, top_k=5, query_expansion=PLAIN).results[0]
        assert hits_of(default) == hits_of(plain)
        assert default.hits[0].id == chosen[0].id and default.hits[0].score == pytest.approx(
            0.0, abs=1e-4
        )
    finally:
        search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name))
