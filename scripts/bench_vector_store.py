"""Vector-store scale: insert time, index build time, search latency and recall@k against exact
search, for Milvus Lite and a real Milvus standalone, FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ and HNSW,
at several sizes.

Realistic vectors, not uniform noise (which no ANN index can serve): the real embeddings of the
photos (computed once with the real model, cached under --cache-dir), some held out as the
queries (real embeddings, no noise by default). The collection holds every remaining real
vector, then vectors drawn from a Gaussian mixture fitted to them in their PCA basis
(ris.tools.vector_mixture; ``--vectors copies`` is the former noisy copies of real vectors, on
which HNSW collapsed) up to N. Before running, the nearest-neighbour distance quantiles of the
real vectors and of as many mixture samples are printed side by side (the check that the
synthetic neighbourhoods are as crowded as the real ones). Rows are generated in seeded chunks
of 1,000 (8 MB per insert at 2048-d), regenerated identically for every store, so the script
holds one chunk, never N vectors; exact cosine top-k ground truth is computed by numpy over the
same chunks, so the script's own memory stays under ~1 GiB at any N. FLAT is also measured, as
the exact baseline inside Milvus. The memory that grows with N is the store's: the estimate
printed per size is for the loaded index (4 bytes/dim for FLAT, IVF_FLAT, HNSW; 1 for IVF_SQ8;
IVF_PQ m bytes per row), plus slack for building and ~1.5 GiB of process overhead.

Per (store, N): rows inserted once; then per index: create, wait until built, load, sweep the
search parameter (IVF nprobe, HNSW ef), one query at a time; then the index is dropped.
Sizes that would not fit in this machine's memory are refused with an estimate (--force runs
them anyway).

    python scripts/bench_vector_store.py --sizes 10000,100000 --json out/bench_vector_store.json

1M on a Milvus 2.3.5 server (Lite's FLAT would take ~10 s a query there), in the background,
bounded: see docs/benchmarks.md, "1M vectors".
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ris.search.indexing import nlist_for, nprobe_for
from ris.tools.bench import existing, release_lite, wait_indexed, wait_until, write_json
from ris.tools.checkout import CALTECH_TEST, CALTECH_TRAIN, IMAGENET
from ris.tools.loadtest import load_images
from ris.tools.machine import (
    describe_machine,
    machine_info,
    memory_available_bytes,
    tree_rss_mb,
)
from ris.tools.milvus_standalone import milvus_server
from ris.tools.real_embeddings import real_embeddings
from ris.tools.stats import percentiles_ms
from ris.tools.synthetic_vectors import Dataset, MixtureDataset, exact_top_k, make_queries
from ris.tools.vector_mixture import fit_mixture, nn_distance_quantiles
from ris.tools.vector_store_sizing import (
    ALL_INDEXES,
    HNSW_BUILD,
    INDEXES,
    PQ_DIMS_PER_CODE,
    STORES,
    estimate,
    plan_sizes,
)

ROOT = Path(__file__).resolve().parent.parent


# -- stores ------------------------------------------------------------------------------------


@contextmanager
def open_store(kind: str, work: Path) -> Iterator[tuple[Any, int]]:
    """A MilvusClient on Milvus Lite (in this process) or on a fresh milvus-server (loopback),
    and the pid whose process tree holds the store's memory (this one for Lite)."""
    from pymilvus import MilvusClient

    with ExitStack() as stack:
        uri, pid = str(work / "lite.db"), os.getpid()
        if kind == "server":
            handle = stack.enter_context(milvus_server(work))
            uri, pid = handle.uri, handle.process.pid
        client = MilvusClient(uri=uri, timeout=600)
        try:
            yield client, pid
        finally:
            client.close()
            release_lite(uri)


