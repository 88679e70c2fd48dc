"""What the bench_* scripts share: photo sets, the embedder's settings as flags, the machine's
description, the search service as a subprocess, percentiles and JSON output.

The embedder subprocess and raw ORT throughput come from scripts/bench_embedder.py and the load
generator from tools/loadtest.py; this module only holds what those do not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ris.embedder.config import EmbedderConfig

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
CALTECH_TRAIN = DATASETS / "caltech101-ris" / "train"
CALTECH_TEST = DATASETS / "caltech101-ris" / "test"
IMAGENET = DATASETS / "imagenet-sample" / "images"
DEFAULT_MODEL = ROOT / "models" / "resnet50.onnx"
START_TIMEOUT_S = 120.0
_PACKAGES = ("onnxruntime-gpu", "onnxruntime", "pymilvus", "milvus-lite", "milvus", "grpcio")


def add_embedder_args(parser: argparse.ArgumentParser, model_help: str = "") -> None:
    """The embedder settings every benchmark exposes, with the same defaults everywhere."""
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=model_help or None)
    parser.add_argument("--provider", default="cpu")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--decode-mode", default="thread", choices=("thread", "process"))
    parser.add_argument("--intra-op-threads", type=int, default=0)


def embedder_config(args: argparse.Namespace, **overrides: Any) -> EmbedderConfig:
    """A validated EmbedderConfig from add_embedder_args' flags, plus a script's own settings."""
    from ris.embedder.config import EmbedderConfig  # the caller has put ROOT on sys.path

    return EmbedderConfig(
        model_paths=[args.model],
        provider=args.provider,
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        decode_workers=args.decode_workers,
        decode_mode=args.decode_mode,
        intra_op_threads=args.intra_op_threads,
        **overrides,
    ).validate()


def existing(paths: Sequence[Path]) -> list[Path]:
    """The given default folders that exist (the data sets are optional on some machines)."""
    return [p for p in paths if p.exists()]


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.machine()


def _meminfo(key: str) -> int:
    """A /proc/meminfo value in bytes (0 when unknown, e.g. not Linux)."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def memory_available_bytes() -> int:
    return _meminfo("MemAvailable")


def machine_info() -> dict[str, Any]:
    """Where and when a figure was measured: CPU, cores, memory, load, package versions."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "when_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": round(_meminfo("MemTotal") / 2**30, 1),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu_visible": any(Path("/dev").glob("nvidia[0-9]*")),
        "packages": versions,
    }


def describe_machine(info: dict[str, Any]) -> str:
    return (
        f"{info['cpu']}, {info['cpus']} CPUs, {info['memory_gib']} GiB, "
        f"load {info['load_avg_1m']:.1f} at start, {info['when_utc']}"
    )


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max in milliseconds ({} for no samples)."""
    if not len(seconds):
        return {}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
        "max": float(ms.max()),
    }


def start_search_service(
    embedder_address: str, milvus_uri: str, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[str], str]:
    """``python -m ris.search`` on a free loopback port; returns (process, address).

    A subprocess, not in-process, so that the client and the service do not share a GIL (Milvus
    Lite runs inside the service process, as it does in production).
    """
    command = [
        sys.executable, "-m", "ris.search", "--host", "127.0.0.1", "--port", "0",
        "--embedder-address", embedder_address, "--milvus-uri", milvus_uri,
        "--log-level", "WARNING", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the service prints its address or dies
    match = re.search(r"listening on (\S+)", line)
    if not match:
        stop_process(proc)
        raise RuntimeError(f"search service did not start: {line!r}")
    return proc, match.group(1)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    """SIGTERM (the services drain on it), then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def milvus_server_uri(work: Path) -> Iterator[str]:
    """A fresh Milvus standalone (PyPI milvus) on loopback, data under ``work``; its URI.

    Started by tests/milvus_server.py (free ports, loopback addresses, bounded start and stop).
    """
    sys.path.insert(0, str(ROOT / "tests"))
    from milvus_server import start_milvus_server

    data = work / "milvus-server"
    data.mkdir(parents=True, exist_ok=True)
    handle = start_milvus_server(data)
    try:
        yield handle.uri
    finally:
        handle.stop()


def release_lite(uri: str) -> None:
    """Stop the in-process Milvus Lite server behind ``uri`` (a ``.db`` path), if any."""
    if uri.endswith(".db"):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def write_json(path: Path | None, result: dict[str, Any], quiet: bool = False) -> None:
    """Write atomically (a reader never sees half a file, even of a partial result)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(path)
    if not quiet:
        print(f"wrote {path}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "BELOW TARGET"
