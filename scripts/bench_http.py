"""The HTTP gateway under load, on loopback, as `ris serve --http-port` runs it (the gateway in the
same process as both gRPC services): N concurrent HTTP image searches (a new connection each, as
browsers and scripts without keep-alive do) with the count of 200s, 4xx, 5xx and connection
resets, p50/p99 latency and QPS, beside its baseline from the same run: the same searches (same
photos, top_k, concurrency and time) as gRPC Search calls straight to the search service of that
process, one channel per client thread (RisClient.call, as the gateway itself calls it). For
each client count the two sides alternate, HTTP gRPC HTTP gRPC (--rounds of each, the
--duration split between them). Then the idle-connections check: IDLE connections held open
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from ris.api import search_pb2
from ris.client import IngestItem, RetryPolicy, RisClient
from ris.client.errors import RisError
from ris.tools.bench import sample_images
from ris.tools.harness import free_ports
from ris.tools.machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = "bench_http"
TOP_K = 5
HEADER = f"{'clients':>7} {'side':>5} {'requests':>8} {'ok':>6} {'errors':>6} {'resets':>6} "
HEADER += f"{'p50 ms':>8} {'p99 ms':>8} {'QPS':>6}"

# One search: the photo's index -> (outcome: "200" / "429" / "reset" or "OK" / a gRPC code, s).
Search = Callable[[int], tuple[str, float]]


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
            "POST", f"/v1/collections/{COLLECTION}:search?top_k={TOP_K}", body=image,
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


def _grpc_search_once(client: RisClient, request: search_pb2.SearchRequest) -> tuple[str, float]:
    """One gRPC Search on the thread's channel: ("OK" or the status code's name), seconds."""
    started = time.perf_counter()
    try:
        client.call("Search", request)
        outcome = "OK"
    except RisError as error:
        outcome = error.code.name if error.code is not None else "ERROR"
    return outcome, time.perf_counter() - started


def _run_round(searches: list[Search], duration_s: float) -> dict[str, Any]:
    """One thread per search function, searching back to back for ``duration_s``."""
    clients = len(searches)
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(index: int) -> None:
        start.wait(60)
        end = time.monotonic() + duration_s
        n = index
        while time.monotonic() < end:
            outcome, seconds = searches[index](n)
            n += clients
            with lock:
                outcomes[outcome] += 1
                if outcome in ("200", "OK"):
                    latencies.append(seconds)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration_s + 180)
    return {"outcomes": outcomes, "latencies": latencies, "elapsed_s": time.monotonic() - began}


def http_round(port: int, clients: int, duration_s: float, images: list[bytes]) -> dict[str, Any]:
    """``clients`` threads posting photos to the gateway, a new connection per request."""

    def search(n: int) -> tuple[str, float]:
        return _search_once(port, images[n % len(images)])

    return _run_round([search] * clients, duration_s)


def grpc_round(
    address: str, clients: int, duration_s: float, images: list[bytes]
) -> dict[str, Any]:
    """``clients`` threads calling Search on the search service, each on its own channel (its
    own connection: a local subchannel pool), connected before the round starts. The client's
    default retries, as the gateway's own client has them."""
    requests = []
    for image in images:
        request = search_pb2.SearchRequest(collection=COLLECTION, top_k=TOP_K)
        request.queries.add(image=image)
        requests.append(request)
    channels = [
        grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(clients)
    ]
    ris_clients = [RisClient(channel=c, address=address, timeout=120) for c in channels]
    try:
        for ris in ris_clients:
            ris.wait_ready(60)

        def searcher(ris: RisClient) -> Search:
            return lambda n: _grpc_search_once(ris, requests[n % len(requests)])

        return _run_round([searcher(ris) for ris in ris_clients], duration_s)
    finally:
        for channel in channels:
            channel.close()