def insert_all(client: Any, name: str, data: Dataset | MixtureDataset) -> dict[str, float]:
    """Create the collection (no index yet), insert every chunk, flush; timed."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=data.dim)
    client.create_collection(name, schema=schema)
    started = time.perf_counter()
    for ids, vectors in data.chunks():
        client.insert(
            name, [{"id": int(i), "embedding": v} for i, v in zip(ids, vectors, strict=True)]
        )
    inserted = time.perf_counter()
    client.flush(name)
    flushed = time.perf_counter()
    return {
        "insert_s": inserted - started,
        "flush_s": flushed - inserted,
        "rows_per_s": data.size / (flushed - started),
    }


def build_index(
    client: Any, name: str, index: str, size: int, limit_s: float, dim: int
) -> tuple[dict[str, int], dict[str, Any]]:
    """Create the index, wait until every row is indexed, load; returns (params, timings and
    what describe_index reports: a server leaves segments under 1,024 rows unindexed)."""
    from pymilvus import MilvusClient

    params: dict[str, int] = {}
    if index.startswith("IVF"):
        params = {"nlist": nlist_for(size, dim)}
        if index == "IVF_PQ":
            params.update(m=dim // PQ_DIMS_PER_CODE, nbits=8)
    elif index == "HNSW":
        params = dict(HNSW_BUILD)
    spec = MilvusClient.prepare_index_params()
    spec.add_index(field_name="embedding", index_type=index, metric_type="COSINE", params=params)
    started = time.perf_counter()
    client.create_index(name, spec, timeout=limit_s, sync=False)  # polled below, bounded
    wait_indexed(client, name, size, limit_s)
    build_s = time.perf_counter() - started
    info = {k: str(v) for k, v in (client.describe_index(name, "embedding") or {}).items()}
    started = time.perf_counter()
    client.load_collection(name)
    wait_until(lambda: "Loaded" in str(client.get_load_state(name).get("state")), limit_s, "load")
    load_s = time.perf_counter() - started
    counted = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    rows = int(counted[0]["count(*)"])
    if rows != size:
        raise RuntimeError(f"{name}: {rows} rows visible after load, expected {size}")
    return params, {"build_s": build_s, "load_s": load_s, "index_info": info}


def search_params_for(
    index: str, size: int, dim: int, args: argparse.Namespace
) -> list[dict[str, int]]:
    """The sweep: nothing for FLAT; for IVF the nprobe values (<= nlist) and the search
    service's default for that nlist (indexing.nprobe_for); ef values (>= k) for HNSW."""
    if index.startswith("IVF"):
        nlist = nlist_for(size, dim)
        probes = {min(p, nlist) for p in args.nprobe} | {nprobe_for(nlist)}
        return [{"nprobe": p} for p in sorted(probes)]
    if index == "HNSW":
        return [{"ef": e} for e in sorted({max(e, args.top_k) for e in args.ef})]
    return [{}]


def measure_search(
    client: Any,
    name: str,
    queries: np.ndarray,
    truth: np.ndarray,
    params: dict[str, int],
    k: int,
    max_seconds: float,
) -> dict[str, Any]:
    """One query per call, in order, until all are done or ``max_seconds`` have passed;
    latency percentiles and mean recall@k over the queries measured."""
    search_params = {"metric_type": "COSINE", "params": params}

    def one(q: np.ndarray) -> list[int]:
        hits = client.search(
            name,
            data=[q.tolist()],
            limit=k,
            search_params=search_params,
            anns_field="embedding",
            consistency_level="Eventually",
        )[0]
        return [int(h["id"]) for h in hits]

    for q in queries[: min(5, len(queries))]:
        one(q)
    latencies: list[float] = []
    recalls: list[float] = []
    stop_at = time.perf_counter() + max_seconds
    for q, expected in zip(queries, truth, strict=True):
        if latencies and time.perf_counter() > stop_at:
            break
        started = time.perf_counter()
        got = one(q)
        latencies.append(time.perf_counter() - started)
        recalls.append(len(set(got) & set(expected.tolist())) / k)
    return {
        "params": params,
        "latency_ms": percentiles_ms(latencies),
        "recall": float(np.mean(recalls)),
        "recall_min": float(np.min(recalls)),
        "queries": len(latencies),
    }


def _drop_index(client: Any, name: str) -> None:
    client.release_collection(name)
    client.drop_index(name, "embedding")


