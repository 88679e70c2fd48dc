"""Two search-service processes (replicas behind one load balancer) writing one augmented
collection on a real Milvus 2.3 server at the same time: afterwards every stored blend equals
the exhaustive recompute from the raw embeddings (augmentation.py, ``settle``)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from search_fixtures import Photo, ingest, item_of, search_client, search_process
from test_search_augmentation import assert_searches_offline_blends

from ris.api import search_pb2

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
