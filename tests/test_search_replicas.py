"""Two search-service processes (replicas behind one load balancer) writing one augmented
collection on a real Milvus 2.3 server at the same time: afterwards every stored blend equals
the exhaustive recompute from the raw embeddings (augmentation.py, ``settle``). The second test
repeats the race many times, cheaply: two augmenters with their own Milvus connections (what
two replicas are) in one process, on synthetic vectors."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from search_fixtures import (
    Photo,
    ingest,
    item_of,
    offline_augmented,
    search_client,
    search_process,
)
from test_search_augmentation import assert_searches_offline_blends

from ris.api import search_pb2
from ris.search.augmentation import Augmenter
from ris.search.config import SearchConfig
from ris.search.indexing import plan_index
from ris.search.store import MilvusStore
from ris.search.store_schema import CollectionMeta, Record

pytestmark = pytest.mark.milvus_server


def test_two_replicas_writing_one_collection_leave_exact_blends(
    milvus_server, embedder_server, photos: list[Photo], tmp_path: Path
) -> None:
    env = {
        "RIS_MILVUS_URI": milvus_server.uri,
        "RIS_EMBEDDER_ADDRESS": embedder_server.address,
        # Each replica's searches must see the other's writes that returned a moment ago
        # (Session, the default, sees them only after Milvus' next time tick).
        "RIS_MILVUS_SEARCH_CONSISTENCY": "Strong",
    }
    name = f"replicas_{uuid.uuid4().hex[:8]}"
    with (
        search_process(env, tmp_path) as first,
        search_process(env, tmp_path) as second,
        search_client(first) as a,
        search_client(second) as b,
    ):
        a.CreateCollection(search_pb2.CreateCollectionRequest(name=name, index_type="FLAT"))
        try:
            items = [item_of(p) for p in photos]
            # One item per call, two streams per replica, the replicas' items interleaved by
            # class so each one's newest items are the other's nearest neighbours.
            jobs = [(a if n % 2 else b, item) for n, item in enumerate(items)]
            with ThreadPoolExecutor(max_workers=4) as pool:
                stored = list(pool.map(lambda job: ingest(job[0], name, [job[1]]).stored, jobs))
            assert stored == [1] * len(items)
            for stub in (a, b):  # both replicas search the same, exact blends
                assert_searches_offline_blends(stub, name, len(items))

            gone = [p.id for p in photos[::3]]  # concurrent deletes and re-ingests too
            with ThreadPoolExecutor(max_workers=4) as pool:
                deletes = [
                    pool.submit(
                        (a if n % 2 else b).Delete,
                        search_pb2.DeleteRequest(collection=name, ids=[i]),
                    )
                    for n, i in enumerate(gone)
                ]
                back = [
                    pool.submit(ingest, b if n % 2 else a, name, [item_of(p, again="1")])
                    for n, p in enumerate(photos[1::3])
                ]
                assert all(f.result().deleted == 1 for f in deletes)
                assert all(f.result().stored == 1 for f in back)
            assert_searches_offline_blends(a, name, len(items) - len(gone))
        finally:
            a.DropCollection(search_pb2.DropCollectionRequest(name=name))


RACE_ROUNDS = 8  # collections raced; before the re-read, ~1 in 30 ended with a stale blend
RACE_BUDGET_S = 120.0
CLUSTERS, PER_CLUSTER, DIM = 5, 4, 2048


def clustered_vectors(seed: int) -> np.ndarray:
    """Unit vectors in tight clusters: each item's neighbours are its cluster's other items,
    which the two writers store at the same time."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, DIM))
    vectors = np.concatenate([c + 0.6 * rng.normal(size=(PER_CLUSTER, DIM)) for c in centres])
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def race_once(writers: list[Augmenter], reader: MilvusStore, seed: int) -> list[str]:
    """One collection written by both writers at once, one item per call, two calls per writer
    in flight; returns the ids whose stored blend differs from the exhaustive recompute."""
    vectors = clustered_vectors(seed)
    ids = [f"item{n:02d}" for n in range(len(vectors))]
    meta = CollectionMeta(
        name=f"race_{uuid.uuid4().hex[:8]}",
        dim=DIM,
        metric="COSINE",
        index=plan_index("FLAT", {}, "FLAT"),
        augment_top_n=3,
        augment_alpha=3.0,
    )
    reader.create_collection(meta)
    try:
        order = np.random.default_rng(seed).permutation(len(ids))

        def write(n: int) -> int:
            item = int(order[n])
            return writers[n % 2].blend(meta, [Record(ids[item], vectors[item])])

        with ThreadPoolExecutor(max_workers=4) as pool:
            assert all(written >= 1 for written in pool.map(write, range(len(ids))))
        rows = reader.get_all(meta.name, ids, include_vectors=True)
        stored = {r.id: np.asarray(r.vector, np.float64) for r in rows}
        assert sorted(stored) == ids
        want = offline_augmented(vectors.astype(np.float64), 3, 3.0)
        got = np.array([stored[i] / np.linalg.norm(stored[i]) for i in ids])
        return [ids[n] for n in np.flatnonzero(np.abs(got - want).max(axis=1) > 2e-4)]
    finally:
        reader.drop_collection(meta.name)


def test_two_writers_racing_many_times_leave_exact_blends(milvus_server) -> None:
    config = SearchConfig(milvus_uri=milvus_server.uri, milvus_timeout_s=60.0).validate()
    stores = [MilvusStore(config), MilvusStore(config)]
    writers = [Augmenter(store) for store in stores]
    deadline, raced = time.monotonic() + RACE_BUDGET_S, 0
    try:
        for seed in range(RACE_ROUNDS):
            if time.monotonic() > deadline:
                break
            assert race_once(writers, stores[1], seed) == [], f"race {seed}"
            raced += 1
        assert raced >= 3, f"only {raced} races in {RACE_BUDGET_S:.0f} s"
    finally:
        for store in stores:
            store.close()
