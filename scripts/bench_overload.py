"""Overload: both services at concurrency 1, 16, 64, 100, 256 with their defaults, beside the
old shedding (no admission queue), interleaved level by level. Records QPS, p50/p99 and the
count of each status code per level (docs/reliability.md, docs/results/bench_overload.json).

Starts the embedder and two search services (A: defaults, queue 128; B: --max-queued-calls 0,
which refuses beyond the 16 workers at once as gRPC's maximum_concurrent_rpcs used to) as
subprocesses on 127.0.0.1, each search service on its own Milvus Lite with the same 48 photos.
Calls go through tools/loadtest.py with no client retry (what the server answers), and once
more at 256 with RisClient's retry policy (what a caller sees).

    python scripts/bench_overload.py --duration 10 --json docs/results/bench_overload.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from ris.client import IngestItem, RisClient
from ris.client.config import ClientConfig, RetryPolicy
from ris.client.stub_channel import open_stub_channel
from ris.tools.bench import sample_images
from ris.tools.harness import start_embedder, start_search
from ris.tools.loadtest import HEADER, LoadReport, LoadSpec, run_level
from ris.tools.machine import machine_info

ROOT = Path(__file__).resolve().parent.parent

COLLECTION = "overload"
LEVELS = (1, 16, 64, 100, 256)


def _fill(address: str, images: list[bytes]) -> None:
    with RisClient(address=address, timeout=120) as ris:
        ris.create_collection(COLLECTION, exist_ok=True)
        items = [IngestItem(f"img{i}", data=d, label="x") for i, d in enumerate(images)]
        summary = ris.ingest(COLLECTION, items)
        assert summary.stored == len(images), summary.failures


def _level(
    target: str, call: str, level: int, images: list[bytes], args: argparse.Namespace, retries: int
) -> LoadReport:
    spec = LoadSpec(
        target=target,
        call=call,
        concurrency=level,
        max_requests=args.requests,
        max_seconds=args.duration,
        warmup_seconds=args.warmup,
        timeout_s=args.timeout,
        collection=COLLECTION if call == "search" else "",
    )
    config = ClientConfig(address=target, retry=RetryPolicy(max_attempts=retries))
    channel = open_stub_channel(config)
    try:
        return run_level(spec, images, channel)
    finally:
        channel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="max seconds per level")
    parser.add_argument("--requests", type=int, default=3000, help="max requests per level")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="per-call deadline")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    images = sample_images(48)
    rows: list[dict[str, object]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        embedder = start_embedder()
        services = {}
        try:
            services["queue_128"] = start_search(embedder.address, f"{tmp}/a.db")
            services["no_queue"] = start_search(
                embedder.address, f"{tmp}/b.db", extra_args=["--max-queued-calls", "0"]
            )
            for service in services.values():
                _fill(service.address, images)
            print(f"{'setup':<10} {HEADER}")

            def record(setup: str, target: str, call: str, level: int, retries: int) -> None:
                report = _level(target, call, level, images, args, retries)
                print(f"{setup:<10} {report.row()}", flush=True)
                rows.append({"setup": setup, "client_retries": retries > 1, **asdict(report)})

            for level in levels:  # A B per level: the same machine state for both
                for setup, service in services.items():
                    record(setup, service.address, "search", level, retries=1)
            for level in levels[-1:]:
                for setup, service in services.items():
                    record(f"{setup}+r", service.address, "search", level, retries=8)
            for level in levels:
                record("embedder", embedder.address, "embed", level, retries=1)
        finally:
            for service in services.values():
                service.stop()
            embedder.stop()
    result = {
        "machine": {**machine_info(), "note": "2 vCPU VM shared with other jobs; load avg below"},
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg()[0],
        "duration_s_per_level": args.duration,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
