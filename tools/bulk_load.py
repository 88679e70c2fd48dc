"""Milvus bulk insert into a search-service collection: the path for back catalogues.

Why: at 10M+ images, streaming every row through the service and ``insert`` is the slow part
once the embeddings exist (e.g. ``ris collections export --vectors`` from a Lite prototype,
or an offline embedding job). Milvus' bulk insert reads files from its own storage and writes
sealed segments directly. This module turns export-style JSON Lines ({"id", "vector",
"label", "uri", "metadata"}) into Milvus row-based JSON files in the collection's schema
(validated with the service's own checks), starts one import per file and waits until every
row is searchable.

Rules that keep it safe: the target must be a collection the search service created (its
``ris.*`` properties say model and dimension), empty (bulk insert does not upsert: a second load
would duplicate ids) and not augmented (blends need every neighbour; create it with
augmentation off, or load, then ``ris collections reindex``). A bad line is reported with its
number and reason and skipped; nothing else is dropped.

pymilvus 3.0 keeps bulk insert only in its ORM API (``utility.do_bulk_insert``, deprecated
there, to be removed in 3.1; Milvus 2.4+ also serves the REST ``/v2/vectordb/jobs/import``):
the calls are kept in ``_orm_connection`` and ``run_imports`` and their deprecation warning is
silenced there, once, so a pymilvus that drops them fails here, loudly, and nowhere else.

Files must be where Milvus reads them: with local storage (standalone, ``milvus-server``) any
absolute path on Milvus' machine; with MinIO/S3, upload the staging folder to the bucket and pass
its object prefix as ``milvus_prefix``.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymilvus import MilvusClient, PyMilvusDeprecationWarning, connections, utility

from ris.common.errors import InvalidArgument
from ris.search.store_schema import (
    CollectionMeta,
    Record,
    check_record_fields,
    meta_from,
    to_row,
    vector_problem,
)

ROWS_PER_FILE = 10_000  # ~200 MB of JSON at 2048-d; Milvus 2.3 takes up to 16 GB a file
IMPORT_TIMEOUT_S = 3600.0
POLL_S = 1.0


@dataclass
class Rejected:
    line: int
    reason: str


@dataclass
class StagedFiles:
    """Row files written for one load, and what was left out."""

    paths: list[Path] = field(default_factory=list)
    rows: int = 0
    rejected: list[Rejected] = field(default_factory=list)


@dataclass
class LoadResult:
    rows_imported: int
    rows_visible: int
    rejected: list[Rejected]
    stage_s: float
    import_s: float
    visible_s: float


def target_meta(client: MilvusClient, collection: str) -> CollectionMeta:
    """The collection's meta, refusing targets a bulk load would corrupt (see module doc)."""
    if not client.has_collection(collection):
        raise InvalidArgument(f"collection {collection!r} not found: create it with the service")
    meta = meta_from(collection, client.describe_collection(collection), lambda: "COSINE")
    if not meta.model_version:
        raise InvalidArgument(
            f"collection {collection!r} has no ris.* properties: create it with the service"
        )
    if meta.augmented:
        raise InvalidArgument(
            f"collection {collection!r} is augmented (augmentation_top_n "
            f"{meta.augment_top_n}): bulk rows carry no blends; create it with augmentation "
            "off (`ris collections create NAME --augmentation 0`)"
        )
    rows = count(client, collection)
    if rows:
        raise InvalidArgument(
            f"collection {collection!r} holds {rows} rows: bulk insert does not upsert, so load "
            "only into an empty collection"
        )
    return meta


def count(client: MilvusClient, collection: str) -> int:
    result = client.query(
        collection, filter="", output_fields=["count(*)"], consistency_level="Strong"
    )
    return int(result[0]["count(*)"])