def run_store(
    kind: str,
    sizes: list[int],
    base: np.ndarray,
    queries: np.ndarray,
    args: argparse.Namespace,
    on_row: Callable[[dict[str, Any]], None],
) -> None:
    """Every size and index on one store; one collection per size, its index rebuilt per type.
    Each result goes to ``on_row`` as soon as it is measured (long runs keep partial results)."""
    work = tempfile.TemporaryDirectory(prefix=f"ris-bench-vs-{kind}-", dir=args.work_dir)
    with work as tmp, open_store(kind, Path(tmp)) as (client, store_pid):
        for size in sizes:
            data: Dataset | MixtureDataset = (
                MixtureDataset(base, size, args.mixture, args.seed)
                if args.mixture is not None
                else Dataset(base, size, args.noise, args.seed)
            )
            started = time.perf_counter()
            truth = exact_top_k(data, queries, args.top_k)
            truth_s = time.perf_counter() - started
            name = f"vs_{size}"
            inserted = insert_all(client, name, data)
            print(
                f"{kind:<6} N={size:<8} inserted in {inserted['insert_s']:.1f} s "
                f"+ flush {inserted['flush_s']:.1f} s ({inserted['rows_per_s']:.0f} rows/s); "
                f"exact top-{args.top_k} by numpy in {truth_s:.1f} s",
                flush=True,
            )
            for index in args.indexes:
                build, timing = build_index(
                    client, name, index, size, args.max_build_seconds, data.dim
                )
                # The loaded index's memory as the OS sees it (Lite: this whole process).
                timing["store_rss_mb"] = round(tree_rss_mb(store_pid), 1)
                for params in search_params_for(index, size, data.dim, args):
                    result = measure_search(
                        client, name, queries, truth, params, args.top_k, args.search_seconds
                    )
                    row = {
                        "store": kind,
                        "rows": size,
                        "index": index,
                        "build_params": build,
                        **inserted,
                        **timing,
                        **result,
                    }
                    print(_row(row), flush=True)
                    on_row(row)
                _drop_index(client, name)
            client.drop_collection(name)


HEADER = (
    f"{'store':<6} {'rows':>8} {'index':<8} {'search':<11} {'insert s':>8} {'build+load s':>12} "
    f"{'p50 ms':>7} {'p99 ms':>7} {'recall@k':>8} {'store RSS MB':>12}"
)


def _row(r: dict[str, Any]) -> str:
    params = ",".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
    return (
        f"{r['store']:<6} {r['rows']:>8} {r['index']:<8} {params:<11} "
        f"{r['insert_s'] + r['flush_s']:>8.1f} {r['build_s'] + r['load_s']:>12.1f} "
        f"{r['latency_ms']['p50']:>7.2f} {r['latency_ms']['p99']:>7.2f} {r['recall']:>8.3f} "
        f"{r['store_rss_mb']:>12.0f}"
    )


