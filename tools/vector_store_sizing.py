"""How much memory, disk and time a vector-store benchmark size will take, before running it:
loaded index bytes per index type, and which requested sizes fit this machine.

Used by scripts/bench_vector_store.py to refuse sizes that would not fit.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from ris.search.indexing import nlist_for, segment_rows

INDEXES = ("FLAT", "IVF_FLAT", "HNSW")  # the default sweep
ALL_INDEXES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW")
PQ_DIMS_PER_CODE = 32  # IVF_PQ: m = dim / 32 sub-quantisers of 8 bits (64 bytes per 2048-d row)
STORES = ("lite", "server")
HNSW_BUILD = {"M": 16, "efConstruction": 200}
# Rough costs on the shared 2-core dev machine (measured at N=5,000, 2048-d), for the up-front
# estimate only: insert+flush rows/s; HNSW build rows/s (slowing with log N); IVF k-means at
# ~50 GFLOP/s over min(N, 256*nlist) training rows, 25 iterations; FLAT seconds per row scanned.
INSERT_ROWS_PER_S = {"lite": 900.0, "server": 1100.0}
HNSW_ROWS_PER_S_AT_5K = 1000.0
IVF_FLOPS = 50e9
FLAT_S_PER_ROW = {"lite": 26e-6, "server": 1.5e-6}
ANN_QUERY_S = 0.01
# Two questions, two factors on index_bytes: the peak while a benchmark loads and builds
# (segment copies, allocator slack), and what a loaded index holds afterwards (8.1 GiB measured
# for 1M 2048-d HNSW rows against 7.9 GiB of index_bytes, docs/benchmarks.md).
MEMORY_SLACK = 1.3
LOADED_SLACK = 1.1
BUILD_BUFFER = 2 * 2**30  # growing segments before flush, one segment's raw rows while building
MEMORY_OVERHEAD = 1.5 * 2**30  # Python, the script's chunk + ground truth, Milvus' footprint


def estimate(
    size: int,
    dim: int,
    stores: list[str],
    indexes: list[str],
    queries: int = 200,
    search_seconds: float = 120.0,
    settings: int = 3,
) -> dict[str, Any]:
    """Peak memory, disk and a rough duration for one size (stores run one after the other;
    each index is dropped and released before the next, so the peak is the largest one)."""
    raw = size * dim * 4
    # One k-means per sealed segment, each on at most 256 points per cluster.
    nlist = nlist_for(size, dim)
    segment = min(size, segment_rows(dim))
    ivf = 25 * 2 * (size / segment) * min(segment, 256 * nlist) * nlist * dim / IVF_FLOPS
    build = {
        "FLAT": 0.0,
        "IVF_FLAT": ivf,
        "IVF_SQ8": ivf,
        "IVF_PQ": ivf * 2,  # plus the sub-quantiser k-means
        "HNSW": size / HNSW_ROWS_PER_S_AT_5K * math.log(max(size, 2)) / math.log(5000),
    }
    loaded = max(index_bytes(index, size, dim) for index in indexes)
    seconds = 0.0
    for store in stores:
        seconds += size / INSERT_ROWS_PER_S[store]
        for index in indexes:
            query_s = size * FLAT_S_PER_ROW[store] if index == "FLAT" else ANN_QUERY_S
            sweep = 1 if index == "FLAT" else settings
            seconds += build[index] + sweep * min(search_seconds, queries * query_s)
    return {
        "rows": size,
        "raw_vectors_gib": raw / 2**30,
        "loaded_index_gib": {i: index_bytes(i, size, dim) / 2**30 for i in indexes},
        "peak_memory_gib": (loaded * MEMORY_SLACK + BUILD_BUFFER + MEMORY_OVERHEAD) / 2**30,
        "disk_gib": raw * 3 / 2**30,
        "rough_minutes": seconds / 60,
    }


def index_bytes(index: str, rows: int, dim: int) -> int:
    """Memory of the loaded index (what a search node holds), by index type."""
    per_row = {
        "FLAT": 4 * dim,
        "IVF_FLAT": 4 * dim,
        "IVF_SQ8": dim,
        "IVF_PQ": dim // PQ_DIMS_PER_CODE,
        "HNSW": 4 * dim + 2 * HNSW_BUILD["M"] * 8,  # vectors + two levels of links
    }[index]
    return rows * (per_row + 16)  # + the int64 id and its offset


def loaded_bytes(index: str, rows: int, dim: int) -> float:
    """What a loaded index of ``rows`` holds in Milvus once built (index_bytes, measured slack)."""
    return index_bytes(index, rows, dim) * LOADED_SLACK


def plan_sizes(
    requested: list[int], dim: int, args: argparse.Namespace, available: int, force: bool
) -> tuple[list[int], list[int]]:
    """(sizes to run, sizes refused): a size whose peak estimate exceeds 80% of the available
    memory is refused unless forced. Prints each estimate."""
    sizes: list[int] = []
    refused: list[int] = []
    for size in requested:
        est = estimate(size, dim, args.store_list, args.indexes, args.queries, args.search_seconds)
        fits = not available or est["peak_memory_gib"] * 2**30 <= 0.8 * available
        print(
            f"N={size}: ~{est['raw_vectors_gib']:.2f} GiB of vectors, peak ~"
            f"{est['peak_memory_gib']:.1f} GiB RAM (available {available / 2**30:.1f}), disk ~"
            f"{est['disk_gib']:.1f} GiB, roughly {est['rough_minutes']:.0f} min on 2 cores"
            + ("" if fits else " -> REFUSED (does not fit; --force to try)")
        )
        (sizes if fits or force else refused).append(size)
    return sizes, refused
