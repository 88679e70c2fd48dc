"""The HTTP gateway on its server stack, probed as an unfriendly caller would (issue 37, items 1,
2 and 8): concurrent searches answered without resets, idle connections that never starve the
gRPC services, slowloris connections closed, protocol edges answered with a clean 4xx and no
traceback, no internal address or version given away. Real services on loopback: the session's
embedder (real model), a search service on Milvus Lite that checks tokens, the gateway
in-process (and `ris serve --http-port` as a subprocess for the open-files test)."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import resource
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from search_fixtures import running_search, search_config

from ris.client import IngestItem, RetryPolicy, RisClient
from ris.client.config import ClientConfig
from ris.gateway.app import Gateway
from ris.gateway.settings import HttpSettings
from ris.tools.harness import free_port

ROOT = Path(__file__).resolve().parent.parent
READ, WRITE = "gw-read-token-1", "gw-write-token-1"
BEARER = f"Bearer {READ}"
COLLECTION = "gw_photos"
CLASSES = ("Leopards", "Motorbikes")
# Short timeouts, so the slowloris checks take seconds.
SETTINGS = HttpSettings(
    port=0, header_timeout_s=1.0, body_timeout_s=1.0, keep_alive_timeout_s=1.0, max_requests=64
)


@pytest.fixture(scope="module")
def folder(caltech: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gw_photos")
    for cls in CLASSES:
        (root / cls).mkdir()
        for i in (1, 2):
            name = f"image_{i:04d}.jpg"
            shutil.copy(caltech / "train" / cls / name, root / cls / name)
    return root


@pytest.fixture(scope="module")
def search(embedder_server: Any, folder: Path, tmp_path_factory: pytest.TempPathFactory):
    """A search service that checks tokens; its collection filled with the photos."""
    config = search_config(
        embedder_server.address,
        str(tmp_path_factory.mktemp("gw_milvus") / "m.db"),
        read_tokens=READ,
        write_tokens=WRITE,
        allowed_roots=[folder],
    )
    with running_search(config) as server:
        with RisClient(address=server.address, token=WRITE, timeout=120) as ris:
            ris.create_collection(COLLECTION, exist_ok=True)
            assert ris.ingest_folder(COLLECTION, folder).stored == 4
        yield server


@pytest.fixture(scope="module")
def gateway(search: Any) -> Iterator[Gateway]:
    running = Gateway(ClientConfig(address=search.address, timeout=60), settings=SETTINGS).start()
    yield running
    running.stop()


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The test logs no traceback, from the gateway or uvicorn (both run in this process)."""
    caplog.set_level(logging.INFO)
    yield
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert "Traceback" not in caplog.text


