"""Sustained load (search + ingest together) against real service processes, with RSS sampled.

Starts the embedder and the search service as subprocesses on 127.0.0.1 (so their memory is
their own and a kill is a real kill), drives ``--concurrency`` workers for ``--duration``
seconds (some ingest, the rest search), samples each process's RSS from /proc/PID/status, then
checks that every stored item is there exactly once. Every loop is bounded by a request count
and a deadline. Writes a JSON report.

    python scripts/soak.py --duration 180 --concurrency 64 --json ris_results/soak.json

The process helpers (``start_embedder``, ``start_search``, ``ServiceProcess.restart``) are also
what the fault and load tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ris.api import search_pb2, search_pb2_grpc  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "resnet50.onnx"
CALTECH = ROOT.parent / "shared" / "datasets" / "caltech101-ris"
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size of a live process, from /proc (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


@dataclass
class ServiceProcess:
    """A service subprocess on a fixed loopback port; restartable on that same port."""

    name: str
    argv: list[str]
    port: int
    metrics_port: int
    env: dict[str, str]
    cwd: Path
    process: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = START_TIMEOUT_S) -> ServiceProcess:
        """Launch and wait (bounded) for the "listening on" line."""
        proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.process = proc
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if len(self.log) < 2000:
                    self.log.append(line)
                lines.put(line)

        threading.Thread(target=pump, name=f"{self.name}-log", daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {''.join(self.log[-20:])}") from None
                continue
            if "listening on" in line:
                return self
        self.kill()
        raise TimeoutError(f"{self.name} did not start within {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful drain), SIGKILL after ``timeout``; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        return self.process.returncode

    def restart(self, timeout: float = START_TIMEOUT_S) -> ServiceProcess:
        """Start again on the same ports (a killed process's port is free at once)."""
        self.kill()
        return self.start(timeout)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def start_embedder(
    model: Path = DEFAULT_MODEL,
    port: int = 0,
    extra_args: Sequence[str] = (),
    timeout: float = START_TIMEOUT_S,
) -> ServiceProcess:
    """``python -m ris.embedder`` on 127.0.0.1 with a fixed port and a metrics port."""
    port = port or free_port()
    metrics = free_port()
    argv = [
        sys.executable,
        "-m",
        "ris.embedder",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics),
        "--model-paths",
        str(model),
        "--provider",
        "cpu",
        "--intra-op-threads",
        "2",
        "--shutdown-grace-s",
        "2",
        *extra_args,
    ]
    return ServiceProcess("embedder", argv, port, metrics, _env(), ROOT).start(timeout)


def start_search(
    embedder_address: str,
    milvus_uri: str,
    port: int = 0,
    extra_args: Sequence[str] = (),
    timeout: float = START_TIMEOUT_S,
) -> ServiceProcess:
    """``python -m ris.search`` on 127.0.0.1 over the given embedder(s) and Milvus."""
    port = port or free_port()
    metrics = free_port()
    argv = [
        sys.executable,
        "-m",
        "ris.search",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics),
        "--embedder-address",
        embedder_address,
        "--milvus-uri",
        milvus_uri,
        "--shutdown-grace-s",
        "5",
        *extra_args,
    ]
    return ServiceProcess("search", argv, port, metrics, _env(), ROOT).start(timeout)


def sample_images(limit: int = 48) -> list[bytes]:
    """Real photos (Caltech-101 subset) when present, else synthetic JPEGs."""
    files = sorted((CALTECH / "train").glob("*/*.jpg"))
    if files:
        step = max(1, len(files) // limit)
        return [p.read_bytes() for p in files[::step][:limit]]
    from ris.tools.loadtest import synthetic_images

    return synthetic_images(limit)


# -- the load ------------------------------------------------------------------------------------


@dataclass
class SoakReport:
    duration_s: float
    concurrency: int
    ingest_workers: int
    calls: dict[str, int]
    errors: dict[str, int]
    latency_ms: dict[str, dict[str, float]]
    items_sent: int
    items_stored: int
    items_failed: int
    count_after: int
    duplicates: int
    rss_mb: dict[str, list[tuple[float, float]]]
    rss_growth_mb: dict[str, float]
    loadavg_before: list[float]
    loadavg_after: list[float]
    machine: dict[str, str]


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values) * 1000.0
    return {
        "n": float(arr.size),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


def _machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class _Results:
    """Thread-safe tallies for the workers."""

    def __init__(self, warmup_until: float) -> None:
        self.lock = threading.Lock()
        self.warmup_until = warmup_until
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.latency: dict[str, list[float]] = {"search": [], "ingest": []}
        self.sent = self.stored = self.failed = 0
        self.failed_ids: list[str] = []
        self.sent_ids: list[str] = []

    def record(self, kind: str, started: float, error: str = "") -> None:
        now = time.monotonic()
        with self.lock:
            self.calls[kind] += 1
            if error:
                self.errors[f"{kind}:{error}"] += 1
            elif started >= self.warmup_until:
                self.latency[kind].append(now - started)


def _back_off(exc: grpc.RpcError, rng: random.Random) -> None:
    """What a polite client does when told the service is full: wait a little, with jitter."""
    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        time.sleep(rng.uniform(0.05, 0.2))


def drive(
    address: str,
    collection: str,
    images: list[bytes],
    duration_s: float,
    concurrency: int,
    ingest_workers: int,
    warmup_s: float = 10.0,
    items_per_ingest: int = 4,
    max_calls_per_worker: int = 100_000,
    timeout_s: float = 120.0,
) -> _Results:
    """Run the mixed load; returns the tallies (bounded by ``duration_s`` and the call cap)."""
    start = time.monotonic()
    deadline = start + duration_s
    results = _Results(start + warmup_s)
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = search_pb2_grpc.SearchServiceStub(channel)

    def ingest_worker(w: int) -> None:
        rng = random.Random(w)
        for n in range(max_calls_per_worker):
            if time.monotonic() >= deadline:
                return
            items = [
                search_pb2.Item(
                    id=f"w{w}-{n}-{k}",
                    image=rng.choice(images),
                    label=f"w{w}",
                    metadata={"worker": str(w)},
                )
                for k in range(items_per_ingest)
            ]
            request = search_pb2.IngestRequest(collection=collection, items=items)
            began = time.monotonic()
            try:
                summary = stub.Ingest(iter([request]), timeout=timeout_s)
            except grpc.RpcError as exc:
                results.record("ingest", began, exc.code().name)
                _back_off(exc, rng)
                with results.lock:
                    results.sent += len(items)
                    results.sent_ids += [i.id for i in items]
                    results.failed += len(items)
                    results.failed_ids += [i.id for i in items]
                continue
            results.record("ingest", began)
            with results.lock:
                results.sent += len(items)
                results.sent_ids += [i.id for i in items]
                results.stored += summary.stored
                results.failed += summary.failed
                results.failed_ids += [f.id for f in summary.failures]

    def search_worker(w: int) -> None:
        rng = random.Random(1000 + w)
        for n in range(max_calls_per_worker):
            if time.monotonic() >= deadline:
                return
            if n % 4 == 3:
                vector = np.random.default_rng(n).standard_normal(2048).astype(np.float32)
                query = search_pb2.Query(vector=search_pb2.Vector(values=vector.tolist()))
            else:
                query = search_pb2.Query(image=rng.choice(images))
            request = search_pb2.SearchRequest(collection=collection, queries=[query], top_k=10)
            began = time.monotonic()
            try:
                response = stub.Search(request, timeout=timeout_s)
            except grpc.RpcError as exc:
                results.record("search", began, exc.code().name)
                _back_off(exc, rng)
                continue
            error = response.results[0].error.code if response.results[0].HasField("error") else 0
            results.record("search", began, f"item-{error}" if error else "")

    threads = [
        threading.Thread(
            target=ingest_worker if w < ingest_workers else search_worker, args=(w,), daemon=True
        )
        for w in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic()) + timeout_s + 30)
    channel.close()
    return results


