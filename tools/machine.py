"""Where and when a figure was measured: CPU, cores, memory, load, versions; a process's RSS.

Read from /proc where there is one (Linux), with neutral values elsewhere.
"""

from __future__ import annotations

import os
import platform
import re
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("onnxruntime-gpu", "onnxruntime", "pymilvus", "milvus-lite", "milvus", "grpcio")


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
    """CPU, cores, memory, load, Python, platform, GPU presence and package versions, now."""
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
    """One line of ``machine_info()`` for a benchmark's header."""
    return (
        f"{info['cpu']}, {info['cpus']} CPUs, {info['memory_gib']} GiB, "
        f"load {info['load_avg_1m']:.1f} at start, {info['when_utc']}"
    )


def rss_mb(pid: int) -> float:
    """Resident set size of a live process, from /proc (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants (a server that runs its work in children, like
    milvus-server's launcher), from /proc; 0 when it is gone."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo, seen = 0.0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total += rss_mb(current)
        todo.extend(children.get(current, []))
    return total
