"""Search latency on a Milvus server at two read consistency levels, interleaved in one run.

Why: a search with the defaults makes four reads (αQE's first search, its neighbour's vector,
the deep search, the near-duplicate guard's raw vectors); at ``Strong`` each waits for Milvus'
next time tick. This measures what ``milvus_search_consistency`` buys, A B A B on one machine:

1. Milvus 2.3.5 standalone (its own 200 ms time tick unless told), one embedder and two search
   services over it (loopback subprocesses), one reading at level A, the other at level B;
   everything else the defaults.
2. One collection created and filled through service A (Caltech train photos).
3. Each query photo sent to A and to B in turn, one call at a time, the order swapped every
   query (A B, B A, ...); p50/p95 per level, the p50 ratio, and whether both returned the same
   ranking (no writes happen meanwhile, so they must).

    python scripts/bench_search_consistency.py --json out/bench_search_consistency.json
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ris.client import IngestItem, RisClient
from ris.tools.bench import write_json
from ris.tools.checkout import CALTECH_TEST, CALTECH_TRAIN, DEFAULT_MODEL
from ris.tools.harness import start_embedder, start_search
from ris.tools.loadtest import load_images
from ris.tools.machine import describe_machine, machine_info
from ris.tools.milvus_standalone import MILVUS_TIME_TICK_MS, milvus_server
from ris.tools.stats import percentiles_ms

COLLECTION = "consistency"


def timed_search(ris: RisClient, data: bytes, top_k: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    result = ris.search(COLLECTION, data, top_k=top_k)
    return time.perf_counter() - started, [h.id for h in result.hits]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="Strong,Session", help="A,B: consistency levels")
    ap.add_argument("--ingest", type=int, default=300, help="Caltech train photos ingested")
    ap.add_argument("--queries", type=int, default=100, help="Caltech query photos")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the queries")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--work-dir", type=Path, default=None, help="where Milvus writes")
    ap.add_argument(
        "--time-tick-ms",
        type=int,
        default=MILVUS_TIME_TICK_MS,
        help="Milvus' proxy time tick (200: its default; the tests run 50)",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    levels = args.levels.split(",")
    if len(levels) != 2:
        ap.error("--levels takes two levels, A,B")

    machine = machine_info()
    print(f"machine: {describe_machine(machine)}")
    photos = sorted(Path(CALTECH_TRAIN).rglob("*.jpg"))[: args.ingest]
    queries = load_images([CALTECH_TEST], args.queries)
    latencies: dict[str, list[float]] = {level: [] for level in levels}
    same = 0
    work = Path(tempfile.mkdtemp(prefix="ris-bench-consistency-", dir=args.work_dir))
    try:
        with ExitStack() as stack:
            milvus = stack.enter_context(milvus_server(work, args.time_tick_ms))
            embedder = start_embedder(args.model, extra_args=["--log-level", "WARNING"])
            stack.callback(embedder.stop)
            clients = {}
            for level in levels:
                flags = ["--milvus-search-consistency", level]
                service = start_search(embedder.address, milvus.uri, extra_args=flags)
                stack.callback(service.stop)
                clients[level] = stack.enter_context(RisClient(address=service.address))
            first = clients[levels[0]]
            first.create_collection(COLLECTION)  # the defaults
            items = [IngestItem(f"p{i}", path=p, label=p.parent.name) for i, p in enumerate(photos)]
            summary = first.ingest(COLLECTION, items)
            if summary.stored != len(items):
                raise RuntimeError(f"stored {summary.stored} of {len(items)}: {summary.failures}")
            for level in levels:  # each service loads the collection before timing starts
                clients[level].search(COLLECTION, queries[0], top_k=args.top_k)
            for n, data in enumerate(queries * args.rounds):
                ranked = {}
                for level in levels if n % 2 == 0 else levels[::-1]:
                    seconds, ranked[level] = timed_search(clients[level], data, args.top_k)
                    latencies[level].append(seconds)
                same += ranked[levels[0]] == ranked[levels[1]]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    calls = len(latencies[levels[0]])
    stats = {level: percentiles_ms(v) for level, v in latencies.items()}
    a, b = levels
    report: dict[str, Any] = {
        "benchmark": "search_consistency",
        "complete": True,
        "machine": machine,
        "args": {k: str(v) for k, v in vars(args).items()},
        "store": f"Milvus 2.3.5 standalone, time tick {args.time_tick_ms} ms",
        "collection_rows": len(photos),
        "calls_per_level": calls,
        "latency_ms": stats,
        "p50_ratio_b_over_a": stats[b]["p50"] / stats[a]["p50"],
        "same_ranking_fraction": same / calls,
        "note": "interleaved A B / B A at concurrency 1 on a shared machine: compare the ratio",
    }
    print(f"{'level':<10} {'calls':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for level in levels:
        s = stats[level]
        print(f"{level:<10} {calls:>6} {s['p50']:>8.1f} {s['p95']:>8.1f} {s['p99']:>8.1f}")
    print(f"p50 {b}/{a}: {report['p50_ratio_b_over_a']:.3f}; same ranking in "
          f"{same}/{calls} query pairs")  # fmt: skip
    write_json(args.json, report)
    return 0 if same == calls else 1


if __name__ == "__main__":
    raise SystemExit(main())