def sample_rss(
    pids: dict[str, int], stop: threading.Event, every_s: float, out: dict[str, list]
) -> None:
    """Append (seconds since start, RSS MB) per process every ``every_s`` until ``stop``."""
    start = time.monotonic()
    for _ in range(100_000):  # bounded; stop ends it long before
        t = round(time.monotonic() - start, 1)
        for name, pid in pids.items():
            out.setdefault(name, []).append((t, round(rss_mb(pid), 1)))
        if stop.wait(every_s):
            return


def rss_growth(series: list[tuple[float, float]], warmup_s: float) -> float:
    """Median RSS of the last quarter minus median RSS of the first quarter after warm-up."""
    after = [mb for t, mb in series if t >= warmup_s]
    if len(after) < 4:
        return 0.0
    q = len(after) // 4
    return float(np.median(after[-q:]) - np.median(after[:q]))


def verify_stored(address: str, collection: str, expected_ids: set[str]) -> tuple[int, int]:
    """(count, duplicates): Count, and how many ids Get returns more than once."""
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    stub = search_pb2_grpc.SearchServiceStub(channel)
    try:
        count = stub.Count(search_pb2.CountRequest(collection=collection), timeout=60).count
        seen: Counter[str] = Counter()
        ids = sorted(expected_ids)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            got = stub.Get(
                search_pb2.GetRequest(collection=collection, ids=chunk, limit=16384), timeout=60
            )
            seen.update(item.id for item in got.items)
        return count, sum(n - 1 for n in seen.values() if n > 1)
    finally:
        channel.close()


def soak(
    search: ServiceProcess,
    pids: dict[str, int],
    images: list[bytes],
    duration_s: float,
    concurrency: int,
    ingest_workers: int,
    warmup_s: float = 10.0,
    rss_every_s: float = 2.0,
) -> SoakReport:
    """Create a collection, drive the load while sampling RSS, verify what was stored."""
    name = f"soak_{int(time.time())}"
    channel = grpc.insecure_channel(search.address)
    search_pb2_grpc.SearchServiceStub(channel).CreateCollection(
        search_pb2.CreateCollectionRequest(name=name), timeout=120
    )
    channel.close()
    series: dict[str, list] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(pids, stop, rss_every_s, series))
    load_before = list(os.getloadavg())
    began = time.monotonic()
    sampler.start()
    try:
        results = drive(
            search.address, name, images, duration_s, concurrency, ingest_workers, warmup_s
        )
    finally:
        stop.set()
        sampler.join(timeout=30)
    elapsed = time.monotonic() - began
    load_after = list(os.getloadavg())
    stored_ids = set(results.sent_ids) - set(results.failed_ids)
    count, duplicates = verify_stored(search.address, name, stored_ids)
    return SoakReport(
        duration_s=round(elapsed, 1),
        concurrency=concurrency,
        ingest_workers=ingest_workers,
        calls=dict(results.calls),
        errors=dict(results.errors),
        latency_ms={k: _percentiles(v) for k, v in results.latency.items()},
        items_sent=results.sent,
        items_stored=results.stored,
        items_failed=results.failed,
        count_after=count,
        duplicates=duplicates,
        rss_mb=series,
        rss_growth_mb={k: round(rss_growth(v, warmup_s), 1) for k, v in series.items()},
        loadavg_before=load_before,
        loadavg_after=load_after,
        machine=_machine(),
    )


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
