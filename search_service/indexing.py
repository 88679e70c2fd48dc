"""Vector index choice: which Milvus index and parameters a collection gets, and how to search it.

Defaults, and why:

* ``AUTOINDEX`` (the default): Milvus picks and tunes the index itself (HNSW on standalone 2.3+;
  on Milvus Lite the store builds FLAT, see ``store_schema.built_index_type``). The index is
  created before any insert, so the row count is not known yet; letting the server size it is
  the safe choice.
* ``HNSW``: ``M=16, efConstruction=200`` unless given. Graph quality does not depend on the row
  count, so the defaults fit 1k and 10M rows alike; search ``ef = max(64, 2*top_k)``.
* ``IVF_FLAT`` / ``IVF_SQ8``: ``nlist`` should follow the data: ``4*sqrt(n)`` clusters, clamped to
  16..16384, where n is the rows of one *segment*, not of the collection: Milvus seals segments
  of ``dataCoord.segment.maxSize`` (512 MB: ~65k rows of 2048-d float32) and trains one IVF index
  per segment, searching nprobe clusters in each. So n = min(rows, segment rows): nlist 1024 at
  2048-d from ~65k rows up (4000 at 1M would train 4x longer and leave ~16 rows per cluster).
  Give ``nlist`` directly or ``expected_rows`` (default 10,000 -> nlist 400). A fixed
  ``nlist=2048`` on 1,000 vectors would leave most clusters empty. Search
  ``nprobe = min(nlist/8, 2.5*sqrt(nlist))``, at least 8: 12% of the clusters on small indexes,
  a falling share on large ones, but not a fixed count (nlist 400: 50; 1020: 80; 16384: 320).
  2.5 is the smallest factor reaching recall@10 0.98 on every fold of the nprobe sweeps; a flat
  32, enough at 1M, fell to 0.973 at 100k (``tools/nprobe_folds.py``).
  ``DescribeCollection`` warns when an IVF collection has outgrown its nlist.
* ``FLAT``: exact search, no parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ris.common.errors import InvalidArgument

INDEX_TYPES = ("AUTOINDEX", "FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW")
METRICS = ("COSINE", "IP", "L2")
DEFAULT_EXPECTED_ROWS = 10_000
# Milvus 2.3-2.5 dataCoord.segment.maxSize default, MB.
SEGMENT_MAX_MB = 512
# IVF default nprobe is min(nlist/8, ceil(c*sqrt(nlist))): c, the smallest meeting every fold
# of the nprobe sweeps (docs/benchmarks.md, "Default IVF nprobe, chosen over folds").
NPROBE_SQRT_SCALE = 2.5
# Accepted range of each parameter: Milvus takes 32-bit values and its own limits (HNSW M
# 2..2048); beyond these a collection is created fine and then every search fails.
PARAM_RANGES = {
    "M": (2, 2048),
    "efConstruction": (1, 32768),
    "ef": (1, 32768),
    "nlist": (1, 65536),
    "nprobe": (1, 65536),
    "expected_rows": (1, 10**10),
}
_ALLOWED = {
    "AUTOINDEX": set(),
    "FLAT": set(),
    "IVF_FLAT": {"nlist", "expected_rows", "nprobe"},
    "IVF_SQ8": {"nlist", "expected_rows", "nprobe"},
    "HNSW": {"M", "efConstruction", "ef"},
}


@dataclass(frozen=True)
class IndexPlan:
    """What to build (``build_params``) and what the user asked for (``params``, kept as given)."""

    index_type: str
    build_params: dict[str, int]
    params: dict[str, str]


def segment_rows(dim: int, segment_max_mb: int = SEGMENT_MAX_MB) -> int:
    """Rows of ``dim``-d float32 vectors (plus an int64 id and a little per row) in one sealed
    Milvus segment: the unit each IVF index is trained on."""
    return segment_max_mb * 2**20 // (dim * 4 + 64)


def nlist_for(rows: int, dim: int | None = None) -> int:
    """IVF cluster count: 4*sqrt(n), clamped to 16..16384, where n is ``rows`` or, given the
    dimension, at most one segment's rows (Milvus indexes each segment on its own)."""
    n = min(rows, segment_rows(dim)) if dim else rows
    return max(16, min(16384, round(4 * math.sqrt(max(n, 1)))))