def lite_verdict(
    rows: list[dict[str, Any]], sizes: list[int], recall_target: float, budget_ms: float
) -> list[dict[str, Any]]:
    """Per size and store: the fastest setting reaching the recall target, and whether Lite's
    meets the p99 budget (where it stops doing so, Milvus Lite stops being the right choice)."""
    out = []
    for size in sizes:
        entry: dict[str, Any] = {"rows": size}
        for store in STORES:
            good = [
                r
                for r in rows
                if r["store"] == store and r["rows"] == size and r["recall"] >= recall_target
            ]
            best = min(good, key=lambda r: r["latency_ms"]["p99"], default=None)
            entry[store] = (
                None
                if best is None
                else {
                    "index": best["index"],
                    "params": best["params"],
                    "p99_ms": best["latency_ms"]["p99"],
                    "recall": best["recall"],
                    "build_s": best["build_s"],
                    "insert_s": best["insert_s"] + best["flush_s"],
                }
            )
        lite = entry.get("lite")
        entry["lite_within_budget"] = bool(lite and lite["p99_ms"] <= budget_ms)
        out.append(entry)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000", help="comma-separated N (e.g. 10000,100000)")
    parser.add_argument("--stores", default="lite,server", help="lite and/or server")
    parser.add_argument("--indexes", default=",".join(INDEXES))
    parser.add_argument(
        "--images",
        nargs="*",
        default=None,
        help=f"photos for real vectors (default: {CALTECH_TRAIN}, {CALTECH_TEST}, {IMAGENET})",
    )
    parser.add_argument("--image-limit", type=int, default=2000)
    parser.add_argument("--holdout", type=int, default=200, help="real vectors kept as queries")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--vectors",
        choices=("mixture", "copies"),
        default="mixture",
        help="rows past the real ones: a mixture fitted to them, or noisy copies of them",
    )
    parser.add_argument("--pca-dims", type=int, default=256, help="mixture: PCA axes kept")
    parser.add_argument("--components", type=int, default=350, help="mixture: clusters")
    parser.add_argument("--noise", type=float, default=0.5, help="copies: noise norm")
    parser.add_argument("--query-noise", type=float, default=0.0, help="noise norm on queries")
    parser.add_argument("--nprobe", default="8,32,128")
    parser.add_argument("--ef", default="16,64,256")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "resnet50.onnx")
    parser.add_argument("--provider", default="cpu")
    parser.add_argument(
        "--pooling", default="", help="embedder pooling (empty: its default; gem is 2048-d)"
    )
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "ris-bench")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the stores write")
    parser.add_argument(
        "--search-seconds", type=float, default=120.0, help="bound per search setting"
    )
    parser.add_argument("--max-build-seconds", type=float, default=4 * 3600)
    parser.add_argument("--recall-target", type=float, default=0.95)
    parser.add_argument("--latency-budget-ms", type=float, default=50.0, help="p99 for verdict")
    parser.add_argument("--force", action="store_true", help="run sizes that may not fit")
    parser.add_argument("--json", dest="json_path", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
        args.nprobe = [int(s) for s in args.nprobe.split(",") if s.strip()]
        args.ef = [int(s) for s in args.ef.split(",") if s.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    args.store_list = [s.strip() for s in args.stores.split(",") if s.strip()]
    args.indexes = [s.strip().upper() for s in args.indexes.split(",") if s.strip()]
    if not args.size_list or min(args.size_list) < args.top_k:
        parser.error("--sizes must be >= --top-k")
    if set(args.store_list) - set(STORES) or not args.store_list:
        parser.error(f"--stores takes {STORES}")
    if set(args.indexes) - set(ALL_INDEXES) or not args.indexes:
        parser.error(f"--indexes takes {ALL_INDEXES}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = machine_info()
    print(f"machine: {describe_machine(machine)}")
    sources = args.images or existing([CALTECH_TRAIN, CALTECH_TEST, IMAGENET])
    images = load_images(sources, args.image_limit)
    if len(images) < 2:
        print("bench_vector_store: need at least 2 photos", file=sys.stderr)
        return 2
    started = time.perf_counter()
    real, cache = real_embeddings(images, args.model, args.provider, args.cache_dir, args.pooling)
    took = time.perf_counter() - started
    print(f"{len(real)} real embeddings ({real.shape[1]}-d) in {took:.1f} s (cache {cache})")
    order = np.random.default_rng(args.seed).permutation(len(real))
    holdout = min(args.holdout, len(real) // 2)
    seeds, base = real[order[:holdout]], real[order[holdout:]]
    queries = make_queries(seeds, args.queries, args.query_noise, args.seed)
    args.mixture, nn_check = None, {}
    if args.vectors == "mixture":
        args.mixture = fit_mixture(base, args.pca_dims, args.components, args.seed)
        sample = args.mixture.sample(len(base), np.random.default_rng([args.seed, 7]))
        nn_check = {"real": nn_distance_quantiles(base), "mixture": nn_distance_quantiles(sample)}
        print(f"nearest-neighbour distance quantiles among {len(base)} vectors:")
        for kind, q in nn_check.items():
            print(f"  {kind:<8} " + "  ".join(f"{k} {v:.3f}" for k, v in q.items()))

    sizes, refused = plan_sizes(
        args.size_list, real.shape[1], args, memory_available_bytes(), args.force
    )

    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "benchmark": "vector_store",
        "complete": False,  # true once every store and size has run (partial JSON before)
        "machine": machine,
        "args": {k: str(v) for k, v in vars(args).items() if k != "mixture"},
        "real_vectors": len(real),
        "dim": int(real.shape[1]),
        "holdout": int(holdout),
        "queries": len(queries),
        "refused_sizes": refused,
        "vectors": args.vectors,
        "nn_distance_quantiles": nn_check,
        "estimates": [
            estimate(
                s, real.shape[1], args.store_list, args.indexes, args.queries, args.search_seconds
            )
            for s in args.size_list
        ],
        "results": rows,
    }

    def save(row: dict[str, Any]) -> None:
        rows.append(row)
        write_json(args.json_path, report, quiet=True)

    print(HEADER)
    for store in args.store_list:
        run_store(store, sizes, base, queries, args, save)
    verdicts = lite_verdict(rows, sizes, args.recall_target, args.latency_budget_ms)
    print(
        f"\nfastest setting with recall@{args.top_k} >= {args.recall_target} (p99 budget "
        f"{args.latency_budget_ms:.0f} ms):"
    )
    for v in verdicts:
        parts = [f"N={v['rows']}"]
        for store in args.store_list:
            b = v.get(store)
            parts.append(
                f"{store}: "
                + ("none" if b is None else f"{b['index']} {b['params']} p99 {b['p99_ms']:.1f} ms")
            )
        parts.append("lite OK" if v["lite_within_budget"] else "lite NOT OK")
        print("  " + "; ".join(parts))
    report.update(verdict=verdicts, complete=True)
    write_json(args.json_path, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
