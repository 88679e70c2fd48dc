"""Sustained load (search + ingest together) against real service processes, with RSS sampled.

Starts the embedder and the search service as subprocesses on 127.0.0.1 (so their memory is
their own and a kill is a real kill), drives ``--concurrency`` workers for ``--duration``
seconds (some ingest, the rest search), samples each process's RSS, then checks that every
stored item is there exactly once (ris.tools.soak). Writes a JSON report.

    python scripts/soak.py --duration 180 --concurrency 64 --json ris_results/soak.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ris.tools.bench import sample_images
from ris.tools.checkout import DEFAULT_MODEL
from ris.tools.harness import start_embedder, start_search
from ris.tools.soak import soak


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--ingest-workers", type=int, default=8, help="of --concurrency")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds left out of stats")
    parser.add_argument("--milvus-uri", default="", help="default: Milvus Lite in a temp dir")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--search-workers", type=int, default=16, help="search gRPC workers")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ris-soak-") as tmp:
        uri = args.milvus_uri or str(Path(tmp) / "soak.db")
        embedder = start_embedder(args.model)
        try:
            search = start_search(
                embedder.address, uri, extra_args=["--grpc-workers", str(args.search_workers)]
            )
            try:
                report = soak(
                    search,
                    {"embedder": embedder.pid, "search": search.pid},
                    sample_images(),
                    args.duration,
                    args.concurrency,
                    args.ingest_workers,
                    args.warmup,
                )
            finally:
                search.stop()
        finally:
            embedder.stop()
    text = json.dumps(asdict(report), indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    summary = {k: v for k, v in asdict(report).items() if k != "rss_mb"}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
