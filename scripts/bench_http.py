"""The HTTP gateway under load, on loopback, as `ris serve --http-port` runs it (the gateway in the
same process as both gRPC services): N concurrent HTTP image searches (a new connection each, as
browsers and scripts without keep-alive do) with the count of 200s, 4xx, 5xx and connection
resets, p50/p99 latency and QPS; then the idle-connections check: IDLE connections held open
while gRPC health, Search and Ingest are timed, and an HTTP search on a fresh connection.

The server starts under ``ulimit -n 1024`` (--nofile), as in issue 37's report; the gateway
raises its own limit to fit its connections.

    python scripts/bench_http.py --duration 15 --json docs/results/bench_http.json
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from ris.client import IngestItem, RetryPolicy, RisClient
from ris.tools.bench import sample_images
from ris.tools.harness import free_ports
from ris.tools.machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = "bench_http"
HEADER = f"{'clients':>7} {'requests':>8} {'200':>6} {'4xx':>5} {'5xx':>5} {'resets':>6} "
HEADER += f"{'p50 ms':>8} {'p99 ms':>8} {'QPS':>6}"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _search_once(port: int, image: bytes) -> tuple[str, float]:
    """One HTTP search on a new connection: ("200" / "429" / ... or "reset"), seconds."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(
            "POST", f"/v1/collections/{COLLECTION}:search?top_k=5", body=image,
            headers={"Content-Type": "image/jpeg"},
        )  # fmt: skip
        reply = connection.getresponse()
        reply.read()
        outcome = str(reply.status)
    except (ConnectionError, http.client.HTTPException, OSError):
        outcome = "reset"
    finally:
        connection.close()
    return outcome, time.perf_counter() - started


def concurrent_searches(
    port: int, clients: int, duration_s: float, images: list[bytes]
) -> dict[str, Any]:
    """``clients`` threads searching back to back for ``duration_s``."""
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(index: int) -> None:
        start.wait(60)
        end = time.monotonic() + duration_s
        n = index
        while time.monotonic() < end:
            outcome, seconds = _search_once(port, images[n % len(images)])
            n += clients
            with lock:
                outcomes[outcome] += 1
                if outcome == "200":
                    latencies.append(seconds)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration_s + 180)
    elapsed = time.monotonic() - began
    total = sum(outcomes.values())
    return {
        "clients": clients,
        "requests": total,
        "ok_200": outcomes["200"],
        "status_4xx": sum(n for k, n in outcomes.items() if k.startswith("4")),
        "status_5xx": sum(n for k, n in outcomes.items() if k.startswith("5")),
        "resets": outcomes["reset"],
        "statuses": dict(outcomes),
        "p50_ms": 1000 * _percentile(latencies, 0.50),
        "p99_ms": 1000 * _percentile(latencies, 0.99),
        "qps": outcomes["200"] / elapsed if elapsed else 0.0,
    }


def idle_check(
    pid: int, http_port: int, grpc_port: int, count: int, images: list[bytes]
) -> dict[str, Any]:
    """``count`` idle HTTP connections open; gRPC health, Search, Ingest and HTTP meanwhile."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    idle: list[socket.socket] = []
    result: dict[str, Any] = {"idle_connections": count}
    try:
        for _ in range(count):
            idle.append(socket.create_connection(("127.0.0.1", http_port), timeout=10))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(os.listdir(f"/proc/{pid}/fd")) < count:
            time.sleep(0.1)
        result["server_fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        health_ms = []
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(5):
                started = time.perf_counter()
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                health_ms.append(1000 * (time.perf_counter() - started))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        result["grpc_health_max_ms"] = max(health_ms)
        retry = RetryPolicy(max_attempts=1)
        with RisClient(address=f"127.0.0.1:{grpc_port}", timeout=60, retry=retry) as ris:
            started = time.perf_counter()
            hits = ris.search(COLLECTION, images[0], top_k=3).hits
            result["grpc_search_ms"] = 1000 * (time.perf_counter() - started)
            result["grpc_search_ok"] = bool(hits)
            started = time.perf_counter()
            items = [IngestItem(f"idle{i}", data=d) for i, d in enumerate(images[:4])]
            stored = ris.ingest(COLLECTION, items).stored
            result["grpc_ingest_ms"] = 1000 * (time.perf_counter() - started)
            result["grpc_ingest_ok"] = stored == len(items)
        outcome, seconds = _search_once(http_port, images[1])
        result["http_search_status"] = outcome
        result["http_search_ms"] = 1000 * seconds
        result["idle_still_open"] = sum(_still_open(s) for s in idle)
    finally:
        for sock in idle:
            sock.close()
    return result


def _still_open(sock: socket.socket) -> bool:
    """The server has not closed it (nothing to read, no EOF)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _limit_nofile(soft: int) -> Any:
    def apply() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per level")
    parser.add_argument("--clients", default="20,50", help="concurrency levels")
    parser.add_argument("--idle", type=int, default=1100, help="idle connections to hold")
    parser.add_argument("--nofile", type=int, default=1024, help="server's soft open-files limit")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.idle + 1024:  # this process holds the client side of the idle connections
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.idle + 1024), hard))
    images = sample_images(48)
    grpc_port, embedder_port, http_port = free_ports(3)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ris.cli", "serve", "--port", str(grpc_port)]
        cmd += ["--embedder-port", str(embedder_port), "--http-port", str(http_port)]
        cmd += ["--provider", "cpu", "--milvus-uri", f"{tmp}/m.db"]
        env = {**os.environ, "RIS_HTTP_HEADER_TIMEOUT_S": "120"}  # idle ones stay for the check
        server = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_limit_nofile(args.nofile),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            with RisClient(address=f"127.0.0.1:{grpc_port}", timeout=120) as ris:
                ris.wait_ready(300)
                while time.monotonic() < deadline:
                    with contextlib.suppress(OSError):
                        connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
                        connection.request("GET", "/v1/collections")
                        if connection.getresponse().status == 200:
                            break
                    time.sleep(0.5)
                ris.create_collection(COLLECTION, exist_ok=True)
                items = [IngestItem(f"img{i}", data=d) for i, d in enumerate(images)]
                assert ris.ingest(COLLECTION, items).stored == len(images)
            print(HEADER)
            for clients in [int(c) for c in args.clients.split(",")]:
                row = concurrent_searches(http_port, clients, args.duration, images)
                rows.append(row)
                print(
                    f"{row['clients']:>7} {row['requests']:>8} {row['ok_200']:>6} "
                    f"{row['status_4xx']:>5} {row['status_5xx']:>5} {row['resets']:>6} "
                    f"{row['p50_ms']:>8.0f} {row['p99_ms']:>8.0f} {row['qps']:>6.1f}",
                    flush=True,
                )
            idle = idle_check(server.pid, http_port, grpc_port, args.idle, images)
            print("idle check: " + ", ".join(f"{k}={v}" for k, v in idle.items()), flush=True)
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
    result = {
        "machine": {**machine_info(), "note": "2 vCPU VM shared with other jobs"},
        "server_nofile_soft_limit_at_start": args.nofile,
        "duration_s_per_level": args.duration,
        "rows": rows,
        "idle": idle,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
