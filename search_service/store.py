"""The reads and writes on Milvus: collections, upsert, search, get, page, delete, count.

``MilvusStore`` holds one connection (store_connection.py) and runs every call through
``_guard``, which turns the driver's failures into typed ServiceErrors; what a collection and
a row look like (fields, limits, properties) is store_schema.py's. The service's RPCs over the
store and the embedder are operations.py's, not this module's.

Works on Milvus Lite (a local ``*.db`` path) and on Milvus 2.3+ servers through ``MilvusClient``.

Consistency: collections are created with ``Strong`` consistency and reads pass
``consistency_level="Strong"`` unless the caller names another level, so a search/get/count sees
every write acknowledged before it (Ingest returns only after its upserts are acknowledged, hence
fresh items are searchable when it returns). Strong costs a wait for Milvus' next time tick on
every read (~290 ms on a server with Milvus' default 200 ms tick, docs/benchmarks.md "Search
reads"); the Search RPC therefore reads at ``milvus_search_consistency``
(``Session`` by default: this process's own writes are still seen, since pymilvus keeps each
collection's last write timestamp and asks for it, but nothing else is waited for).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
from pymilvus.exceptions import MilvusException

from ris.common import deadlines
from ris.common.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
    Unavailable,
)
from ris.search.config import SearchConfig
from ris.search.filters import build_filter, combine, quote
from ris.search.indexing import index_size_warning, search_params
from ris.search.lite_limit import LiteSizeWatch
from ris.search.store_connection import close_client, lite_path, open_client
from ris.search.store_schema import (
    MAX_QUERY_LIMIT,
    OUTPUT_FIELDS,
    RAW_SUFFIX,
    VECTOR_FIELD,
    CollectionMeta,
    Hit,
    Record,
    Row,
    check_new_collection,
    collection_properties,
    from_rows,
    meta_from,
    milvus_schema,
    read_fields,
    str_map,
    to_row,
    validate_name,
    vector_dims,
    vector_index,
    write_batches,
)
from ris.search.vector_cache import VectorCache

log = logging.getLogger(__name__)
T = TypeVar("T")

STRONG = "Strong"  # the level of every read that does not name one


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    text = str(exc).lower()
    return any(
        s in text for s in ("unavailable", "connect", "deadline exceeded", "timeout", "closed")
    )


def _is_collection_gone(exc: BaseException) -> bool:
    """Milvus' "collection not found" (code 100 on 2.3 and Lite), however it is worded."""
    text = str(exc).lower()
    return getattr(exc, "code", None) == 100 or any(
        s in text for s in ("collection not found", "can't find collection", "collection not exist")
    )


