"""The search service restarted over Milvus Lite: killed with SIGKILL after acknowledged
ingests, and stopped gracefully; its collections and their data are intact after each restart
on the same port. (The remote-Milvus variant is in test_faults_milvus.py.)"""

from __future__ import annotations

from pathlib import Path

import grpc

from ris.api import search_pb2, search_pb2_grpc
from ris.tools.harness import start_search


def _snapshot(stub: search_pb2_grpc.SearchServiceStub, name: str, ids: list[str]) -> tuple:
    request = search_pb2.DescribeCollectionRequest(name=name)
    info = stub.DescribeCollection(request, timeout=60, wait_for_ready=True)
    got = stub.Get(search_pb2.GetRequest(collection=name, ids=ids, limit=1000), timeout=60)
    query = search_pb2.SearchRequest(collection=name, queries=[search_pb2.Query(id=ids[0])])
    hits = [h.id for h in stub.Search(query, timeout=60).results[0].hits]
    return info, sorted((i.id, i.label, i.uri) for i in got.items), hits


def test_search_service_restart_keeps_lite_collections(
    embedder_server, caltech: Path, tmp_path: Path
) -> None:
    files = sorted((caltech / "train").glob("*/*.jpg"))[::13][:12]
    items = [
        search_pb2.Item(id=f"k{i}", image=p.read_bytes(), label=p.parent.name, display_uri=p.name)
        for i, p in enumerate(files)
    ]
    ids = [i.id for i in items]
    search = start_search(embedder_server.address, str(tmp_path / "restart.db"))
    try:
        channel = grpc.insecure_channel(search.address)
        stub = search_pb2_grpc.SearchServiceStub(channel)
        stub.CreateCollection(search_pb2.CreateCollectionRequest(name="kept"), timeout=60)
        summary = stub.Ingest(iter([search_pb2.IngestRequest(collection="kept", items=items)]))
        assert (summary.stored, summary.failed) == (len(items), 0)
        before = _snapshot(stub, "kept", ids)
        assert before[0].count == len(items) and len(before[1]) == len(items)

        search.kill()  # SIGKILL right after the acknowledgement: no drain, no close
        search.restart()
        assert _snapshot(stub, "kept", ids) == before  # same channel: reconnects by itself

        assert search.stop() == 0  # graceful this time
        search.start()
        assert _snapshot(stub, "kept", ids) == before
        listed = stub.ListCollections(search_pb2.ListCollectionsRequest(), timeout=60)
        assert [c.name for c in listed.collections] == ["kept"]
        channel.close()
    finally:
        search.kill()