def record_from_line(text: str, dim: int, metric: str) -> Record:
    """One export line as a Record, checked as the service checks ingest and queries
    (InvalidArgument): a vector that could not be searched is never stored."""
    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"not JSON ({exc.msg})") from exc
    if not isinstance(item, dict):
        raise InvalidArgument("not a JSON object")
    vector = item.get("vector")
    if not isinstance(vector, list) or len(vector) != dim:
        got = len(vector) if isinstance(vector, list) else type(vector).__name__
        raise InvalidArgument(f"vector: expected {dim} numbers, got {got}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in vector):
        raise InvalidArgument("vector: non-numeric values")
    if problem := vector_problem(vector, metric):
        raise InvalidArgument(problem)
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InvalidArgument("metadata: must map strings to strings")
    record = Record(
        id=str(item.get("id") or ""),
        vector=[float(v) for v in vector],
        label=str(item.get("label") or ""),
        uri=str(item.get("uri") or ""),
        metadata=metadata,
    )
    check_record_fields(record.id, record.label, record.uri, record.metadata)
    return record


def stage(
    lines: Iterable[str],
    meta: CollectionMeta,
    staging_dir: Path,
    rows_per_file: int = ROWS_PER_FILE,
    on_row: Callable[[], None] | None = None,
) -> StagedFiles:
    """Write ``lines`` as Milvus row-based JSON files ({"rows": [...]}) under ``staging_dir``,
    each checked against ``meta`` (its dim and metric).
    Ids repeated within the input are rejected after their first line (Milvus would keep both)."""
    staging_dir.mkdir(parents=True, exist_ok=True)
    staged = StagedFiles()
    seen: set[str] = set()
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        path = staging_dir / f"rows-{len(staged.paths):05d}.json"
        path.write_text(json.dumps({"rows": batch}))
        staged.paths.append(path)
        staged.rows += len(batch)
        batch.clear()

    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = record_from_line(text, meta.dim, meta.metric)
        except InvalidArgument as exc:
            staged.rejected.append(Rejected(number, str(exc)))
            continue
        if record.id in seen:
            staged.rejected.append(Rejected(number, f"id {record.id!r} repeated"))
            continue
        seen.add(record.id)
        batch.append(to_row(record, augmented=False))
        if on_row:
            on_row()
        if len(batch) >= rows_per_file:
            flush()
    if batch:
        flush()
    return staged


@contextlib.contextmanager
def _orm_connection(client_kwargs: dict[str, Any]) -> Iterator[str]:
    """An ORM connection's alias for the bulk-insert calls (pymilvus 3.0's MilvusClient has
    none), with their deprecation warning silenced inside (see the module doc)."""
    alias = f"ris-bulk-{uuid.uuid4().hex[:8]}"
    kwargs = {k: v for k, v in client_kwargs.items() if k != "timeout" and v not in ("", None)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PyMilvusDeprecationWarning)
        connections.connect(alias=alias, **kwargs)
        try:
            yield alias
        finally:
            connections.disconnect(alias)


def run_imports(
    alias: str,
    collection: str,
    milvus_paths: list[str],
    timeout_s: float,
    on_file: Callable[[int], None] | None = None,
) -> int:
    """One import task per file, polled until each completes; rows imported. A failed task
    raises with Milvus' reason (rows of files already imported stay: load is per file)."""
    deadline = time.monotonic() + timeout_s
    imported = 0
    for path in milvus_paths:
        task = utility.do_bulk_insert(collection, files=[path], using=alias)
        while True:
            state = utility.get_bulk_insert_state(task, using=alias)
            if state.state_name == "Completed":
                imported += int(state.row_count)
                if on_file:
                    on_file(int(state.row_count))
                break
            if state.state_name == "Failed":
                reason = state.infos.get("failed_reason", "")
                raise RuntimeError(
                    f"bulk insert of {path} failed: {reason} ({imported} rows of earlier files "
                    "were imported: drop and recreate the collection before loading again)"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"bulk insert of {path} not done within {timeout_s:.0f} s")
            time.sleep(POLL_S)
    return imported


def wait_visible(client: MilvusClient, collection: str, rows: int, timeout_s: float) -> int:
    """Imported segments are searchable once indexed and loaded: wait for the count."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = count(client, collection)
        if seen >= rows or time.monotonic() > deadline:
            return seen
        time.sleep(POLL_S)


def milvus_path(local: Path, staging_dir: Path, milvus_prefix: str) -> str:
    """Where Milvus finds a staged file: its absolute path (local storage) or the same name
    under the object-storage prefix the staging folder was uploaded to."""
    if not milvus_prefix:
        return str(local.resolve())
    return f"{milvus_prefix.rstrip('/')}/{local.relative_to(staging_dir).as_posix()}"


def bulk_load(
    client_kwargs: dict[str, Any],
    collection: str,
    lines: Iterable[str],
    staging_dir: Path,
    *,
    milvus_prefix: str = "",
    rows_per_file: int = ROWS_PER_FILE,
    timeout_s: float = IMPORT_TIMEOUT_S,
    on_row: Callable[[], None] | None = None,
    on_file: Callable[[int], None] | None = None,
) -> LoadResult:
    """Stage ``lines`` for ``collection``, import them, wait until they are searchable."""
    client = MilvusClient(**client_kwargs)
    try:
        meta = target_meta(client, collection)
        started = time.perf_counter()
        staged = stage(lines, meta, staging_dir, rows_per_file, on_row)
        staged_at = time.perf_counter()
        paths = [milvus_path(p, staging_dir, milvus_prefix) for p in staged.paths]
        with _orm_connection(client_kwargs) as alias:
            imported = run_imports(alias, collection, paths, timeout_s, on_file)
        imported_at = time.perf_counter()
        visible = wait_visible(client, collection, imported, timeout_s)
        return LoadResult(
            rows_imported=imported,
            rows_visible=visible,
            rejected=staged.rejected,
            stage_s=staged_at - started,
            import_s=imported_at - staged_at,
            visible_s=time.perf_counter() - imported_at,
        )
    finally:
        client.close()
