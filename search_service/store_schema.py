"""What a collection is in Milvus, and what its rows may hold: names, fields, size limits.

Pure (no connection): the checks a collection or a row must pass before it reaches Milvus, the
schema and index parameters a collection is created with, the ``ris.*`` collection properties
that record the model filling it and the index choice (both Lite and Milvus 2.3+ keep them),
and the conversion of rows to and from Milvus' dicts. store.py runs the reads and writes with
these; operations.py (the service's RPCs) and ingest.py use the types and limits.

An augmented collection (augmentation.py) has a companion ``<name>__raw``: the same rows with the
raw embeddings (Milvus 2.3 allows one vector field per collection). The main one stores the
blended vectors, plus each item's neighbour list.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

from ris.common.errors import InvalidArgument
from ris.search.filters import check_metadata_key
from ris.search.indexing import METRICS, IndexPlan, plan_index

VECTOR_FIELD = "embedding"
AUGMENTATION_FIELD = "augmentation"  # augmented collections: {"neighbours": [ids], "sims": [..]}
RAW_SUFFIX = "__raw"  # companion collection of raw embeddings
MAX_ID_BYTES = 512
MAX_LABEL_BYTES = 1024
MAX_URI_BYTES = 4096
MAX_METADATA_BYTES = 60_000  # Milvus JSON fields hold up to 64 KiB
MAX_WRITE_BYTES = 16 * 1024 * 1024  # per upsert call, well under the 64 MB gRPC message limit
MAX_QUERY_LIMIT = 16384  # Milvus' offset+limit ceiling
MAX_DIM = 32768
MAX_VECTOR_VALUE = 1e6  # |value| of a vector: 2048 * (1e6)^2 still fits float32 scores
OUTPUT_FIELDS = ("id", "label", "uri", "metadata")  # what a read returns besides vectors
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


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
    visual_dims: int = 0  # leading dims of a space with a semantic part that are visual

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
    near_duplicate: bool = False  # promoted by the near-duplicate guard (near_duplicates.py)
    visual_score: float | None = None  # cosine of the visual parts, where the guard looked


# -- checks -----------------------------------------------------------------------------------


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise InvalidArgument(
            f"collection name {name!r} invalid: letters, digits, underscores; "
            "starts with a letter or _; at most 255 characters"
        )
    return name


def check_new_collection(meta: CollectionMeta) -> None:
    """Raise InvalidArgument for a collection this service must not create."""
    validate_name(meta.name)
    if meta.name.endswith(RAW_SUFFIX):
        raise InvalidArgument(f"collection names ending in {RAW_SUFFIX!r} are reserved")
    if meta.augmented and len(meta.raw_name) > 255:
        raise InvalidArgument("augmented collections' names are at most 250 characters")
    if meta.metric not in METRICS:
        raise InvalidArgument(f"metric must be one of {METRICS}")
    if meta.dim < 1 or meta.dim > MAX_DIM:
        raise InvalidArgument(f"dim {meta.dim} out of range")


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


def vector_problem(values: Sequence[float], metric: str) -> str:
    """Why a vector cannot be searched or stored ("" when it can): NaN/inf, values so large that
    scores overflow float32, or (COSINE) no direction at all (its scores would be NaN)."""
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all():
        return "vector has NaN or infinite values"
    if np.abs(v).max(initial=0.0) > MAX_VECTOR_VALUE:
        return f"vector values must be within +-{MAX_VECTOR_VALUE:g} (scores would overflow)"
    if metric == "COSINE" and not np.any(v):
        return "vector is all zeros: a COSINE vector needs a direction"
    return ""


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


# -- the collection in Milvus -----------------------------------------------------------------


def milvus_schema(meta: CollectionMeta) -> Any:
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


def built_index_type(plan: IndexPlan, lite: bool) -> str:
    """The index actually built. On Milvus Lite, AUTOINDEX is exact (FLAT): Lite 3.x makes it a
    FAISS HNSW graph that leaves items unreachable, even by an id filter (of 1,500 photos
    embedded with gem_softmax, 5 raw rows and 8 blends were never returned for their own
    vector), and Lite is for collections small enough to scan (it warns past 50k rows)."""
    return "FLAT" if lite and plan.index_type == "AUTOINDEX" else plan.index_type


def vector_index(meta: CollectionMeta, lite: bool = False) -> Any:
    index = MilvusClient.prepare_index_params()
    index.add_index(
        field_name=VECTOR_FIELD,
        index_type=built_index_type(meta.index, lite),
        metric_type=meta.metric,
        params=dict(meta.index.build_params),
    )
    return index


def collection_properties(meta: CollectionMeta) -> dict[str, str]:
    """The ``ris.*`` properties a collection is created with (read back by ``meta_from``)."""
    return {
        "ris.model_name": meta.model_name,
        "ris.model_version": meta.model_version,
        "ris.dim": str(meta.dim),
        "ris.metric": meta.metric,
        "ris.index_type": meta.index.index_type,
        "ris.index_params": json.dumps(meta.index.params, sort_keys=True),
        "ris.index_build": json.dumps(meta.index.build_params, sort_keys=True),
        "ris.description": meta.description,
        "ris.augment_top_n": str(meta.augment_top_n),
        "ris.augment_alpha": repr(float(meta.augment_alpha)),
        "ris.visual_dims": str(meta.visual_dims),
    }


def vector_dims(description: dict[str, Any]) -> list[int]:
    """The dims of ``VECTOR_FIELD`` in a ``describe_collection`` answer (none: not ours)."""
    return [int(f["params"]["dim"]) for f in description["fields"] if f["name"] == VECTOR_FIELD]


def _as_built(plan: IndexPlan, recorded: str) -> IndexPlan:
    """``plan`` with the parameters the index was built with, when the collection recorded
    them (a later sizing rule must not change how it is searched); else ``plan`` as re-planned
    (collections made before the property, or a property edited into nonsense)."""
    try:
        built = {str(k): int(v) for k, v in json.loads(recorded).items()}
    except (ValueError, TypeError, AttributeError):
        return plan
    return IndexPlan(plan.index_type, built, plan.params) if built else plan


def meta_from(
    name: str, description: dict[str, Any], index_metric: Callable[[], str]
) -> CollectionMeta:
    """A collection's CollectionMeta from its ``describe_collection`` answer (which has a
    ``VECTOR_FIELD``); ``index_metric`` reads the metric from the index, for collections made
    elsewhere. Unreadable properties fall back to defaults (AUTOINDEX, not augmented)."""
    props = {str(k): str(v) for k, v in (description.get("properties") or {}).items()}
    metric = props.get("ris.metric", "")
    if metric not in METRICS:
        metric = index_metric()
    try:
        params = json.loads(props.get("ris.index_params", "{}"))
        plan = plan_index(props.get("ris.index_type", "AUTOINDEX"), params, "AUTOINDEX")
    except (ValueError, InvalidArgument):
        plan = IndexPlan("AUTOINDEX", {}, {})
    plan = _as_built(plan, props.get("ris.index_build", "{}"))
    try:
        top_n = int(props.get("ris.augment_top_n", "0"))
        alpha = float(props.get("ris.augment_alpha", "3.0"))
    except ValueError:
        top_n, alpha = 0, 3.0
    dim = vector_dims(description)[0]
    try:
        visual_dims = int(props.get("ris.visual_dims", "0"))
    except ValueError:
        visual_dims = 0
    if top_n and not any(f["name"] == AUGMENTATION_FIELD for f in description["fields"]):
        top_n = 0  # properties edited by hand: without the field it cannot be augmented
    return CollectionMeta(
        name=name,
        dim=dim,
        metric=metric,
        index=plan,
        model_name=props.get("ris.model_name", ""),
        model_version=props.get("ris.model_version", ""),
        description=props.get("ris.description", description.get("description", "")),
        augment_top_n=max(0, top_n),
        augment_alpha=alpha,
        visual_dims=visual_dims if 0 < visual_dims < dim else 0,
    )


# -- rows -------------------------------------------------------------------------------------


def to_row(record: Record, augmented: bool) -> dict[str, Any]:
    """A Record as the dict Milvus writes."""
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


def read_fields(vectors: bool, augmentation: bool) -> list[str]:
    """The output fields of a read that returns Rows."""
    fields = [*OUTPUT_FIELDS, VECTOR_FIELD] if vectors else list(OUTPUT_FIELDS)
    return [*fields, AUGMENTATION_FIELD] if augmentation else fields


def from_rows(result: Sequence[dict[str, Any]], vectors: bool, augmentation: bool) -> list[Row]:
    """Query results as Rows (vectors / augmentation only when they were asked for)."""
    return [
        Row(
            id=str(r["id"]),
            label=str(r.get("label", "")),
            uri=str(r.get("uri", "")),
            metadata=str_map(r.get("metadata")),
            vector=[float(x) for x in r[VECTOR_FIELD]] if vectors else None,
            augmentation=r.get(AUGMENTATION_FIELD) if augmentation else None,
        )
        for r in result
    ]


def str_map(value: object) -> dict[str, str]:
    """A stored metadata JSON value as str -> str (non-string values as JSON text)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
