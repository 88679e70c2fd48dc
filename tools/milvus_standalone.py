"""A real Milvus 2.3 standalone server (PyPI ``milvus``) on loopback, for tests and benchmarks.

Each server: a temp data dir, free loopback ports for every component (the
embedded etcd included, which otherwise takes 2379/2380), every advertised address pinned to
127.0.0.1 (the gRPC servers still bind all interfaces: Milvus 2.3 has no setting for that, but
all their traffic stays on loopback), ``gracefulStopTimeout`` cut to 3 s so SIGTERM returns
quickly (the data dir is thrown away anyway), the proxy's time tick at 50 ms unless told
(Strong reads wait for it; a deployed Milvus ticks every 200 ms). Start-up waits on
``/healthz`` with a bound; teardown sends SIGTERM, then SIGKILL after a bound. The unpacked
binaries are cached in ``~/.cache/ris-milvus/<version>`` (or ``$RIS_MILVUS_SERVER_CACHE``).

Also runnable by hand: ``python -m ris.tools.milvus_standalone DIR`` starts one and prints its
URI. The pytest fixtures over it are in tests/milvus_server.py.

Also the Milvus 2.5 engine as a TCP server (``start_milvus25_server``): the ``milvus-lite==2.5.1``
wheel embeds it, and its binary serves gRPC on an address (what ``milvus_lite.server.Server``
runs). It cannot share a site-packages with milvus-lite 3.x, and it needs no Python package at
all, so it lives unpacked in its own folder (``pip install --no-deps --target DIR
milvus-lite==2.5.1``, made by CI) named by ``$RIS_MILVUS25_DIR``; the tests talk to it over
TCP with this venv's pymilvus, as to any server URI.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ris.tools.harness import free_ports, stop_process

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 8.0
MILVUS_TIME_TICK_MS = 200  # Milvus' own proxy.timeTickInterval: what a deployed server runs
TEST_TIME_TICK_MS = 50  # the tests' and benchmarks' default: Strong reads wait less


@dataclass
class MilvusServerHandle:
    """A running server: its gRPC URI, health port, data dir and process."""

    uri: str
    port: int
    metrics_port: int
    data_dir: Path
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL."""
        stop_process(self.process, timeout)


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA and a server certificate it signed (PEM files)."""

    ca: Path
    cert: Path
    key: Path
    server_name: str


def make_tls_files(directory: Path, server_name: str = "milvus.ris.test") -> TlsFiles:
    """A CA plus a server certificate for ``server_name`` and 127.0.0.1, valid for a day."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("ris test CA"))
        .issuer_name(name("ris test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(server_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(server_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        directory / "ca.pem", directory / "server.pem", directory / "server.key", server_name
    )
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


# Milvus keeps 8 GiB of WAL per channel for 3 days and compacted-away binlogs for 3 hours: at a
# million 2048-d rows that is ~8 GiB of disk a collection beside its binlogs and index files.
LEAN_DISK = {
    r"retentionTimeInMinutes: \d+": "retentionTimeInMinutes: 10",
    r"retentionSizeInMB: \d+": "retentionSizeInMB: 256",
    r"compactionInterval: 86400": "compactionInterval: 300",
    r"interval: 3600 # gc interval": "interval: 300 # gc interval",
    r"dropTolerance: \d+": "dropTolerance: 300",
}


def _write_configs(
    data_dir: Path,
    settings: dict[str, object] | None = None,
    time_tick_ms: int = TEST_TIME_TICK_MS,
    lean_disk: bool = False,
) -> tuple[int, int]:
    """Write milvus.yaml and the embedded etcd's config; return (proxy port, metrics port).

    ``settings``: values for the package's template keys, e.g. ``tls_mode``, ``server_pem_path``,
    ``authorization_enabled``.
    """
    from milvus import MilvusServerConfig

    cfg = MilvusServerConfig()
    cfg.configs["data_dir"] = str(data_dir)
    for key, value in (settings or {}).items():
        cfg.set(key, value)
    port_keys = [k for k in cfg.configurable_items if k.endswith("_port")]
    ports = free_ports(len(port_keys) + 3)
    for key, port in zip(port_keys, ports, strict=False):
        cfg.configs[key] = port
    etcd_client, etcd_peer, metrics = ports[-3:]
    cfg.configs["etcd_port"] = etcd_client
    cfg.resolve()

    etcd_cfg = data_dir / "configs" / "etcd.yaml"
    etcd_cfg.write_text(
        "name: standalone\n"
        f"data-dir: {data_dir / 'data' / 'etcd.data'}\n"
        f"listen-client-urls: http://127.0.0.1:{etcd_client}\n"
        f"advertise-client-urls: http://127.0.0.1:{etcd_client}\n"
        f"listen-peer-urls: http://127.0.0.1:{etcd_peer}\n"
        f"initial-advertise-peer-urls: http://127.0.0.1:{etcd_peer}\n"
        f"initial-cluster: standalone=http://127.0.0.1:{etcd_peer}\n"
        "listen-metrics-urls: ''\n"
    )
    path = data_dir / "configs" / "milvus.yaml"
    text = path.read_text()
    text = re.sub(r"(?m)^(\s+)ip:\s*(#.*)?$", r"\1ip: 127.0.0.1", text)
    text = text.replace("localhost", "127.0.0.1")
    text = re.sub(r"gracefulStopTimeout: \d+", "gracefulStopTimeout: 3", text)
    # Strong reads wait for the next time tick: the tests' 50 ms instead of 200 keeps them quick.
    text = re.sub(r"timeTickInterval: \d+", f"timeTickInterval: {time_tick_ms}", text)
    for pattern, value in LEAN_DISK.items() if lean_disk else ():
        text, found = re.subn(pattern, value, text)
        if not found:
            raise RuntimeError(f"milvus.yaml has no {pattern!r} to set")
    text = re.sub(
        r"(?m)^(  use:\n    embed: true.*)$",
        lambda m: f"{m.group(1)}\n  config:\n    path: {etcd_cfg}",
        text,
    )
    if f"path: {etcd_cfg}" not in text:
        raise RuntimeError("could not point the embedded etcd at its config")
    path.write_text(text)
    return int(cfg.get("proxy_port")), metrics


def _healthy(metrics_port: int) -> bool:
    try:
        url = f"http://127.0.0.1:{metrics_port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return b"OK" in resp.read()
    except (urllib.error.URLError, OSError):
        return False


def _binaries() -> Path:
    """The unpacked Milvus binary and libraries, cached across sessions (unpacking takes ~5 s).

    The package's own helper unpacks into ``<base>/bin`` and skips files whose checksum matches.
    """
    from milvus import __version__, _initialize_data_files

    base = Path(os.environ.get("RIS_MILVUS_SERVER_CACHE", Path.home() / ".cache" / "ris-milvus"))
    base = base / __version__
    base.mkdir(parents=True, exist_ok=True)
    _initialize_data_files(str(base))
    return base / "bin"


def start_milvus_server(
    data_dir: Path,
    timeout: float = START_TIMEOUT_S,
    tls: TlsFiles | None = None,
    auth: bool = False,
    time_tick_ms: int = TEST_TIME_TICK_MS,
    lean_disk: bool = False,
) -> MilvusServerHandle:
    """Start Milvus standalone in ``data_dir`` and wait until /healthz says OK.

    ``tls``: serve gRPC over one-way TLS with that certificate. ``auth``: require user/password
    (Milvus' built-in ``root``/``Milvus``). ``time_tick_ms``: the proxy's time tick
    (MILVUS_TIME_TICK_MS, 200, is what a deployed Milvus runs). ``lean_disk``: reclaim the WAL
    and compacted-away files within minutes (LEAN_DISK), for benchmarks at millions of rows.
    """
    settings: dict[str, object] = {"authorization_enabled": auth}
    if tls:
        settings.update(
            tls_mode=1,
            server_pem_path=str(tls.cert),
            server_key_path=str(tls.key),
            ca_pem_path=str(tls.ca),
        )
    port, metrics_port = _write_configs(data_dir, settings, time_tick_ms, lean_disk)
    scheme = "https" if tls else "http"
    return _launch(data_dir, f"{scheme}://127.0.0.1:{port}", port, metrics_port, timeout)


@contextlib.contextmanager
def milvus_server(
    work: Path, time_tick_ms: int = TEST_TIME_TICK_MS, lean_disk: bool = False
) -> Iterator[MilvusServerHandle]:
    """A fresh Milvus standalone with its data under ``work``, stopped afterwards."""
    data = work / "milvus-server"
    data.mkdir(parents=True, exist_ok=True)
    handle = start_milvus_server(data, time_tick_ms=time_tick_ms, lean_disk=lean_disk)
    try:
        yield handle
    finally:
        handle.stop()


@contextlib.contextmanager
def milvus_server_uri(work: Path) -> Iterator[str]:
    """The same, for callers that only need its URI."""
    with milvus_server(work) as handle:
        yield handle.uri


def restart_milvus_server(
    handle: MilvusServerHandle, timeout: float = START_TIMEOUT_S
) -> MilvusServerHandle:
    """Start a stopped (or running: stopped first) server again: same data dir, configs, ports."""
    handle.stop()
    return _launch(handle.data_dir, handle.uri, handle.port, handle.metrics_port, timeout)


def _ready(
    handle: MilvusServerHandle, probe: Callable[[], bool], timeout: float, what: str, logs: str
) -> MilvusServerHandle:
    """``handle`` once ``probe()`` answers; stopped and an error naming ``logs`` if its process
    exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            raise RuntimeError(f"{what} exited with {handle.process.returncode}; see {logs}")
        if probe():
            return handle
        time.sleep(0.5)
    handle.stop()
    raise TimeoutError(f"{what} not ready within {timeout:.0f} s; see {logs}")


def _launch(
    data_dir: Path, uri: str, port: int, metrics_port: int, timeout: float
) -> MilvusServerHandle:
    """Run the standalone binary on the configs in ``data_dir``; wait for /healthz."""
    bin_dir = _binaries()
    env = dict(
        os.environ,
        DEPLOY_MODE="STANDALONE",
        METRICS_PORT=str(metrics_port),
        MILVUS_RUN_DIR=str(data_dir / "run"),
        LD_LIBRARY_PATH=f"{bin_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}",
    )
    log = (data_dir / "logs" / "milvus-stdout.log").open("ab")
    proc = subprocess.Popen(
        [str(bin_dir / "milvus"), "run", "standalone"],
        cwd=data_dir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    handle = MilvusServerHandle(uri, port, metrics_port, data_dir, proc)
    return _ready(handle, lambda: _healthy(metrics_port), timeout, "milvus", f"{data_dir}/logs")


MILVUS25_VERSION = "2.5.1"


def milvus25_binary() -> Path | None:
    """The milvus-lite 2.5 binary in ``$RIS_MILVUS25_DIR``; None when that is unset."""
    folder = os.environ.get("RIS_MILVUS25_DIR")
    if not folder:
        return None
    binary = Path(folder) / "milvus_lite" / "lib" / "milvus"
    metadata = Path(folder) / f"milvus_lite-{MILVUS25_VERSION}.dist-info"
    if not binary.exists() or not metadata.exists():
        raise RuntimeError(
            f"RIS_MILVUS25_DIR={folder} holds no milvus-lite {MILVUS25_VERSION}: "
            f"pip install --no-deps --target {folder} milvus-lite=={MILVUS25_VERSION}"
        )
    return binary


def _serves_grpc(uri: str) -> bool:
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    try:
        client = MilvusClient(uri=uri, timeout=2)
    except MilvusException:
        return False
    try:
        client.list_collections()
        return True
    except MilvusException:
        return False
    finally:
        client.close()


def start_milvus25_server(
    binary: Path, data_dir: Path, timeout: float = START_TIMEOUT_S
) -> MilvusServerHandle:
    """The 2.5 engine on a free loopback port, data in ``data_dir``; waits until it answers."""
    [port] = free_ports(1)
    lib = binary.parent
    env = dict(os.environ, LD_LIBRARY_PATH=f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    log = (data_dir / "milvus25.log").open("ab")
    proc = subprocess.Popen(
        [str(binary), str(data_dir / "milvus25.db"), f"127.0.0.1:{port}", "ERROR"],
        cwd=data_dir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    uri = f"http://127.0.0.1:{port}"
    handle = MilvusServerHandle(uri, port, 0, data_dir, proc)
    return _ready(handle, lambda: _serves_grpc(uri), timeout, "milvus 2.5", str(data_dir))


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="ris-milvus-"))
    target.mkdir(parents=True, exist_ok=True)
    server = start_milvus_server(target)
    print(server.uri, server.metrics_port, server.process.pid, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.process.wait()
