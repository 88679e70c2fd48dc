"""The whole search service on a large augmented collection, beside a small one, interleaved.

Why: the vector-store benchmark times Milvus alone; with the defaults the service also keeps a
raw twin, searches neighbours on every write and re-checks its blends (settle). This measures
ingest and search *through the services* with the defaults (AUTOINDEX = HNSW on a server,
augmentation top 3) on a collection of N rows against one of a few hundred, same run.

1. Milvus 2.3.5 standalone, the embedder and the search service (loopback subprocesses).
2. Both collections created through the service with the defaults. The large one is prefilled
   with N vectors drawn from a mixture fitted to real embeddings (ris.tools.vector_mixture),
   written straight to Milvus in the service's own rows: the raw twin first, then each row's
   top-3 neighbours from the twin's own index, blended by the service's ``blend`` with the
   neighbour list it stores, so the service sees a consistent augmented collection.
3. Rounds, alternating which collection goes first (A B, B A, ...): ingest a batch of real
   photos (new ids each round) into each, then one image query at a time against each
   (p50/p99). RSS of the search service and of Milvus after each round.

    python scripts/bench_service_scale.py --rows 100000 --json out/bench_service_scale.json
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import MilvusClient
from tqdm import tqdm

from ris.client import IngestItem, RisClient
from ris.search.augmentation import blend, with_self
from ris.search.store_schema import CollectionMeta, Record, meta_from, to_row
from ris.tools.bench import wait_indexed, write_json
from ris.tools.checkout import CALTECH_TEST, CALTECH_TRAIN, DEFAULT_MODEL, IMAGENET
from ris.tools.harness import start_embedder, start_search
from ris.tools.loadtest import load_images
from ris.tools.machine import describe_machine, machine_info, memory_available_bytes, tree_rss_mb
from ris.tools.milvus_standalone import MILVUS_TIME_TICK_MS, milvus_server
from ris.tools.real_embeddings import real_embeddings
from ris.tools.stats import percentiles_ms
from ris.tools.vector_mixture import fit_mixture
from ris.tools.vector_store_sizing import MEMORY_OVERHEAD, index_bytes

ROOT = Path(__file__).resolve().parent.parent
LARGE, SMALL = "scale_large", "scale_small"
CHUNK_ROWS = 1000  # rows a call: ~8 MB inserted at 2048-d, 1000 neighbour searches
WAIT_S = 3600.0


def _indexed(client: MilvusClient, name: str, rows: int) -> None:
    client.flush(name)
    wait_indexed(client, name, rows, WAIT_S, poll_s=2.0)


def memory_check(rows: int, dim: int, force: bool) -> dict[str, float]:
    """Refuse (unless forced) a size whose two loaded HNSW collections (the blends and the raw
    twin) would not fit this machine's available memory: Milvus would be killed mid-prefill.
    1.1x the index bytes: 8.1 GiB was measured loaded for 1M 2048-d rows (docs/benchmarks.md)."""
    need = 2 * index_bytes("HNSW", rows, dim) * 1.1 + MEMORY_OVERHEAD
    available = memory_available_bytes()
    estimate = {
        "rows": rows,
        "dim": dim,
        "need_gib": need / 2**30,
        "available_gib": available / 2**30,
    }
    print(f"memory: ~{estimate['need_gib']:.1f} GiB needed for {rows} augmented rows of {dim}-d, "
          f"{estimate['available_gib']:.1f} GiB available")  # fmt: skip
    if available and need > available and not force:
        raise SystemExit(
            f"{rows} rows of {dim}-d need ~{estimate['need_gib']:.1f} GiB loaded (blends + raw "
            f"twin), more than the {estimate['available_gib']:.1f} GiB available: fewer --rows, "
            "--pooling gem (2048-d), or --force"
        )
    return estimate


def chunk_vectors(mixture: Any, rows: int, chunk: int, seed: int) -> np.ndarray:
    """Rows ``chunk * CHUNK_ROWS`` onwards, the same on every call: both passes regenerate them
    instead of holding all N (8 GiB at 1M x 2048-d, which would not fit beside Milvus)."""
    n = min(CHUNK_ROWS, rows - chunk * CHUNK_ROWS)
    return mixture.sample(n, np.random.default_rng([seed, 11, chunk]))


def syn_id(i: int) -> str:
    return f"syn-{i:08d}"


def raw_vectors(client: MilvusClient, meta: CollectionMeta, ids: list[str]) -> dict[str, Any]:
    """The raw twin's vectors by id (the neighbours a chunk's blends need)."""
    quoted = ", ".join(f'"{i}"' for i in ids)
    rows = client.query(
        meta.raw_name, filter=f"id in [{quoted}]", output_fields=["id", "embedding"]
    )
    return {str(r["id"]): np.asarray(r["embedding"], np.float32) for r in rows}


def prefill(
    client: MilvusClient, meta: CollectionMeta, mixture: Any, rows: int, seed: int, ef: int
) -> dict[str, float]:
    """N mixture rows into ``meta``'s raw twin, then their blends into ``meta`` (module doc).
    Memory: one chunk of vectors and its neighbours at a time."""
    chunks = range(-(-rows // CHUNK_ROWS))
    started = time.perf_counter()
    for c in tqdm(chunks, desc="raw twin", unit="chunk"):
        vectors = chunk_vectors(mixture, rows, c, seed)
        first = c * CHUNK_ROWS
        batch = [Record(syn_id(first + j), v, "synthetic") for j, v in enumerate(vectors)]
        client.insert(meta.raw_name, [to_row(r, augmented=False) for r in batch])
    _indexed(client, meta.raw_name, rows)
    raw_s = time.perf_counter() - started
    size = meta.augment_top_n + 1
    params = {"metric_type": meta.metric, "params": {"ef": ef}}
    started = time.perf_counter()
    for c in tqdm(chunks, desc="blends", unit="chunk"):
        vectors = chunk_vectors(mixture, rows, c, seed)
        first = c * CHUNK_ROWS
        found = client.search(
            meta.raw_name,
            data=vectors.tolist(),
            limit=size,
            search_params=params,
            anns_field="embedding",
            output_fields=["id"],
        )
        hoods = [
            with_self(syn_id(first + j), [(str(h["id"]), float(h["distance"])) for h in hits], size)
            for j, hits in enumerate(found)
        ]
        mine = {syn_id(first + j): v for j, v in enumerate(vectors)}
        wanted = sorted({item for hood in hoods for item, _ in hood} - mine.keys())
        known = {**mine, **raw_vectors(client, meta, wanted)}
        out = []
        for j, hood in enumerate(hoods):
            record = Record(syn_id(first + j), [], "synthetic")
            record.vector = blend(
                vectors[j], [known[item] for item, _ in hood], [s for _, s in hood],
                meta.augment_alpha,
            )  # fmt: skip
            record.augmentation = {
                "neighbours": [item for item, _ in hood[1:]],
                "sims": [round(s, 7) for _, s in hood[1:]],
            }
            out.append(to_row(record, augmented=True))
        client.insert(meta.name, out)
    _indexed(client, meta.name, rows)
    return {"raw_twin_s": raw_s, "blends_s": time.perf_counter() - started}


def ingest_round(ris: RisClient, name: str, photos: list[Path], tag: str) -> dict[str, float]:
    items = [IngestItem(f"{tag}-{i}", path=p, label=p.parent.name) for i, p in enumerate(photos)]
    started = time.perf_counter()
    summary = ris.ingest(name, items)
    took = time.perf_counter() - started
    if summary.stored != len(items):
        raise RuntimeError(f"{name}: stored {summary.stored} of {len(items)}: {summary.failures}")
    return {
        "images": len(items),
        "seconds": took,
        "images_per_s": len(items) / took,
        "embed_s": summary.embed_seconds,
        "milvus_s": summary.milvus_seconds,
    }


def search_round(ris: RisClient, name: str, queries: list[bytes]) -> dict[str, Any]:
    latencies = []
    for data in queries:
        started = time.perf_counter()
        result = ris.search(name, data, top_k=10)
        latencies.append(time.perf_counter() - started)
        if not result.hits:
            raise RuntimeError(f"{name}: no hits")
    return {"queries": len(queries), "latency_ms": percentiles_ms(latencies)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000, help="rows prefilled in the large one")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--ingest", type=int, default=32, help="photos ingested per round and side")
    ap.add_argument("--queries", type=int, default=40, help="image queries per round and side")
    ap.add_argument("--fit-photos", type=int, default=1600, help="real photos the mixture fits")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "ris-bench")
    ap.add_argument("--work-dir", type=Path, default=None, help="where Milvus writes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--prefill-ef", type=int, default=64, help="HNSW ef of the prefill's neighbour searches "
        "(64: what the service's augmentation asks)",
    )  # fmt: skip
    ap.add_argument("--pooling", default="", help="embedder pooling (empty: its default)")
    ap.add_argument("--force", action="store_true", help="run a size that may not fit memory")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    machine = machine_info()
    print(f"machine: {describe_machine(machine)}")
    fit_photos = load_images([IMAGENET, CALTECH_TRAIN], args.fit_photos)
    real, _ = real_embeddings(fit_photos, args.model, "cpu", args.cache_dir, args.pooling)
    mixture = fit_mixture(real, 256, 350, args.seed)
    ingest_pool = sorted(Path(CALTECH_TRAIN).rglob("*.jpg"))
    rng = np.random.default_rng(args.seed)
    ingest_pool = [ingest_pool[i] for i in rng.permutation(len(ingest_pool))]
    queries = load_images([CALTECH_TEST], args.queries)
    report: dict[str, Any] = {
        "benchmark": "service_scale",
        "complete": False,
        "machine": machine,
        "args": {k: str(v) for k, v in vars(args).items()},
        "rounds": [],
    }
    work = Path(tempfile.mkdtemp(prefix="ris-bench-scale-", dir=args.work_dir))
    try:
        with milvus_server(work, MILVUS_TIME_TICK_MS, lean_disk=True) as milvus:
            pooling = ["--pooling", args.pooling] if args.pooling else []
            embedder = start_embedder(args.model, extra_args=["--log-level", "WARNING", *pooling])
            search = start_search(embedder.address, milvus.uri, extra_args=["--log-level", "INFO"])
            try:
                with RisClient(address=search.address, timeout=600) as ris:
                    ris.wait_ready(timeout=120)
                    for name in (LARGE, SMALL):
                        ris.create_collection(name)  # the defaults
                    client = MilvusClient(uri=milvus.uri)
                    meta = meta_from(LARGE, client.describe_collection(LARGE), lambda: "COSINE")
                    report["memory"] = memory_check(args.rows, meta.dim, args.force)
                    report["prefill"] = prefill(
                        client, meta, mixture, args.rows, args.seed, args.prefill_ef
                    )
                    report["prefill"].update(rows=args.rows, ef=args.prefill_ef)
                    report["prefill"]["milvus_rss_mb"] = round(tree_rss_mb(milvus.process.pid), 1)
                    print(f"prefilled {args.rows} rows: {report['prefill']}")
                    write_json(args.json, report, quiet=True)
                    client.close()
                    run_rounds(
                        ris, args, ingest_pool, queries, search.pid, milvus.process.pid, report
                    )
            finally:
                search.stop()
                embedder.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["complete"] = True
    write_json(args.json, report)
    return 0


def run_rounds(
    ris: RisClient,
    args: argparse.Namespace,
    pool: list[Path],
    queries: list[bytes],
    search_pid: int,
    milvus_pid: int,
    report: dict[str, Any],
) -> None:
    print(f"{'round':>5} {'collection':<12} {'rows':>8} {'ingest img/s':>12} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'search RSS MB':>13} {'Milvus RSS MB':>13}")  # fmt: skip
    taken = 0
    for r in range(args.rounds):
        order = (LARGE, SMALL) if r % 2 == 0 else (SMALL, LARGE)
        for name in order:
            photos = pool[taken : taken + args.ingest]
            taken += args.ingest
            row: dict[str, Any] = {"round": r, "collection": name}
            row["ingest"] = ingest_round(ris, name, photos, f"r{r}")
            row["search"] = search_round(ris, name, queries)
            row["rows"] = ris.count(name)
            row["search_rss_mb"] = round(tree_rss_mb(search_pid), 1)
            row["milvus_rss_mb"] = round(tree_rss_mb(milvus_pid), 1)
            lat = row["search"]["latency_ms"]
            print(f"{r:>5} {name:<12} {row['rows']:>8} {row['ingest']['images_per_s']:>12.1f} "
                  f"{lat['p50']:>7.1f} {lat['p99']:>7.1f} {row['search_rss_mb']:>13.0f} "
                  f"{row['milvus_rss_mb']:>13.0f}", flush=True)  # fmt: skip
            report["rounds"].append(row)
            write_json(args.json, report, quiet=True)
    for name in (LARGE, SMALL):
        mine = [x for x in report["rounds"] if x["collection"] == name]
        report[name] = {
            "ingest_images_per_s": float(np.median([x["ingest"]["images_per_s"] for x in mine])),
            "search_p50_ms": float(np.median([x["search"]["latency_ms"]["p50"] for x in mine])),
            "search_p99_ms": float(np.median([x["search"]["latency_ms"]["p99"] for x in mine])),
        }
    print({name: report[name] for name in (LARGE, SMALL)})


if __name__ == "__main__":
    raise SystemExit(main())
