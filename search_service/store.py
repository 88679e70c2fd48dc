"""Everything Milvus: schema, collection properties, upsert, search, query, delete, count.

Works on Milvus Lite (a local ``*.db`` path) and on Milvus 2.3+ servers through ``MilvusClient``.

Consistency: collections are created with ``Strong`` consistency and every read passes
``consistency_level="Strong"``, so a search/get/count sees every write acknowledged before it
(Ingest returns only after its upserts are acknowledged, hence fresh items are searchable when it
returns). Strong costs a wait for the query nodes to catch up (milliseconds on standalone); the
default ``Bounded`` would let a search miss rows written in the last few seconds.

The model that fills a collection (name, version, dim) and the index choice are stored as
collection properties (``ris.*``), which both Lite and Milvus 2.3+ keep.

An augmented collection (database-side augmentation, see augmentation.py) has a companion
``<name>__raw``: the same rows with the raw embeddings (Milvus 2.3 allows one vector field per
collection). The main one stores the blended vectors, plus each item's neighbour list.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from pymilvus import DataType, MilvusClient
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
from ris.search.filters import build_filter, check_metadata_key, combine, quote
from ris.search.indexing import (
    METRICS,
    IndexPlan,
    index_size_warning,
    plan_index,
    search_params,
)
from ris.search.lite_limit import LiteSizeWatch

log = logging.getLogger(__name__)
T = TypeVar("T")

VECTOR_FIELD = "embedding"
AUGMENTATION_FIELD = "augmentation"  # augmented collections: {"neighbours": [ids], "sims": [..]}
RAW_SUFFIX = "__raw"  # companion collection of raw embeddings
MAX_ID_BYTES = 512
MAX_LABEL_BYTES = 1024
MAX_URI_BYTES = 4096
MAX_METADATA_BYTES = 60_000  # Milvus JSON fields hold up to 64 KiB
MAX_WRITE_BYTES = 16 * 1024 * 1024  # per upsert call, well under the 64 MB gRPC message limit
MAX_QUERY_LIMIT = 16384  # Milvus' offset+limit ceiling
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_OUTPUT = ("id", "label", "uri", "metadata")


@dataclass(frozen=True)
class CollectionMeta:
    """What a collection is: its vectors (dim, metric, index) and the model that fills it."""

    name: str
    dim: int
    metric: str
    index: IndexPlan
    model_name: str = ""
    model_version: str = ""
    description: str = ""
    augment_top_n: int = 0  # 0 = raw embeddings stored; else neighbours blended into each item
    augment_alpha: float = 3.0

    @property
    def augmented(self) -> bool:
        return self.augment_top_n > 0

    @property
    def raw_name(self) -> str:
        return self.name + RAW_SUFFIX

    def raw(self) -> CollectionMeta:
        """The raw companion of an augmented collection, as a collection of its own."""
        return dataclasses.replace(self, name=self.raw_name, augment_top_n=0)


@dataclass
class Record:
    """One row to write (``augmentation`` only for augmented collections)."""

    id: str
    vector: Sequence[float] | np.ndarray
    label: str = ""
    uri: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    augmentation: dict[str, Any] | None = None


@dataclass
class Row:
    """One stored row as read back (``vector`` only when asked for)."""

    id: str
    label: str
    uri: str
    metadata: dict[str, str]
    vector: list[float] | None = None
    augmentation: dict[str, Any] | None = None


@dataclass
class Hit:
    id: str
    score: float  # higher is better: similarity for COSINE/IP, negative distance for L2
    label: str
    uri: str
    metadata: dict[str, str]


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise InvalidArgument(
            f"collection name {name!r} invalid: letters, digits, underscores; "
            "starts with a letter or _; at most 255 characters"
        )
    return name


def check_record_fields(item_id: str, label: str, uri: str, metadata: dict[str, str]) -> None:
    """Raise InvalidArgument when a row would not fit the schema."""
    if not item_id:
        raise InvalidArgument("id is empty")
    if len(item_id.encode()) > MAX_ID_BYTES:
        raise InvalidArgument(f"id longer than {MAX_ID_BYTES} bytes")
    if len(label.encode()) > MAX_LABEL_BYTES:
        raise InvalidArgument(f"label longer than {MAX_LABEL_BYTES} bytes")
    if len(uri.encode()) > MAX_URI_BYTES:
        raise InvalidArgument(f"uri longer than {MAX_URI_BYTES} bytes")
    for key in metadata:
        check_metadata_key(key)
    if len(json.dumps(metadata).encode()) > MAX_METADATA_BYTES:
        raise InvalidArgument(f"metadata larger than {MAX_METADATA_BYTES} bytes as JSON")


def client_kwargs(cfg: SearchConfig) -> dict[str, Any]:
    """MilvusClient arguments for the configured target: Lite path, URI, or host/port with TLS.

    ``milvus_ca_cert`` implies TLS (``server_pem_path``: the CA/server certificate to trust);
    ``milvus_server_name`` overrides the name checked against the certificate (SNI).
    Token wins over user/password when both are given (that is pymilvus' rule too).
    """
    kwargs: dict[str, Any] = {"uri": cfg.milvus_target(), "timeout": cfg.milvus_timeout_s}
    if cfg.is_milvus_lite:
        return kwargs
    kwargs.update(
        user=cfg.milvus_user,
        password=cfg.milvus_password,
        token=cfg.milvus_token,
        db_name=cfg.milvus_db_name,
    )
    if cfg.milvus_secure or cfg.milvus_ca_cert or cfg.milvus_target().startswith("https://"):
        kwargs["secure"] = True
    if cfg.milvus_ca_cert:
        kwargs["server_pem_path"] = cfg.milvus_ca_cert
    if cfg.milvus_server_name:
        kwargs["server_name"] = cfg.milvus_server_name
    return kwargs


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


def _rows_bytes(record: Record, dim: int) -> int:
    meta = sum(len(k) + len(v) + 8 for k, v in record.metadata.items())
    extra = len(json.dumps(record.augmentation)) if record.augmentation else 0
    return 4 * dim + len(record.id) + len(record.label) + len(record.uri) + meta + extra + 64


def write_batches(
    records: Sequence[Record], dim: int, limit: int = MAX_WRITE_BYTES
) -> Iterator[list[Record]]:
    """Split rows into upsert calls of at most ``limit`` bytes (estimated)."""
    batch: list[Record] = []
    size = 0
    for rec in records:
        rec_size = _rows_bytes(rec, dim)
        if batch and size + rec_size > limit:
            yield batch
            batch, size = [], 0
        batch.append(rec)
        size += rec_size
    if batch:
        yield batch


class _LiteUnimplementedFilter(logging.Filter):
    """Drop the traceback Milvus Lite's in-process gRPC server logs for AllocTimestamp.

    pymilvus 3 asks for a timestamp while it waits for a new collection's index; Milvus Lite 3.2
    does not implement that call, pymilvus falls back, and nothing is wrong, but grpc logs an
    ERROR with a traceback that reads like a failure. Only that exact record is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (
            isinstance(exc, NotImplementedError)
            and "Method not implemented" in str(exc)
            and record.getMessage().startswith("Exception calling application")
        )


_LITE_FILTER = _LiteUnimplementedFilter()


class MilvusStore:
    """A connection to one Milvus (Lite or server) and the operations the service needs."""

    def __init__(self, config: SearchConfig) -> None:
        self._config = config
        self._lite_path = config.milvus_target() if config.is_milvus_lite else ""
        self._loaded: set[str] = set()
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        # Milvus Lite 3.2 races concurrent flushes (and writes during a flush): "current_seq is
        # monotonic" errors after the rows were written. One writer at a time there; servers
        # take concurrent writes.
        self._write_lock: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if self._lite_path else contextlib.nullcontext()
        )
        self._client = self._guard(self._connect)
        self._lite_watch = LiteSizeWatch(config.lite_warn_rows if self._lite_path else 0)

    @property
    def is_lite(self) -> bool:
        return bool(self._lite_path)

    # -- connection -------------------------------------------------------------------------

    def _connect(self) -> MilvusClient:
        if self._lite_path:
            Path(self._lite_path).parent.mkdir(parents=True, exist_ok=True)
            logging.getLogger("grpc._server").addFilter(_LITE_FILTER)  # idempotent
        # dedicated: this store owns its connection, so close() really closes it
        return MilvusClient(**client_kwargs(self._config), dedicated=True)

    def close(self) -> None:
        """Close the client; for Lite also stop its in-process server so the dir is released."""
        try:
            self._client.close()
        except Exception:  # closing must not mask the reason for stopping
            log.exception("closing the Milvus client failed")
        if self._lite_path:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self._lite_path)

    def _timeout(self) -> float:
        """milvus_timeout_s, capped by what is left of the calling request's deadline."""
        return deadlines.timeout(self._config.milvus_timeout_s)

    def _query(self, name: str, where: str, fields: list[str], **kwargs: Any) -> list[Any]:
        """One Strong read, bounded by the caller's deadline (``_timeout``), errors typed."""
        return self._guard(
            lambda: self._client.query(
                name,
                filter=where,
                output_fields=fields,
                consistency_level="Strong",
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
        validate_name(meta.name)
        if meta.name.endswith(RAW_SUFFIX):
            raise InvalidArgument(f"collection names ending in {RAW_SUFFIX!r} are reserved")
        if meta.augmented and len(meta.raw_name) > 255:
            raise InvalidArgument("augmented collections' names are at most 250 characters")
        if meta.metric not in METRICS:
            raise InvalidArgument(f"metric must be one of {METRICS}")
        if meta.dim < 1 or meta.dim > 32768:
            raise InvalidArgument(f"dim {meta.dim} out of range")
        schema = _schema(meta)
        index = _vector_index(meta)
        properties = {
            "ris.model_name": meta.model_name,
            "ris.model_version": meta.model_version,
            "ris.dim": str(meta.dim),
            "ris.metric": meta.metric,
            "ris.index_type": meta.index.index_type,
            "ris.index_params": json.dumps(meta.index.params, sort_keys=True),
            "ris.description": meta.description,
            "ris.augment_top_n": str(meta.augment_top_n),
            "ris.augment_alpha": repr(float(meta.augment_alpha)),
        }
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
                    consistency_level="Strong",
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
                schema=_schema(meta.raw()),
                index_params=_vector_index(meta),
                consistency_level="Strong",
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
        props = {str(k): str(v) for k, v in (desc.get("properties") or {}).items()}
        dims = [int(f["params"]["dim"]) for f in desc["fields"] if f["name"] == VECTOR_FIELD]
        if not dims:
            raise FailedPrecondition(
                f"collection {name!r} has no {VECTOR_FIELD!r} field: not made by this service"
            )
        dim = dims[0]
        metric = props.get("ris.metric", "")
        if metric not in METRICS:
            metric = self._index_metric(name)
        try:
            params = json.loads(props.get("ris.index_params", "{}"))
            plan = plan_index(props.get("ris.index_type", "AUTOINDEX"), params, "AUTOINDEX")
        except (ValueError, InvalidArgument):
            plan = IndexPlan("AUTOINDEX", {}, {})
        try:
            top_n = int(props.get("ris.augment_top_n", "0"))
            alpha = float(props.get("ris.augment_alpha", "3.0"))
        except ValueError:
            top_n, alpha = 0, 3.0
        if top_n and not any(f["name"] == AUGMENTATION_FIELD for f in desc["fields"]):
            top_n = 0  # properties edited by hand: without the field it cannot be augmented
        return CollectionMeta(
            name=name,
            dim=dim,
            metric=metric,
            index=plan,
            model_name=props.get("ris.model_name", ""),
            model_version=props.get("ris.model_version", ""),
            description=props.get("ris.description", desc.get("description", "")),
            augment_top_n=max(0, top_n),
            augment_alpha=alpha,
        )

    def _index_metric(self, name: str) -> str:
        """Fallback for collections made elsewhere: read the metric from the index."""
        info = self._guard(lambda: self._client.describe_index(name, VECTOR_FIELD))
        return str(info.get("metric_type", "COSINE")).upper()

    def drop_collection(self, name: str) -> bool:
        validate_name(name)
        if name.endswith(RAW_SUFFIX):  # a raw twin goes with its collection only
            return False
        with self._lock:
            if not self.exists(name):
                return False
            self._guard(lambda: self._client.drop_collection(name))
            self._loaded.discard(name)
            self._lite_watch.forget(name)
            raw = name + RAW_SUFFIX
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
            rows = [_row(r, meta.augmented) for r in batch]
            self._upsert(meta.name, rows)
            written += len(rows)
        if not meta.name.endswith(RAW_SUFFIX):
            self._lite_watch.written(meta.name, written, lambda: self.count(meta.name))
        return written

    def size_warnings(self, meta: CollectionMeta, count: int) -> list[str]:
        """Warnings about a collection of ``count`` rows: Lite past its limit (lite_limit.py),
        an IVF index sized for far fewer rows (indexing.py)."""
        index = index_size_warning(meta.index, count)
        return self._lite_watch.warnings(meta.name, count) + ([index] if index else [])

    def raw_vectors(self, meta: CollectionMeta, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Raw embeddings by id from an augmented collection's companion (absent ids left out)."""
        rows = self.get_all(meta.raw_name, ids, include_vectors=True)
        return {r.id: np.asarray(r.vector, np.float32) for r in rows if r.vector}

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
            self._guard(lambda: self._client.upsert(name, rows, timeout=self._timeout()))

    def _delete_ids(self, name: str, ids: list[str]) -> None:
        with self._write_lock:
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
        output_fields: Sequence[str] = _OUTPUT,
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
                consistency_level="Strong",
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
                        metadata=_str_map(ent.get("metadata")),
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
    ) -> list[Row]:
        """Rows by ids and/or a filter expression (AND), up to ``limit``."""
        where = combine(build_filter(ids=ids), expr)
        if not where and limit < 1:
            return []
        self.ensure_loaded(name)
        fields = [*_OUTPUT, VECTOR_FIELD] if include_vectors else list(_OUTPUT)
        if include_augmentation:
            fields.append(AUGMENTATION_FIELD)
        res = self._query(name, where, fields, limit=min(limit, MAX_QUERY_LIMIT))
        rows = _rows(res, include_vectors, include_augmentation)
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
        fields = [*_OUTPUT, VECTOR_FIELD] if include_vectors else list(_OUTPUT)
        res = self._query(name, where, fields, limit=min(limit, MAX_QUERY_LIMIT), iterator="True")
        rows = _rows(res, include_vectors, augmentation=False)
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


def _schema(meta: CollectionMeta) -> Any:
    schema = MilvusClient.create_schema(
        auto_id=False, enable_dynamic_field=False, description=meta.description
    )
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=meta.dim)
    schema.add_field("label", DataType.VARCHAR, max_length=MAX_LABEL_BYTES)
    schema.add_field("uri", DataType.VARCHAR, max_length=MAX_URI_BYTES)
    schema.add_field("metadata", DataType.JSON)
    if meta.augmented:
        schema.add_field(AUGMENTATION_FIELD, DataType.JSON)
    return schema


def _vector_index(meta: CollectionMeta) -> Any:
    index = MilvusClient.prepare_index_params()
    index.add_index(
        field_name=VECTOR_FIELD,
        index_type=meta.index.index_type,
        metric_type=meta.metric,
        params=dict(meta.index.build_params),
    )
    return index


def _row(record: Record, augmented: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": record.id,
        VECTOR_FIELD: np.asarray(record.vector, dtype=np.float32).tolist(),
        "label": record.label,
        "uri": record.uri,
        "metadata": dict(record.metadata),
    }
    if augmented:
        row[AUGMENTATION_FIELD] = record.augmentation or {}
    return row


def _rows(result: Sequence[dict[str, Any]], vectors: bool, augmentation: bool) -> list[Row]:
    """Query results as Rows (vectors / augmentation only when they were asked for)."""
    return [
        Row(
            id=str(r["id"]),
            label=str(r.get("label", "")),
            uri=str(r.get("uri", "")),
            metadata=_str_map(r.get("metadata")),
            vector=[float(x) for x in r[VECTOR_FIELD]] if vectors else None,
            augmentation=r.get(AUGMENTATION_FIELD) if augmentation else None,
        )
        for r in result
    ]


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
