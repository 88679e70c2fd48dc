"""Bounded gRPC load generator for the embedder and the search service.

Every run is bounded twice: by a request count and by a wall-clock limit, per concurrency level.
Prints QPS, images/s, latency percentiles and errors by status code, and can write JSON.
Search calls go through RisClient (its request builder, limits, TLS, tokens); Embed calls go to
the embedder's stub over the client library's channel (the same TLS, tokens and retries). Works
from a client-only install (Pillow only for synthetic images).

    python -m ris.tools.loadtest --target 127.0.0.1:50051 --call embed --concurrency 1,4,16 \\
        --images ~/photos --duration 20 --requests 2000 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np

from ris.api import embedder_pb2, embedder_pb2_grpc
from ris.client.client import RisClient
from ris.client.config import ClientConfig, RetryPolicy
from ris.client.connection_args import add_connection_arguments, config_from_args
from ris.client.errors import RisError
from ris.client.stub_channel import open_stub_channel
from ris.client.types import QueryLike
from ris.tools.stats import percentiles_ms

CALLS = ("embed", "search", "model-info")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass
class LoadSpec:
    """One load level: who to call, how hard, and the two bounds."""

    target: str
    call: str = "embed"
    concurrency: int = 1
    max_requests: int = 1000
    max_seconds: float = 10.0
    warmup_seconds: float = 1.0
    batch: int = 1  # images per Embed request / queries per Search request
    timeout_s: float = 30.0
    collection: str = ""
    top_k: int = 10


@dataclass
class LoadReport:
    call: str
    concurrency: int
    batch: int
    requests: int
    ok: int
    errors: dict[str, int]
    item_errors: int
    seconds: float
    qps: float
    images_per_s: float
    latency_ms: dict[str, float] = field(default_factory=dict)

    def row(self) -> str:
        lat = self.latency_ms
        errors = ",".join(f"{k}:{v}" for k, v in sorted(self.errors.items())) or "-"
        return (
            f"{self.call:<10} {self.concurrency:>5} {self.batch:>5} {self.requests:>8} "
            f"{self.qps:>9.1f} {self.images_per_s:>9.1f} {lat.get('p50', 0):>8.1f} "
            f"{lat.get('p95', 0):>8.1f} {lat.get('p99', 0):>8.1f}  {errors}"
        )


HEADER = (
    f"{'call':<10} {'conc':>5} {'batch':>5} {'requests':>8} {'qps':>9} {'images/s':>9} "
    f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  errors"
)


def load_images(paths: Sequence[str | Path], limit: int = 256) -> list[bytes]:
    """Image files named directly or found under folders (sorted), at most `limit` of them."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file() and path.suffix.lower() == ".txt":
            files.extend(
                Path(line.strip()) for line in path.read_text().splitlines() if line.strip()
            )
        else:
            files.append(path)
        if len(files) >= limit:
            break
    return [p.read_bytes() for p in files[:limit]]