def exchange(port: int, data: bytes, wait_s: float = 3.0) -> bytes:
    """Send raw bytes, read until the server closes or ``wait_s`` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(data)
        return read_until_closed(sock, wait_s)


def read_until_closed(sock: socket.socket, wait_s: float) -> bytes:
    received = b""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        received += chunk
    return received


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


def json_of(raw: bytes) -> dict[str, Any]:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


def request(port: int, method: str, path: str, body: bytes = b"", **headers: str):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


# -- the client's per-call credential, which the gateway is built on ------------------------


def test_client_calls_carry_the_authorization_given_per_view(search: Any) -> None:
    from ris.api import search_pb2
    from ris.client.errors import Unauthenticated

    request = search_pb2.ListCollectionsRequest()
    with RisClient(address=search.address, timeout=30) as anonymous:
        with pytest.raises(Unauthenticated):
            anonymous.call("ListCollections", request)
        reader = anonymous.with_authorization(BEARER)
        names = [c.name for c in reader.call("ListCollections", request).collections]
        assert COLLECTION in names
        reader.close()  # a view: the channel stays open for the client it came from
        with pytest.raises(Unauthenticated):
            anonymous.with_authorization("").call("ListCollections", request)
        with pytest.raises(Unauthenticated):
            anonymous.call("ListCollections", request)  # the view lent nothing back


# -- item 2: concurrent searches ---------------------------------------------------------------


def test_fifty_concurrent_searches_are_all_answered(gateway: Gateway, folder: Path) -> None:
    """50 clients at once, 2 image searches each, a new connection each: no connection is reset
    and every request is answered (200) or refused with a status (429/503)."""
    photo = (folder / "Leopards" / "image_0001.jpg").read_bytes()
    clients, rounds = 50, 2
    start = threading.Barrier(clients)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def client() -> None:
        start.wait(30)
        for _ in range(rounds):
            try:
                status, _, _ = request(
                    gateway.port, "POST", f"/v1/collections/{COLLECTION}:search?top_k=3", photo,
                    **{"Content-Type": "image/jpeg", "Authorization": BEARER},
                )  # fmt: skip
                outcome = str(status)
            except (ConnectionError, http.client.HTTPException, OSError) as error:
                outcome = f"reset: {type(error).__name__}"
            with lock:
                outcomes[outcome] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sum(outcomes.values()) == clients * rounds, outcomes
    assert set(outcomes) <= {"200", "429", "503"}, outcomes
    assert outcomes["200"] > 0, outcomes


# -- item 1: idle connections ------------------------------------------------------------------


def _raise_own_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"open-files hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _ulimit_1024() -> None:  # in the child, before exec: `ulimit -n 1024`, as in the report
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


def test_idle_connections_leave_grpc_serving(
    embedder_server: Any, folder: Path, tmp_path: Path
) -> None:
    """`ris serve --http-port` under `ulimit -n 1024`: 1,100 idle HTTP connections held open,
    and meanwhile gRPC health answers within 1 s, Ingest and Search succeed, HTTP answers."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"open-files hard limit {hard}: 1,100 connections need more")
    _raise_own_open_files(4096)
    port, http_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "ris.cli", "serve", "--port", str(port), "--http-port"]
    cmd += [str(http_port), "--embedder-address", embedder_server.address]
    cmd += ["--milvus-uri", str(tmp_path / "m.db")]
    env = {**os.environ, "RIS_HTTP_HEADER_TIMEOUT_S": "120", "RIS_SEARCH_ALLOWED_ROOTS": ""}
    process = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=_ulimit_1024,
    )  # fmt: skip
    idle: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(OSError):
                if request(http_port, "GET", "/v1/collections")[0] == 200:
                    break
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        for _ in range(1100):
            idle.append(socket.create_connection(("127.0.0.1", http_port), timeout=5))
        fds = Path(f"/proc/{process.pid}/fd")
        deadline = time.monotonic() + 20
        while len(os.listdir(fds)) < 1100 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(os.listdir(fds)) >= 1100  # the server holds them all, not the backlog

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            started = time.monotonic()
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1.0
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert time.monotonic() - started < 1.0
        retry = RetryPolicy(max_attempts=2, initial_backoff=0.1)
        with RisClient(address=f"127.0.0.1:{port}", timeout=60, retry=retry) as ris:
            ris.create_collection("idle", exist_ok=True)
            photos = sorted((folder / "Leopards").iterdir())
            items = [IngestItem(id=p.name, path=p) for p in photos]
            assert ris.ingest("idle", items).stored == len(items)
            assert ris.search("idle", photos[0], top_k=1).hits[0].id == photos[0].name
        assert request(http_port, "GET", "/v1/collections")[0] == 200
        assert all(s.fileno() >= 0 for s in idle)  # still ours, still open
    finally:
        for sock in idle:
            sock.close()
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# -- slowloris, and the connection cap ---------------------------------------------------------


