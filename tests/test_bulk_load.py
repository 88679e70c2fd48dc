"""Milvus bulk insert into a search-service collection (ris.tools.bulk_load) on a real Milvus
2.3.5 standalone: what the service exported loads back and searches the same; bad lines are
reported, not loaded; targets a load would corrupt are refused."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from search_fixtures import Photo, running_search, search_config

from ris.client import IngestItem, RisClient
from ris.common.errors import InvalidArgument
from ris.search.config import SearchConfig
from ris.search.store_connection import client_kwargs
from ris.tools.bulk_load import bulk_load

pytestmark = pytest.mark.milvus_server
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server_search(milvus_server, embedder_server, caltech: Path) -> Iterator[tuple[str, str]]:
    """A search service on the standalone server: (its address, the Milvus URI)."""
    config = search_config(embedder_server.address, milvus_server.uri, allowed_roots=[caltech])
    with running_search(config) as server:
        yield server.address, milvus_server.uri


def _milvus(uri: str) -> dict[str, object]:
    return client_kwargs(SearchConfig(milvus_uri=uri))


def _exported(ris: RisClient, collection: str) -> list[str]:
    """What `ris collections export --vectors` writes, line by line."""
    from ris.cli.export import item_record

    items = ris.iter_items(collection, include_vectors=True)
    return [json.dumps(item_record(item)) for item in items]


def test_exported_items_bulk_load_and_search_the_same(
    server_search: tuple[str, str],
    photos: list[Photo],
    query_photos: dict[str, bytes],
    tmp_path: Path,
) -> None:
    address, uri = server_search
    source, target = f"bsrc_{uuid.uuid4().hex[:8]}", f"bdst_{uuid.uuid4().hex[:8]}"
    with RisClient(address=address, timeout=120) as ris:
        ris.create_collection(source, augmentation_top_n=0)
        items = [IngestItem(p.id, path=p.path, label=p.label, metadata={"n": p.id}) for p in photos]
        assert ris.ingest(source, items).stored == len(photos)
        lines = _exported(ris, source)
        dim = len(json.loads(lines[0])["vector"])
        bad = [
            "{not json",
            json.dumps({"id": "short", "vector": [0.1, 0.2]}),
            json.dumps({"id": "nan", "vector": [math.nan] * dim}),
            json.dumps({"id": "zero", "vector": [0.0] * dim}),  # COSINE: NaN scores
            json.dumps({"id": "huge", "vector": [1e30] * dim}),  # scores overflow float32
            json.dumps({"id": "text", "vector": ["0.1"] * dim}),
            lines[0],  # its id again
            json.dumps({"id": "", "vector": [0.1] * dim}),
        ]
        ris.create_collection(target, augmentation_top_n=0)
        result = bulk_load(_milvus(uri), target, lines + bad, tmp_path / "staging", rows_per_file=7)
        assert result.rows_imported == result.rows_visible == len(photos)
        first_bad = len(lines) + 1
        assert [(r.line, r.reason.split(":")[0]) for r in result.rejected] == [
            (first_bad, "not JSON (Expecting property name enclosed in double quotes)"),
            (first_bad + 1, "vector"),
            (first_bad + 2, "vector has NaN or infinite values"),
            (first_bad + 3, "vector is all zeros"),
            (first_bad + 4, "vector values must be within +-1e+06 (scores would overflow)"),
            (first_bad + 5, "vector"),
            (first_bad + 6, f"id {json.loads(lines[0])['id']!r} repeated"),
            (first_bad + 7, "id is empty"),
        ]
        assert len(list((tmp_path / "staging").glob("rows-*.json"))) == math.ceil(len(photos) / 7)
        assert ris.count(target) == len(photos)
        for data in query_photos.values():
            streamed = ris.search(source, data, top_k=5, expansion=False)
            loaded = ris.search(target, data, top_k=5, expansion=False)
            assert [h.id for h in loaded.hits] == [h.id for h in streamed.hits]
            assert [h.metadata for h in loaded.hits] == [h.metadata for h in streamed.hits]
            for a, b in zip(loaded.hits, streamed.hits, strict=True):
                assert a.score == pytest.approx(b.score, abs=1e-5)

        # Loaded once: a second load would duplicate every id (bulk insert does not upsert).
        with pytest.raises(InvalidArgument, match="holds 20 rows"):
            bulk_load(_milvus(uri), target, lines, tmp_path / "again")
        ris.drop_collection(source)
        ris.drop_collection(target)


def test_targets_a_load_would_corrupt_are_refused(
    server_search: tuple[str, str], tmp_path: Path
) -> None:
    address, uri = server_search
    augmented = f"baug_{uuid.uuid4().hex[:8]}"
    with RisClient(address=address, timeout=60) as ris:
        ris.create_collection(augmented)  # the default: augmented
        with pytest.raises(InvalidArgument, match="is augmented"):
            bulk_load(_milvus(uri), augmented, [], tmp_path)
        ris.drop_collection(augmented)
    with pytest.raises(InvalidArgument, match="not found"):
        bulk_load(_milvus(uri), "no_such_collection", [], tmp_path)
    assert not list(tmp_path.iterdir())  # refused before anything was staged


def test_the_script_refuses_milvus_lite(tmp_path: Path) -> None:
    """Bulk insert is a server feature: the script says so instead of failing inside pymilvus."""
    items = tmp_path / "items.jsonl"
    items.write_text("")
    command = [sys.executable, str(ROOT / "scripts" / "bulk_load.py"), str(items)]
    command += ["--collection", "c", "--staging-dir", str(tmp_path / "s")]
    done = subprocess.run(
        [*command, "--milvus-uri", str(tmp_path / "lite.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "needs a Milvus server" in done.stderr