class MilvusStore:
    """A connection to one Milvus (Lite or server) and the operations the service needs."""

    def __init__(self, config: SearchConfig) -> None:
        self._config = config
        self._lite_path = lite_path(config)
        self._loaded: set[str] = set()
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        # Milvus Lite 3.2 races concurrent flushes (and writes during a flush): "current_seq is
        # monotonic" errors after the rows were written. One writer at a time there; servers
        # take concurrent writes.
        self._write_lock: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if self._lite_path else contextlib.nullcontext()
        )
        self._client = self._guard(lambda: open_client(config))
        self._lite_watch = LiteSizeWatch(config.lite_warn_rows if self._lite_path else 0)
        # Lite only: one owner, so its own writes keep the cache exact (vector_cache.py).
        cache_bytes = config.lite_vector_cache_mb * 2**20 if self._lite_path else 0
        self._cache = VectorCache(cache_bytes) if cache_bytes else None

    @property
    def is_lite(self) -> bool:
        return bool(self._lite_path)

    # -- connection -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the client; for Lite also stop its in-process server so the dir is released."""
        close_client(self._client, self._lite_path)

    def _timeout(self) -> float:
        """milvus_timeout_s, capped by what is left of the calling request's deadline."""
        return deadlines.timeout(self._config.milvus_timeout_s)

    def _query(
        self, name: str, where: str, fields: list[str], consistency: str = STRONG, **kwargs: Any
    ) -> list[Any]:
        """One read (Strong unless told), bounded by the caller's deadline, errors typed."""
        return self._guard(
            lambda: self._client.query(
                name,
                filter=where,
                output_fields=fields,
                consistency_level=consistency,
                timeout=self._timeout(),
                **kwargs,
            )
        )

    def _guard(self, fn: Callable[[], T]) -> T:
        """Run one Milvus call, turning its failures into typed errors."""
        try:
            return fn()
        except ServiceError:
            raise
        except (MilvusException, grpc.RpcError, OSError) as exc:
            if "not loaded" in str(exc).lower():
                # Milvus restarted and released it (or is reloading it): load again on the
                # next call instead of trusting our "loaded once" memory forever.
                self._loaded.clear()
                raise Unavailable(f"Milvus: collection not loaded (restarted?): {exc}") from exc
            if deadlines.expired():  # the caller's deadline capped this call's timeout
                raise DeadlineExceeded("deadline exceeded while calling Milvus") from exc
            if _is_collection_gone(exc):  # dropped between our describe and this call
                self._loaded.clear()
                raise NotFound("collection not found (dropped meanwhile)") from exc
            if _is_unavailable(exc):
                raise Unavailable(f"Milvus unavailable: {exc}") from exc
            raise ServiceError(f"Milvus error: {exc}") from exc  # INTERNAL: logged, not returned

    # -- collections ------------------------------------------------------------------------

    def list_collections(self) -> list[str]:
        """User collections (augmented collections' raw companions are hidden)."""
        names = self._guard(self._client.list_collections)
        return sorted(n for n in names if not n.endswith(RAW_SUFFIX))

    def exists(self, name: str) -> bool:
        return bool(self._guard(lambda: self._client.has_collection(name)))

    def create_collection(self, meta: CollectionMeta) -> None:
        """Schema, index and properties in one go; the index exists before any insert."""
        check_new_collection(meta)
        schema = milvus_schema(meta)
        index = vector_index(meta, self.is_lite)
        properties = collection_properties(meta)
        with self._lock:
            if self.exists(meta.name):
                raise AlreadyExists(f"collection {meta.name!r} already exists")
            if meta.augmented:  # first, so an augmented collection never lacks its raw copy
                self._create_raw(meta)
            self._guard(
                lambda: self._client.create_collection(
                    meta.name,
                    schema=schema,
                    index_params=index,
                    consistency_level=STRONG,
                    properties=properties,
                )
            )
            self._loaded.discard(meta.name)
        self.ensure_loaded(meta.name)
        if meta.augmented:
            self.ensure_loaded(meta.raw_name)

    def _create_raw(self, meta: CollectionMeta) -> None:
        """The raw companion: the same rows with raw embeddings, indexed like the main
        collection (neighbour searches and raw-space queries run on it, filters included). A
        leftover from an interrupted create is replaced."""
        if self.exists(meta.raw_name):
            self._guard(lambda: self._client.drop_collection(meta.raw_name))
        self._guard(
            lambda: self._client.create_collection(
                meta.raw_name,
                schema=milvus_schema(meta.raw()),
                index_params=vector_index(meta, self.is_lite),
                consistency_level=STRONG,
                properties={"ris.raw_of": meta.name},
            )
        )
        self._loaded.discard(meta.raw_name)

    def describe(self, name: str) -> CollectionMeta:
        """The collection's stored description; NotFound when it does not exist (an augmented
        collection's raw twin is internal: not found by name either)."""
        validate_name(name)
        if name.endswith(RAW_SUFFIX) or not self.exists(name):
            raise NotFound(f"collection {name!r} not found")
        desc = self._guard(lambda: self._client.describe_collection(name))
        if not vector_dims(desc):
            raise FailedPrecondition(
                f"collection {name!r} has no {VECTOR_FIELD!r} field: not made by this service"
            )
        return meta_from(name, desc, lambda: self._index_metric(name))

    def _index_metric(self, name: str) -> str:
        """Fallback for collections made elsewhere: read the metric from the index."""
        info = self._guard(lambda: self._client.describe_index(name, VECTOR_FIELD))
        return str(info.get("metric_type", "COSINE")).upper()

    def drop_collection(self, name: str) -> bool:
        validate_name(name)
        if name.endswith(RAW_SUFFIX):  # a raw twin goes with its collection only
            raise InvalidArgument(
                f"name: collection names ending in {RAW_SUFFIX!r} are reserved (an augmented "
                "collection's internal companion, dropped with it)"
            )
        with self._lock:
            if not self.exists(name):
                return False
            self._guard(lambda: self._client.drop_collection(name))
            self._loaded.discard(name)
            self._lite_watch.forget(name)
            raw = name + RAW_SUFFIX
            if self._cache is not None:
                self._cache.forget(name)
                self._cache.forget(raw)
            if self.exists(raw):
                self._guard(lambda: self._client.drop_collection(raw))
                self._loaded.discard(raw)
        return True

    def ensure_loaded(self, name: str) -> None:
        """Load a collection into memory once per process (after a restart it starts released).

        One lock per collection: a slow (re)load, e.g. ~25 s after a Milvus restart, holds up the
        calls that need that collection, not every call."""
        if name in self._loaded:
            return
        with self._lock:
            lock = self._load_locks.setdefault(name, threading.Lock())
        with lock:
            if name in self._loaded:
                return
            state = str(self._guard(lambda: self._client.get_load_state(name)).get("state"))
            if not state.endswith("Loaded"):  # NotLoad, NotExist, or Loading after a restart
                self._guard(lambda: self._client.load_collection(name))
            self._loaded.add(name)

    # -- rows -------------------------------------------------------------------------------

    def upsert(self, meta: CollectionMeta, records: Sequence[Record]) -> int:
        """Insert or replace rows by id; returns how many were written."""
        written = 0
        for batch in write_batches(records, meta.dim):
            rows = [to_row(r, meta.augmented) for r in batch]
            self._upsert(meta.name, rows)
            written += len(rows)
        if not meta.name.endswith(RAW_SUFFIX):
            self._lite_watch.written(meta.name, written, lambda: self.count(meta.name))
        return written

    def size_warnings(self, meta: CollectionMeta, count: int) -> list[str]:
        """Warnings about a collection of ``count`` rows: Lite past its limit (lite_limit.py),
        an IVF index sized for far fewer rows (indexing.py)."""
        index = index_size_warning(meta.index, count, meta.dim)
        return self._lite_watch.warnings(meta.name, count) + ([index] if index else [])

    def raw_vectors(
        self, meta: CollectionMeta, ids: Sequence[str], consistency: str = STRONG
    ) -> dict[str, np.ndarray]:
        """Raw embeddings by id from an augmented collection's companion (absent ids left out)."""
        return self.vectors(meta.raw_name, ids, consistency)

    def vectors(
        self, name: str, ids: Sequence[str], consistency: str = STRONG
    ) -> dict[str, np.ndarray]:
        """Stored vectors by id (absent ids left out); on Lite through the vector cache."""
        if self._cache is None:
            rows = self.get_all(name, ids, include_vectors=True, consistency=consistency)
            return {r.id: np.asarray(r.vector, np.float32) for r in rows if r.vector}
        found, missing = self._cache.get_many(name, ids)
        if missing:
            generation = self._cache.generation(name)
            rows = self.get_all(name, missing, include_vectors=True, consistency=consistency)
            read = {r.id: np.asarray(r.vector, np.float32) for r in rows if r.vector}
            self._cache.put_many(name, read, generation)
            found.update(read)
        return found

    def fill_raw_vectors(self, meta: CollectionMeta, rows: Sequence[Row]) -> None:
        """Give an augmented collection's rows their raw embeddings (not the stored blends)."""
        raw = self.raw_vectors(meta, [r.id for r in rows])
        for r in rows:
            r.vector = raw[r.id].tolist() if r.id in raw else None

    def get_all(
        self,
        name: str,
        ids: Sequence[str],
        include_vectors: bool = False,
        include_augmentation: bool = False,
        consistency: str = STRONG,
    ) -> list[Row]:
        """Rows for any number of ids (absent ones left out), in MAX_QUERY_LIMIT-sized queries."""
        unique, rows = sorted(set(ids)), []
        for start in range(0, len(unique), MAX_QUERY_LIMIT):
            chunk = unique[start : start + MAX_QUERY_LIMIT]
            rows += self.get(
                name,
                ids=chunk,
                limit=len(chunk),
                include_vectors=include_vectors,
                include_augmentation=include_augmentation,
                consistency=consistency,
            )
        return rows

    def matching_batches(
        self, name: str, ids: Sequence[str] = (), expr: str = ""
    ) -> Iterator[list[str]]:
        """Ids of rows matching ids and/or a filter (AND), up to MAX_QUERY_LIMIT at a time, for a
        caller that deletes each batch before taking the next (the query runs again each round;
        bounded at 10,000 rounds)."""
        where = combine(build_filter(ids=ids), expr)
        if not where:
            raise InvalidArgument("delete needs ids or a filter")
        self.ensure_loaded(name)
        for _ in range(10_000):
            found = self._query(name, where, ["id"], limit=MAX_QUERY_LIMIT)
            keys = [str(r["id"]) for r in found]
            if not keys:
                return
            yield keys
            if len(keys) < MAX_QUERY_LIMIT:
                return

    def delete_keys(self, name: str, keys: Sequence[str]) -> None:
        """Delete rows by primary key, 1,000 per call."""
        for start in range(0, len(keys), 1000):
            self._delete_ids(name, list(keys[start : start + 1000]))

    def _upsert(self, name: str, rows: list[dict[str, Any]]) -> None:
        with self._write_lock:
            if self._cache is not None:
                self._cache.invalidate(name, (str(r["id"]) for r in rows))
            self._guard(lambda: self._client.upsert(name, rows, timeout=self._timeout()))

    def _delete_ids(self, name: str, ids: list[str]) -> None:
        with self._write_lock:
            if self._cache is not None:
                self._cache.invalidate(name, ids)
            self._guard(lambda: self._client.delete(name, ids=ids, timeout=self._timeout()))

    def flush(self, name: str) -> None:
        """Persist growing segments (Lite writes its files; servers seal segments)."""
        with self._write_lock:
            self._guard(lambda: self._client.flush(name, timeout=self._timeout()))

    def search(
        self,
        meta: CollectionMeta,
        vectors: Sequence[Sequence[float] | np.ndarray],
        top_k: int,
        expr: str = "",
        output_fields: Sequence[str] = OUTPUT_FIELDS,
        consistency: str = STRONG,
    ) -> list[list[Hit]]:
        """Top-k per vector, best first; scores are higher-is-better for every metric."""
        if not vectors:
            return []
        self.ensure_loaded(meta.name)
        params = {"metric_type": meta.metric, "params": search_params(meta.index, top_k)}
        data = [np.asarray(v, dtype=np.float32).tolist() for v in vectors]
        result = self._guard(
            lambda: self._client.search(
                meta.name,
                data=data,
                limit=top_k,
                filter=expr,
                output_fields=list(output_fields),
                search_params=params,
                anns_field=VECTOR_FIELD,
                consistency_level=consistency,
                timeout=self._timeout(),
            )
        )
        sign = -1.0 if meta.metric == "L2" else 1.0
        out = []
        for hits in result:
            row_hits = []
            for h in hits:
                ent = h.get("entity") or {}
                row_hits.append(
                    Hit(
                        id=str(h.get("id", ent.get("id"))),
                        score=sign * float(h["distance"]),
                        label=str(ent.get("label", "")),
                        uri=str(ent.get("uri", "")),
                        metadata=str_map(ent.get("metadata")),
                    )
                )
            row_hits.sort(key=lambda x: x.score, reverse=True)
            out.append(row_hits)
        return out

    def get(
        self,
        name: str,
        ids: Sequence[str] = (),
        expr: str = "",
        limit: int = 100,
        include_vectors: bool = False,
        include_augmentation: bool = False,
        consistency: str = STRONG,
    ) -> list[Row]:
        """Rows by ids and/or a filter expression (AND), up to ``limit``."""
        where = combine(build_filter(ids=ids), expr)
        if not where and limit < 1:
            return []
        self.ensure_loaded(name)
        fields = read_fields(include_vectors, include_augmentation)
        res = self._query(name, where, fields, consistency, limit=min(limit, MAX_QUERY_LIMIT))
        rows = from_rows(res, include_vectors, include_augmentation)
        if ids:
            order = {v: i for i, v in enumerate(ids)}
            rows.sort(key=lambda r: order.get(r.id, len(order)))
        return rows

    def page(
        self, name: str, after: str, limit: int, expr: str = "", include_vectors: bool = False
    ) -> list[Row]:
        """The ``limit`` smallest-id rows with id > ``after`` (all when ``after`` is empty)
        matching ``expr``, in id order: one page of a listing whose cursor is the last id.

        ``iterator`` is what pymilvus' query iterator sends: with it Milvus Lite returns the
        smallest ids (without it, any ``limit`` matches); Milvus 2.3 does so either way."""
        where = combine(f"id > {quote(after)}", expr)  # ids are never empty: "" is the start
        self.ensure_loaded(name)
        fields = read_fields(include_vectors, augmentation=False)
        res = self._query(name, where, fields, limit=min(limit, MAX_QUERY_LIMIT), iterator="True")
        rows = from_rows(res, include_vectors, augmentation=False)
        rows.sort(key=lambda r: r.id.encode())
        return rows

    def delete(self, name: str, ids: Sequence[str] = (), expr: str = "") -> int:
        """Delete rows by ids and/or filter (AND); returns how many existing rows went.

        Matching ids are queried first and deleted by primary key, so the count is exact on every
        backend (Milvus 2.3 reports requested, not existing, keys) and no row is deleted twice.
        """
        deleted = 0
        for keys in self.matching_batches(name, ids, expr):
            self.delete_keys(name, keys)
            deleted += len(keys)
        return deleted

    def count(self, name: str, expr: str = "") -> int:
        """Live rows (deleted ones excluded, unlike ``num_entities``)."""
        self.ensure_loaded(name)
        res = self._query(name, expr, ["count(*)"])
        return int(res[0]["count(*)"]) if res else 0