def synthetic_images(count: int = 16, size: int = 320) -> list[bytes]:
    """Seeded noise-and-gradient JPEGs, for when no image folder is given."""
    import io

    from PIL import Image  # lazily: only this fallback needs it

    rng = np.random.default_rng(0)
    out = []
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    for _ in range(count):
        base = rng.uniform(0, 255, 3).astype(np.float32)
        array = (base + ramp[None, :, None] * 0.5 + rng.normal(0, 20, (size, size, 3))) % 256
        buffer = io.BytesIO()
        Image.fromarray(array.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def _call_factory(
    channel: grpc.Channel, spec: LoadSpec, images: list[bytes]
) -> Callable[[int], int]:
    """A function that makes request number i and returns how many items failed in it."""
    if spec.call == "model-info":
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        request = embedder_pb2.GetModelInfoRequest()

        def model_info(_i: int) -> int:
            stub.GetModelInfo(request, timeout=spec.timeout_s)
            return 0

        return model_info
    if spec.call == "embed":
        embed_stub = embedder_pb2_grpc.EmbedderStub(channel)

        def embed(i: int) -> int:
            picked = [images[(i * spec.batch + k) % len(images)] for k in range(spec.batch)]
            request = embedder_pb2.EmbedRequest(
                images=[embedder_pb2.ImageInput(data=d, id=str(k)) for k, d in enumerate(picked)]
            )
            response = embed_stub.Embed(request, timeout=spec.timeout_s)
            return sum(1 for r in response.results if r.HasField("error"))

        return embed
    if spec.call == "search":
        # Through the client library, as users call it (its request builder and limits), over
        # the level's channel, which carries TLS, the token and any retries: no RIS_* here.
        ris = RisClient(
            ClientConfig(address=spec.target, timeout=spec.timeout_s, retry=RetryPolicy(1)),
            channel=channel,
        )

        def search(i: int) -> int:
            picked: list[QueryLike] = [
                images[(i * spec.batch + k) % len(images)] for k in range(spec.batch)
            ]
            results = ris.search_batch(spec.collection, picked, top_k=spec.top_k)
            return sum(1 for r in results if not r.ok)

        return search
    raise ValueError(f"call must be one of {CALLS}, not {spec.call!r}")


def run_level(
    spec: LoadSpec, images: list[bytes], channel: grpc.Channel | None = None
) -> LoadReport:
    """Warm up, then run `concurrency` threads until max_requests or max_seconds (first wins)."""
    if spec.call != "model-info" and not images:
        raise ValueError("no images to send")
    own = channel is None
    if channel is None:
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        channel = grpc.insecure_channel(spec.target, options=options)
    try:
        grpc.channel_ready_future(channel).result(timeout=spec.timeout_s)
        call = _call_factory(channel, spec, images)
        _drive(call, spec.concurrency, spec.max_requests, spec.warmup_seconds, record=False)
        return _measure(call, spec)
    finally:
        if own:
            channel.close()


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    codes: Counter = field(default_factory=Counter)
    item_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _drive(
    call: Callable[[int], int],
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    record: bool = True,
) -> tuple[_Tally, float]:
    tally = _Tally()
    numbers = itertools.count()
    number_lock = threading.Lock()
    stop_at = time.monotonic() + max_seconds

    def worker() -> None:
        while time.monotonic() < stop_at:
            with number_lock:
                i = next(numbers)
            if i >= max_requests:
                return
            started = time.perf_counter()
            failed_items = 0
            try:
                failed_items = call(i)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name if exc.code() else "UNKNOWN"
            except RisError as exc:  # a search through RisClient
                code = exc.code.name if exc.code else "UNKNOWN"
            elapsed = time.perf_counter() - started
            if record:
                with tally.lock:
                    tally.codes[code] += 1
                    tally.item_errors += failed_items
                    if code == "OK":
                        tally.latencies.append(elapsed)

    if max_seconds <= 0:
        return tally, 0.0
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally, time.perf_counter() - started


def _measure(call: Callable[[int], int], spec: LoadSpec) -> LoadReport:
    tally, seconds = _drive(call, spec.concurrency, spec.max_requests, spec.max_seconds)
    total = sum(tally.codes.values())
    ok = tally.codes.get("OK", 0)
    seconds = max(seconds, 1e-9)
    images_per_request = spec.batch if spec.call != "model-info" else 0
    return LoadReport(
        call=spec.call,
        concurrency=spec.concurrency,
        batch=spec.batch,
        requests=total,
        ok=ok,
        errors={k: v for k, v in tally.codes.items() if k != "OK"},
        item_errors=tally.item_errors,
        seconds=seconds,
        qps=ok / seconds,
        images_per_s=(ok * images_per_request - tally.item_errors) / seconds,
        latency_ms=percentiles_ms(tally.latencies),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `python -m ris.tools.loadtest` (also mounted as `ris bench`)."""
    parser.add_argument("--target", default="127.0.0.1:50051", help="host:port to load")
    parser.add_argument("--call", choices=CALLS, default="embed")
    parser.add_argument(
        "--concurrency",
        default="1,4,16,64",
        help="comma-separated client concurrency levels (threads)",
    )
    parser.add_argument("--requests", type=int, default=1000, help="max requests per level")
    parser.add_argument("--duration", type=float, default=10.0, help="max seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per level")
    parser.add_argument("--batch", type=int, default=1, help="images (or queries) per request")
    parser.add_argument(
        "--images",
        nargs="*",
        default=[],
        help="image files, folders, or .txt lists of paths; default: synthetic",
    )
    parser.add_argument("--max-images", type=int, default=256, help="images kept in memory")
    parser.add_argument("--collection", default="", help="collection to search (call=search)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=30.0, help="per-call deadline, seconds")
    parser.add_argument("--json", dest="json_path", default=None, help="write results here")
    # TLS, token, retries as for every ris command; --retries defaults to 1 here (no retry), so
    # the table shows what the server answered; --retries 5 measures what a RisClient sees.
    add_connection_arguments(parser, address=False, timeout=False)


def _levels(text: str) -> list[int]:
    levels = [int(x) for x in str(text).split(",") if x.strip()]
    if not levels or min(levels) < 1:
        raise ValueError("--concurrency needs positive integers, e.g. 1,4,16")
    return levels


def run(args: argparse.Namespace) -> int:
    """Run every concurrency level, print a table, optionally write JSON. 0 when no call failed."""
    try:
        levels = _levels(args.concurrency)
    except ValueError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    if args.call == "search" and not args.collection:
        print("loadtest: --collection is needed for --call search", file=sys.stderr)
        return 2
    if args.call == "model-info":
        images: list[bytes] = []
    else:
        images = load_images(args.images, args.max_images) if args.images else synthetic_images()
    if args.call != "model-info" and not images:
        print("loadtest: no images found", file=sys.stderr)
        return 2
    try:
        config = config_from_args(args, address=args.target, retries=args.retries or 1)
    except ValueError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    reports = []
    print(HEADER)
    channel = open_stub_channel(config)
    for level in levels:
        spec = LoadSpec(
            target=args.target,
            call=args.call,
            concurrency=level,
            max_requests=args.requests,
            max_seconds=args.duration,
            warmup_seconds=args.warmup,
            batch=args.batch,
            timeout_s=args.timeout,
            collection=args.collection,
            top_k=args.top_k,
        )
        try:
            report = run_level(spec, images, channel)
        except grpc.FutureTimeoutError:
            print(f"loadtest: {args.target} not reachable within {args.timeout} s", file=sys.stderr)
            channel.close()
            return 1
        reports.append(report)
        print(report.row(), flush=True)
    channel.close()
    if args.json_path:
        Path(args.json_path).write_text(json.dumps([asdict(r) for r in reports], indent=2) + "\n")
    return 0 if all(not r.errors for r in reports) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ris.tools.loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