def trickle(port: int, prefix: bytes, data: bytes, interval_s: float) -> tuple[float, bytes]:
    """Send ``prefix``, then ``data`` a byte every ``interval_s`` but never its last byte, until
    the server answers or closes (or 6 s pass); the seconds that took and what came back."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.monotonic()
        sock.sendall(prefix)
        for i in range(len(data) - 1):
            answered, _, _ = select.select([sock], [], [], interval_s)
            if answered or time.monotonic() - started > 6.0:
                break
            try:
                sock.sendall(data[i : i + 1])
            except OSError:
                break
        return time.monotonic() - started, read_until_closed(sock, 3.0)


def test_silent_and_trickling_connections_are_closed(gateway: Gateway, no_tracebacks) -> None:
    """A connection that sends nothing, or its headers or body a byte at a time, is closed
    after its timeout (1 s here), however it keeps sending."""
    with socket.create_connection(("127.0.0.1", gateway.port)) as silent:
        started = time.monotonic()
        assert read_until_closed(silent, 5.0) == b""
        assert time.monotonic() - started < 3.0

    head = f"GET /v1/collections HTTP/1.1\r\nHost: x\r\nAuthorization: {BEARER}\r\n\r\n"
    took, reply = trickle(gateway.port, b"", head.encode(), 0.2)
    assert took < 4.0 and status_of(reply) in (0, 408), reply
    assert reply == b"" or json_of(reply)["error"]["status"] == "DEADLINE_EXCEEDED"

    post = (
        f"POST /v1/collections/{COLLECTION}:search HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {BEARER}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    )
    took, reply = trickle(gateway.port, post.encode(), b" " * 100, 0.2)
    assert took < 4.0 and status_of(reply) == 408, reply


def test_connections_over_the_cap_are_refused_at_once(search: Any, no_tracebacks) -> None:
    settings = HttpSettings(port=0, max_connections=4, header_timeout_s=5.0)
    capped = Gateway(ClientConfig(address=search.address), settings=settings).start()
    held = [socket.create_connection(("127.0.0.1", capped.port)) for _ in range(4)]
    try:
        deadline = time.monotonic() + 5
        while capped.connections < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        reply = exchange(capped.port, b"", wait_s=2.0)
        assert status_of(reply) == 503 and json_of(reply)["error"]["status"] == "UNAVAILABLE"
    finally:
        for sock in held:
            sock.close()
        capped.stop()


# -- item 8: protocol edges --------------------------------------------------------------------


def test_a_get_body_is_never_a_second_request(gateway: Gateway, no_tracebacks) -> None:
    smuggled = b"GET /v1/collections/nope HTTP/1.1\r\nHost: x\r\n\r\n"
    data = (
        f"GET /v1/collections HTTP/1.1\r\nHost: x\r\nAuthorization: {BEARER}\r\n"
        f"Content-Length: {len(smuggled)}\r\n\r\n"
    ).encode() + smuggled
    reply = exchange(gateway.port, data)
    assert status_of(reply) == 200 and reply.count(b"HTTP/1.1 ") == 1, reply


def test_invalid_utf8_json_is_a_400(gateway: Gateway, no_tracebacks) -> None:
    status, _, body = request(
        gateway.port, "POST", f"/v1/collections/{COLLECTION}:search", b'{"top_k": "\xff\xfe"}',
        **{"Content-Type": "application/json", "Authorization": BEARER},
    )  # fmt: skip
    error = json.loads(body)["error"]
    assert status == 400 and error["status"] == "INVALID_ARGUMENT" and "UTF-8" in error["message"]


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xff\xfe-not-ascii",
        b"Bearer gw-read\x01token",
        b"Bearer gw-read\ttoken",
        b"Bearer\r\n wrong-folded-token",
        b"Bearer " + b"x" * 8000,
    ],
    ids=["non-ascii", "control", "tab", "folded", "8kB"],
)
def test_bad_authorization_is_a_401(gateway: Gateway, value: bytes, no_tracebacks) -> None:
    data = b"GET /v1/collections HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n\r\n"
    reply = exchange(gateway.port, data)
    assert status_of(reply) == 401, reply[:300]
    assert json_of(reply)["error"]["status"] == "UNAUTHENTICATED"
    assert b"metadata" not in reply.lower()  # no gRPC internals


def test_headers_over_16k_are_a_431(gateway: Gateway, no_tracebacks) -> None:
    data = b"GET /v1/collections HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    reply = exchange(gateway.port, data + b"x" * 20_000 + b"\r\n\r\n")
    assert status_of(reply) == 431 and json_of(reply)["error"]["message"], reply[:300]


def test_responses_name_no_server_or_version(gateway: Gateway) -> None:
    for path in ("/", "/v1/collections", "/nope"):
        _, headers, _ = request(gateway.port, "GET", path, Authorization=BEARER)
        lowered = {k.lower(): v for k, v in headers.items()}
        assert "server" not in lowered
        assert not any("python" in v.lower() or "uvicorn" in v.lower() for v in headers.values())


def test_search_service_down_is_a_503_without_its_address(no_tracebacks) -> None:
    port = free_port()  # nothing listens there
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.05)
    config = ClientConfig(address=f"127.0.0.1:{port}", timeout=5, retry=retry)
    down = Gateway(config, settings=SETTINGS).start()
    try:
        status, headers, body = request(down.port, "GET", "/v1/collections")
        assert status == 503 and json.loads(body)["error"]["status"] == "UNAVAILABLE"
        assert str(port).encode() not in body and b"127.0.0.1" not in body
        assert headers.get("retry-after") == "1"
    finally:
        down.stop()


def test_port_in_use_is_one_clear_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "ris.cli", "gateway", "--http-port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use" in lines[0], result.stderr


def test_gateway_without_uvicorn_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['uvicorn'] = None  # as if the gateway extra were not installed\n"
        "from ris.cli.main import main\n"
        "sys.exit(main(['gateway', '--http-port', '0']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "pip install 'ris[gateway]'" in result.stderr


def test_open_files_limit_is_raised_or_the_cap_lowered() -> None:
    """In a child whose soft limit is 256 and hard 1024: room for 100 connections is made by
    raising the soft limit; 2048 cannot fit, so the cap comes down to what does, with a
    warning."""
    code = (
        "import logging, resource\n"
        "from ris.gateway.listen import RESERVED_FDS, fit_open_files\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))\n"
        "print(fit_open_files(100), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "print(fit_open_files(2048), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"open-files hard limit {hard} < 1024")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["100", "612", "512", "1024"]
    assert "capped at 512" in result.stderr and "ulimit -n" in result.stderr
