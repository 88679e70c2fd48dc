"""Search latency at concurrency 1 of two embedder poolings, measured interleaved in one run.

Why: on a shared machine absolute latencies drift with the neighbours' load; the ratio of two
settings measured query by query in alternation (A B A B) does not. Starts one embedder and one
search service (its own Milvus Lite file) per pooling, ingests the same Caltech candidates into
each with the server defaults (DBA, αQE), then sends every query image to A and to B in turn,
one Search call at a time (tools/evaluation.py's search_each), and reports p50/p90 and the
p50 ratio.

    python scripts/bench_pooling_latency.py --json docs/results/bench_pooling_latency.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ris.client import RisClient
from ris.embedder.config import EmbedderConfig
from ris.embedder.server import start_server as start_embedder
from ris.search.config import SearchConfig
from ris.search.server import start_server as start_search
from ris.tools import evaluation

ROOT = Path(__file__).resolve().parent.parent

CALTECH = ROOT.parent / "shared" / "datasets" / "caltech101-ris"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--poolings", default="gem,gem_softmax", help="A,B: embedder poolings")
    ap.add_argument("--limit", type=int, default=1000, help="candidates ingested")
    ap.add_argument("--rounds", type=int, default=1, help="passes over the 100 queries")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    poolings = args.poolings.split(",")
    cands = evaluation.read_candidates(CALTECH / "reverse_image_search.csv")[: args.limit]
    queries = evaluation.read_queries(CALTECH / "queries.csv") * args.rounds
    latencies: dict[str, list[float]] = {p: [] for p in poolings}
    with ExitStack() as stack:
        clients = {}
        for pooling in poolings:
            embedder = start_embedder(
                EmbedderConfig(port=0, provider="cpu", pooling=pooling).validate()
            )
            stack.callback(embedder.stop, 1.0)
            lite = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ris-lat-")))
            search = start_search(
                SearchConfig(
                    port=0,
                    embedder_address=f"127.0.0.1:{embedder.port}",
                    milvus_uri=str(lite / "ris.db"),
                ).validate()
            )
            stack.callback(search.stop, 1.0)
            ris = stack.enter_context(
                RisClient(address=f"127.0.0.1:{search.port}", ingest_timeout=3600.0)
            )
            ris.create_collection("lat")
            summary = evaluation.ingest(ris, "lat", cands, show_progress=False)
            if summary["failed"]:
                raise RuntimeError(f"{pooling}: {summary['failed']} items failed to ingest")
            clients[pooling] = ris
        for q in queries:  # A B A B: both see the same load
            for pooling in poolings:
                _, ms = evaluation.search_each(
                    clients[pooling], "lat", [q], top_k=10, show_progress=False
                )
                latencies[pooling].extend(ms)
    p50 = {p: float(np.percentile(v, 50)) for p, v in latencies.items()}
    a, b = poolings
    report = {
        "candidates": len(cands),
        "queries": len(queries),
        "concurrency": 1,
        "note": "interleaved A B A B on a shared 2-vCPU machine: compare the ratio",
        "poolings": {
            p: {
                "p50_ms": round(p50[p], 1),
                "p90_ms": round(float(np.percentile(v, 90)), 1),
            }
            for p, v in latencies.items()
        },
        "p50_ratio": round(p50[b] / p50[a], 3),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