def nprobe_for(nlist: int, scale: float = NPROBE_SQRT_SCALE) -> int:
    """Default IVF clusters probed per query: min(nlist/8, ceil(scale*sqrt(nlist))), 8..nlist
    (``scale`` chosen over folds of nprobe sweeps: tools/nprobe_folds.py)."""
    return min(nlist, max(8, min(nlist // 8, math.ceil(scale * math.sqrt(nlist)))))


def index_size_warning(plan: IndexPlan, rows: int, dim: int | None = None) -> str | None:
    """A warning when an IVF index was sized for far fewer rows than the collection holds
    (nlist is fixed at creation; 4*sqrt(rows) is at least twice it), saying how to fix it."""
    nlist = plan.build_params.get("nlist", 0)
    want = nlist_for(rows, dim)
    if not plan.index_type.startswith("IVF") or not nlist or want < 2 * nlist:
        return None
    return (
        f"{plan.index_type} index with nlist {nlist} (sized for ~{(nlist // 4) ** 2} rows) now "
        f"holds {rows} rows, ~{rows // nlist} per cluster, so each probe scans more: recreate the "
        f"collection with index_params expected_rows={rows} (nlist {want}) and re-ingest, or "
        "use HNSW"
    )


def plan_index(
    index_type: str, params: Mapping[str, str], default_type: str, dim: int | None = None
) -> IndexPlan:
    """Validate a requested index and fill in sized defaults (``dim`` caps IVF's nlist at one
    segment's rows; without it nlist follows ``expected_rows`` alone, the rule before)."""
    kind = (index_type or default_type).upper()
    if kind not in INDEX_TYPES:
        raise InvalidArgument(f"index_type {index_type!r} not supported; use one of {INDEX_TYPES}")
    unknown = set(params) - _ALLOWED[kind]
    if unknown:
        raise InvalidArgument(
            f"index_params: unknown {kind} parameters {sorted(unknown)}; "
            f"allowed: {sorted(_ALLOWED[kind]) or 'none'}"
        )
    values: dict[str, int] = {}
    for key, text in params.items():
        low, high = PARAM_RANGES[key]
        try:
            values[key] = int(text)
        except ValueError as exc:
            raise InvalidArgument(
                f"index_params.{key} must be an integer {low}..{high}, got {text!r}"
            ) from exc
        if not low <= values[key] <= high:
            raise InvalidArgument(f"index_params.{key} must be {low}..{high}, got {values[key]}")
    build: dict[str, int] = {}
    if kind == "HNSW":
        build = {"M": values.get("M", 16), "efConstruction": values.get("efConstruction", 200)}
    elif kind.startswith("IVF"):
        rows = values.get("expected_rows", DEFAULT_EXPECTED_ROWS)
        build = {"nlist": values.get("nlist", nlist_for(rows, dim))}
    return IndexPlan(kind, build, {k: str(v) for k, v in params.items()})


def search_params(plan: IndexPlan, top_k: int) -> dict[str, int]:
    """Per-query search parameters for a collection built with ``plan``."""
    given = {k: int(v) for k, v in plan.params.items() if k in ("ef", "nprobe")}
    if plan.index_type == "HNSW":
        return {"ef": max(given.get("ef", 64), 2 * top_k)}
    if plan.index_type.startswith("IVF"):
        nlist = plan.build_params.get("nlist", nlist_for(DEFAULT_EXPECTED_ROWS))
        return {"nprobe": min(nlist, given.get("nprobe", nprobe_for(nlist)))}
    return {}
