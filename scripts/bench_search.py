"""Search-by-image latency and throughput through the real services, split into embed and Milvus.

1. Starts the embedder and the search service (subprocesses on 127.0.0.1, Milvus Lite inside the
   search service) and ingests the candidate photos into a fresh collection.
2. direct (the baseline, same run): one process, one query at a time, no gRPC services:
   decode + preprocess, one session run with batch 1 (the server's session options), one
   MilvusClient.search on a Milvus Lite copy of the same vectors and index.
3. service: tools/loadtest.py's run_level with one image query per Search call at each client
   concurrency (1 = latency, then 4, 16, 64 = throughput with p99). Each response's
   embed_seconds / milvus_seconds (filled by the search service) are collected through a client
   interceptor, so every level reports the split besides the total.
4. paired (--paired N, before the levels): for each of N query photos, one Search through the
   service, then the same photo through the direct path; median and p90 of (embed_seconds -
   direct embed) and of (Search latency - direct embed and Milvus search), pair by pair, so
   the VM's drift from minute to minute, which the unpaired rows carry, cancels out.

    python scripts/bench_search.py --limit 1000 --json out/bench_search.json
    python scripts/bench_search.py --limit 100 --concurrency 1 --paired 60
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ris.api import search_pb2
from ris.client import RisClient
from ris.client.config import ClientConfig, RetryPolicy
from ris.client.types import IngestItem
from ris.embedder.config import EmbedderConfig
from ris.embedder.preprocessing import prepare, with_resize_mode
from ris.embedder.runtime import ModelRuntime
from ris.tools.bench import add_embedder_args, embedder_config, existing, release_lite, write_json
from ris.tools.checkout import CALTECH_TEST, CALTECH_TRAIN
from ris.tools.harness import (
    embedder_env,
    free_ports,
    service_env,
    start_configured_embedder,
    start_search,
    stop_process,
)
from ris.tools.loadtest import MAX_MESSAGE_BYTES, LoadSpec, load_images, run_level
from ris.tools.machine import describe_machine, machine_info
from ris.tools.milvus_standalone import milvus_server_uri
from ris.tools.stats import percentiles_ms

ROOT = Path(__file__).resolve().parent.parent

COLLECTION = "bench_search"


class StageRecorder(grpc.UnaryUnaryClientInterceptor):
    """Keeps embed_seconds / milvus_seconds of every successful SearchResponse on the channel."""

    def __init__(self) -> None:
        self.embed: list[float] = []
        self.milvus: list[float] = []
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self.embed, self.milvus = [], []

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        outcome = continuation(client_call_details, request)
        if outcome.exception() is None:
            response = outcome.result()
            if isinstance(response, search_pb2.SearchResponse):
                with self._lock:
                    self.embed.append(response.embed_seconds)
                    self.milvus.append(response.milvus_seconds)
        return outcome


DirectCall = Callable[[bytes], tuple[float, float]]


@contextmanager
def direct_path(
    config: EmbedderConfig, vectors: np.ndarray, args: argparse.Namespace, uri: str
) -> Iterator[DirectCall]:
    """The direct path in this process, no gRPC services: yields one(data) -> (embed seconds,
    Milvus seconds), i.e. decode + embed (batch 1, the server's session options) and one
    MilvusClient.search on a copy of the vectors (Lite: its own ``.db`` in this process;
    server: another collection)."""
    from pymilvus import DataType, MilvusClient

    runtime = ModelRuntime(config.model_paths[0], config)
    # the geometry the embedder serves (config.resize_mode), not the metadata's: the same work
    spec = with_resize_mode(runtime.metadata.preprocessing, config.resize_mode)
    runtime.warm_up(1)
    client = MilvusClient(uri=uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
    schema.add_field("label", DataType.VARCHAR, max_length=1024)
    index = MilvusClient.prepare_index_params()
    index.add_index(field_name="embedding", index_type=args.index_type, metric_type="COSINE")
    client.create_collection("direct", schema=schema, index_params=index)
    try:
        for start in range(0, len(vectors), 1000):  # 8 MB per insert at 2048-d
            rows = [
                {"id": f"img-{start + i}", "embedding": v, "label": "bench"}
                for i, v in enumerate(vectors[start : start + 1000])
            ]
            client.insert("direct", rows)
        client.flush("direct")
        client.load_collection("direct")

        def one(data: bytes) -> tuple[float, float]:
            t0 = time.perf_counter()
            vector = runtime.infer(prepare(data, spec)[None])[0]
            t1 = time.perf_counter()
            client.search(
                "direct",
                data=[vector.tolist()],
                limit=args.top_k,
                output_fields=["id", "label"],
                search_params={"metric_type": "COSINE"},
            )
            return t1 - t0, time.perf_counter() - t1

        yield one
        client.drop_collection("direct")
    finally:
        client.close()
        release_lite(uri)


def direct_baseline(
    one: DirectCall, queries: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    """One query at a time through the direct path, up to --requests or --duration."""
    embed_s: list[float] = []
    milvus_s: list[float] = []
    for data in queries[: min(3, len(queries))]:  # warm-up
        one(data)
    stop_at = time.perf_counter() + args.duration
    for i in range(args.requests):
        if time.perf_counter() > stop_at:
            break
        embed, milvus = one(queries[i % len(queries)])
        embed_s.append(embed)
        milvus_s.append(milvus)
    totals = [e + m for e, m in zip(embed_s, milvus_s, strict=True)]
    return {
        "requests": len(totals),
        "latency_ms": percentiles_ms(totals),
        "embed_ms": percentiles_ms(embed_s),
        "milvus_ms": percentiles_ms(milvus_s),
        "qps": len(totals) / max(sum(totals), 1e-9),
    }


def recorded_channel(address: str) -> tuple[grpc.Channel, grpc.Channel, StageRecorder]:
    """A channel to ``address``, the same one intercepted by a StageRecorder, and the recorder."""
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    recorder = StageRecorder()
    base = grpc.insecure_channel(address, options=options)
    return base, grpc.intercept_channel(base, recorder), recorder


def paired_c1(
    address: str, one: DirectCall, queries: list[bytes], pairs: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Concurrency 1, paired: for each of ``pairs`` query photos, one Search through the
    service, then the same photo through the direct path; the differences of each pair are
    free of the VM's drift from minute to minute, which unpaired rows carry."""
    base, channel, recorder = recorded_channel(address)
    config = ClientConfig(address=address, timeout=60.0, retry=RetryPolicy(1))
    client = RisClient(config, channel=channel)
    service_embed: list[float] = []
    direct_embed: list[float] = []
    embed_gap: list[float] = []
    total_gap: list[float] = []
    try:
        for i in range(-min(3, pairs), pairs):  # the first (negative i) are a warm-up
            data = queries[i % len(queries)]
            recorder.clear()
            t0 = time.perf_counter()
            client.search(COLLECTION, data, top_k=args.top_k)
            latency = time.perf_counter() - t0
            embed, milvus = one(data)
            if i < 0:
                continue
            (served,) = recorder.embed
            service_embed.append(served)
            direct_embed.append(embed)
            embed_gap.append(served - embed)
            total_gap.append(latency - (embed + milvus))
    finally:
        base.close()
    quantiles = (50, 90)
    return {
        "pairs": len(embed_gap),
        "service_embed_ms": percentiles_ms(service_embed, quantiles),
        "direct_embed_ms": percentiles_ms(direct_embed, quantiles),
        "embed_minus_direct_ms": percentiles_ms(embed_gap, quantiles),
        "total_minus_direct_ms": percentiles_ms(total_gap, quantiles),
    }


def fill_collection(client: RisClient, candidates: list[bytes], index_type: str) -> dict[str, Any]:
    """Ingest the candidates through the service; returns timing and their stored vectors."""
    client.create_collection(COLLECTION, index_type=index_type)
    items = [IngestItem(id=f"img-{i}", data=d, label="bench") for i, d in enumerate(candidates)]
    started = time.perf_counter()
    summary = client.ingest(COLLECTION, items)
    seconds = time.perf_counter() - started
    if summary.failed:
        raise RuntimeError(f"ingest failed for {summary.failed} items: {summary.failures[:3]}")
    ids = [it.id for it in items]
    vectors: list[list[float]] = []
    for start in range(0, len(ids), 256):
        chunk = ids[start : start + 256]
        stored = client.get(COLLECTION, chunk, limit=len(chunk), include_vectors=True)
        page = {s.id: s.vector for s in stored}
        vectors.extend(page[i] or [] for i in chunk)
    return {
        "stored": summary.stored,
        "seconds": seconds,
        "images_per_s": summary.stored / seconds,
        "vectors": np.asarray(vectors, dtype=np.float32),
    }


def service_levels(
    address: str, queries: list[bytes], levels: list[int], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """run_level per concurrency, on one intercepted channel that records the stage split."""
    base, channel, recorder = recorded_channel(address)
    out = []
    try:
        for level in levels:
            spec = LoadSpec(
                target=address,
                call="search",
                concurrency=level,
                max_requests=args.requests,
                max_seconds=args.warmup,
                warmup_seconds=0.0,
                collection=COLLECTION,
                top_k=args.top_k,
                timeout_s=60.0,
            )
            if args.warmup > 0:
                run_level(spec, queries, channel)  # warm-up, its split discarded
            recorder.clear()
            spec.max_seconds = args.duration
            report = run_level(spec, queries, channel)
            row = {
                "concurrency": level,
                "requests": report.requests,
                "ok": report.ok,
                "errors": report.errors,
                "item_errors": report.item_errors,
                "seconds": report.seconds,
                "qps": report.qps,
                "latency_ms": report.latency_ms,
                "embed_ms": percentiles_ms(recorder.embed),
                "milvus_ms": percentiles_ms(recorder.milvus),
                "split_samples": len(recorder.embed),
            }
            print(_row(f"service c={level}", row), flush=True)
            out.append(row)
    finally:
        base.close()
    return out


HEADER = (
    f"{'path':<16} {'reqs':>6} {'qps':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
    f"{'embed p50/p99':>15} {'milvus p50/p99':>15}  errors"
)


def _row(label: str, r: dict[str, Any]) -> str:
    lat, emb, mil = r["latency_ms"], r["embed_ms"], r["milvus_ms"]
    errors = ",".join(f"{k}:{v}" for k, v in sorted(r.get("errors", {}).items())) or "-"
    return (
        f"{label:<16} {r['requests']:>6} {r['qps']:>7.1f} {lat.get('p50', 0):>8.1f} "
        f"{lat.get('p95', 0):>8.1f} {lat.get('p99', 0):>8.1f} "
        f"{emb.get('p50', 0):>7.1f}/{emb.get('p99', 0):<7.1f} "
        f"{mil.get('p50', 0):>7.1f}/{mil.get('p99', 0):<7.1f}  {errors}"
    )


@contextmanager
def two_processes(config: EmbedderConfig, args: argparse.Namespace, uri: str) -> Iterator[str]:
    """The embedder and the search service as two processes; yields the search address."""
    embedder = start_configured_embedder(config)
    try:
        extra = ["--grpc-workers", str(max(args.search_workers, max(args.levels) + 4))]
        search = start_search(embedder.address, uri, extra_args=["--log-level", "WARNING", *extra])
        try:
            yield search.address
        finally:
            search.stop(timeout=60)
    finally:
        embedder.stop(timeout=60)


@contextmanager
def one_process(config: EmbedderConfig, args: argparse.Namespace, uri: str) -> Iterator[str]:
    """`ris serve`: both services in one process (the embedder's settings from ``config``
    through its RIS_EMBEDDER_* variables); yields the search address once it answers."""
    port, embedder_port = free_ports(2)
    env = embedder_env(config)
    env["RIS_SEARCH_GRPC_WORKERS"] = str(max(args.search_workers, max(args.levels) + 4))
    argv = [
        sys.executable, "-m", "ris.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--embedder-port", str(embedder_port), "--milvus-uri", uri,
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, env=service_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with RisClient(address=f"127.0.0.1:{port}") as client:
            client.wait_ready(timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(process, timeout=60)


def _paired_row(p: dict[str, Any]) -> str:
    emb, tot = p["embed_minus_direct_ms"], p["total_minus_direct_ms"]
    return (
        f"{'paired c=1':<16} {p['pairs']:>6} pairs: embed - direct p50 {emb.get('p50', 0):+.1f}"
        f" p90 {emb.get('p90', 0):+.1f} ms; total - direct (embed + Milvus) p50 "
        f"{tot.get('p50', 0):+.1f} p90 {tot.get('p90', 0):+.1f} ms"
    )


def run_all(
    config: EmbedderConfig,
    candidates: list[bytes],
    queries: list[bytes],
    args: argparse.Namespace,
    service_uri: str,
    direct_uri: str,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """Start the services, fill the collection, then the direct baseline, the paired measure
    (if asked for) and the levels."""
    deployment = one_process if args.deployment == "serve" else two_processes
    with deployment(config, args, service_uri) as address:
        with RisClient(address=address) as client:
            client.wait_ready(timeout=60)
            filled = fill_collection(client, candidates, args.index_type)
        print(
            f"ingested {filled['stored']} in {filled['seconds']:.1f} s "
            f"({filled['images_per_s']:.1f} images/s)",
            flush=True,
        )
        print(HEADER)
        paired = None
        with direct_path(config, filled.pop("vectors"), args, direct_uri) as one:
            direct = direct_baseline(one, queries, args)
            print(_row("direct (no gRPC)", direct), flush=True)
            if args.paired:
                paired = paired_c1(address, one, queries, args.paired, args)
                print(_paired_row(paired), flush=True)
        levels = service_levels(address, queries, args.levels, args)
    return levels, filled, direct, paired


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--images", nargs="*", default=None, help=f"candidates (default: {CALTECH_TRAIN})"
    )
    parser.add_argument("--limit", type=int, default=1000, help="candidates to ingest")
    parser.add_argument(
        "--queries", nargs="*", default=None, help=f"query photos (default: {CALTECH_TEST})"
    )
    parser.add_argument("--query-limit", type=int, default=100)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--requests", type=int, default=1000, help="max requests per level")
    parser.add_argument("--duration", type=float, default=30.0, help="max seconds per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per level")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--index-type", default="AUTOINDEX")
    parser.add_argument(
        "--store", default="lite", choices=("lite", "server"), help="Milvus Lite or milvus-server"
    )
    parser.add_argument(
        "--deployment",
        default="two",
        choices=("two", "serve"),
        help="two processes (embedder, search service) or one (`ris serve`)",
    )
    add_embedder_args(parser)
    parser.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="N",
        help="also N Searches at concurrency 1, each followed by the same photo's direct path",
    )
    parser.add_argument("--search-workers", type=int, default=80, help="search service threads")
    parser.add_argument("--json", dest="json_path", type=Path, default=None)
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not args.levels or min(args.levels) < 1:
        parser.error("--concurrency needs positive integers")
    if args.paired < 0:
        parser.error("--paired needs a count >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = embedder_config(args, max_queue_images=max(256, 2 * max(args.levels)))
    candidates = load_images(args.images or existing([CALTECH_TRAIN]), args.limit)
    queries = load_images(args.queries or existing([CALTECH_TEST]), args.query_limit)
    if not candidates or not queries:
        print("bench_search: no candidate or query photos found", file=sys.stderr)
        return 2
    machine = machine_info()
    print(f"machine: {describe_machine(machine)}")
    print(
        f"{len(candidates)} candidates, {len(queries)} query photos, index {args.index_type}, "
        f"Milvus {args.store}"
    )

    db_dir = Path(tempfile.mkdtemp(prefix="ris-bench-search-"))
    try:
        with ExitStack() as stack:
            service_uri, direct_uri = str(db_dir / "service.db"), str(db_dir / "direct.db")
            if args.store == "server":
                service_uri = direct_uri = stack.enter_context(milvus_server_uri(db_dir))
            levels, filled, direct, paired = run_all(
                config, candidates, queries, args, service_uri, direct_uri
            )
    finally:
        shutil.rmtree(db_dir, ignore_errors=True)

    c1 = next((r for r in levels if r["concurrency"] == 1), levels[0])
    best = max(levels, key=lambda r: r["qps"])
    ratios = {
        "c1_p50_over_direct_p50": c1["latency_ms"].get("p50", 0) / direct["latency_ms"]["p50"],
        "c1_overhead_ms_p50": c1["latency_ms"].get("p50", 0) - direct["latency_ms"]["p50"],
        "best_qps_over_direct_qps": best["qps"] / direct["qps"],
    }
    print(
        f"concurrency 1: p50 {c1['latency_ms'].get('p50', 0):.1f} ms = "
        f"{ratios['c1_p50_over_direct_p50']:.2f}x direct "
        f"(service minus direct: {ratios['c1_overhead_ms_p50']:+.1f} ms); best throughput "
        f"{best['qps']:.1f} qps at concurrency {best['concurrency']} = "
        f"{ratios['best_qps_over_direct_qps']:.2f}x direct one-at-a-time"
    )
    write_json(
        args.json_path,
        {
            "benchmark": "search",
            "machine": machine,
            "candidates": len(candidates),
            "queries": len(queries),
            "index_type": args.index_type,
            "store": args.store,
            "args": {k: str(v) for k, v in vars(args).items()},
            "ingest": filled,
            "direct": direct,
            "levels": levels,
            "paired_c1": paired,
            "ratios": ratios,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