def summarize(side: str, clients: int, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds at one client count together: counts, latency over all the successful
    requests, QPS over the rounds' total time."""
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    for r in rounds:
        outcomes.update(r["outcomes"])
        latencies.extend(r["latencies"])
    elapsed = sum(r["elapsed_s"] for r in rounds)
    ok_key, reset_key = ("200", "reset") if side == "http" else ("OK", "UNAVAILABLE")
    total = sum(outcomes.values())
    row: dict[str, Any] = {
        "side": side,
        "clients": clients,
        "requests": total,
        "ok": outcomes[ok_key],
        "errors": total - outcomes[ok_key] - outcomes[reset_key],
        "resets": outcomes[reset_key],
    }
    if side == "http":
        row["status_4xx"] = sum(n for k, n in outcomes.items() if k.startswith("4"))
        row["status_5xx"] = sum(n for k, n in outcomes.items() if k.startswith("5"))
    row.update(
        statuses=dict(outcomes),
        p50_ms=1000 * _percentile(latencies, 0.50),
        p99_ms=1000 * _percentile(latencies, 0.99),
        qps=outcomes[ok_key] / elapsed if elapsed else 0.0,
        rounds=[
            {
                "requests": sum(r["outcomes"].values()),
                "ok": len(r["latencies"]),
                "seconds": r["elapsed_s"],
                "p50_ms": 1000 * _percentile(r["latencies"], 0.50),
                "qps": len(r["latencies"]) / r["elapsed_s"] if r["elapsed_s"] else 0.0,
            }
            for r in rounds
        ],
    )
    return row


def interleaved(
    http_port: int, address: str, clients: int, duration_s: float, rounds: int, images: list[bytes]
) -> dict[str, Any]:
    """HTTP and gRPC rounds alternating (A B A B ...), ``duration_s / rounds`` each, so each
    side gets ``duration_s`` at this client count; both sides and their ratios."""
    round_s = duration_s / rounds
    done: dict[str, list[dict[str, Any]]] = {"http": [], "grpc": []}
    for _ in range(rounds):
        done["http"].append(http_round(http_port, clients, round_s, images))
        done["grpc"].append(grpc_round(address, clients, round_s, images))
    http_row, grpc_row = (
        summarize("http", clients, done["http"]),
        summarize("grpc", clients, done["grpc"]),
    )

    def ratio(key: str) -> float:
        return http_row[key] / grpc_row[key] if grpc_row[key] else float("nan")

    return {
        "clients": clients,
        "http": http_row,
        "grpc": grpc_row,
        "p50_ratio_http_over_grpc": ratio("p50_ms"),
        "qps_ratio_http_over_grpc": ratio("qps"),
    }


def _print_level(level: dict[str, Any]) -> None:
    for side, label in (("http", "HTTP"), ("grpc", "gRPC")):
        row = level[side]
        print(
            f"{level['clients']:>7} {label:>5} {row['requests']:>8} {row['ok']:>6} "
            f"{row['errors']:>6} {row['resets']:>6} "
            f"{row['p50_ms']:>8.0f} {row['p99_ms']:>8.0f} {row['qps']:>6.1f}",
            flush=True,
        )
    print(
        f"{'':>7} HTTP/gRPC: p50 x{level['p50_ratio_http_over_grpc']:.2f}, "
        f"QPS x{level['qps_ratio_http_over_grpc']:.2f}",
        flush=True,
    )


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
    parser.add_argument(
        "--duration", type=float, default=15.0, help="seconds per side per level, over its rounds"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side per level")
    parser.add_argument("--clients", default="20,50", help="concurrency levels")
    parser.add_argument("--idle", type=int, default=1100, help="idle connections to hold")
    parser.add_argument("--nofile", type=int, default=1024, help="server's soft open-files limit")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--note", default="2 vCPU VM shared with other jobs", help="the machine")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.idle + 1024:  # this process holds the client side of the idle connections
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.idle + 1024), hard))
    images = sample_images(48)
    grpc_port, embedder_port, http_port = free_ports(3)
    address = f"127.0.0.1:{grpc_port}"
    levels: list[dict[str, Any]] = []
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
            with RisClient(address=address, timeout=120) as ris:
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
                level = interleaved(http_port, address, clients, args.duration, args.rounds, images)
                levels.append(level)
                _print_level(level)
            idle = idle_check(server.pid, http_port, grpc_port, args.idle, images)
            print("idle check: " + ", ".join(f"{k}={v}" for k, v in idle.items()), flush=True)
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
    result = {
        "machine": {**machine_info(), "note": args.note},
        "server_nofile_soft_limit_at_start": args.nofile,
        "top_k": TOP_K,
        "duration_s_per_side_per_level": args.duration,
        "rounds_per_side": args.rounds,
        "order": "per client count: HTTP, gRPC, repeated --rounds times",
        "rows": levels,
        "idle": idle,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
