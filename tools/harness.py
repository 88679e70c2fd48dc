"""The services as subprocesses on loopback, for scripts and tests: free ports, start, wait, stop.

A subprocess rather than the server in-process, so that the client and the service do not share
a GIL, their memory is their own and a kill is a real kill. Each service prints one
``<name> listening on <address>`` line on stdout once it serves; ``ServiceProcess`` waits
(bounded) for that line and keeps reading the output afterwards, so a chatty service never
blocks on a full pipe. The subprocess imports the installed ``ris`` (the caller's environment,
``PYTHONPATH`` included, is passed on unchanged).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ris.tools.checkout import DEFAULT_MODEL

if TYPE_CHECKING:
    from ris.embedder.config import EmbedderConfig

START_TIMEOUT_S = 120.0
LOG_LINES = 2000  # of a service's output kept for error messages
# The line each service's __main__ prints once it serves ("embedder listening on 127.0.0.1:5001",
# "search service listening on ..."); anchored, so the server's log line saying the same after a
# timestamp never matches.
_LISTENING = re.compile(r"^(?:embedder|search service) listening on (\S+)")


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """A free loopback port (free now: another process may take it before it is used)."""
    return free_ports(1)[0]


def stop_process(process: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    return process.returncode


def service_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment, unbuffered output, plus ``extra``."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}


@dataclass
class ServiceProcess:
    """A service subprocess; with a fixed ``port`` restartable on that same port.

    ``port`` 0 lets the service pick one: ``address`` is then read from its "listening on" line.
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=service_env)
    cwd: Path | None = None
    port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)
    listening_on: str = ""

    @property
    def address(self) -> str:
        return self.listening_on or f"127.0.0.1:{self.port}"

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
                if len(self.log) < LOG_LINES:
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
            match = _LISTENING.match(line)
            if match:
                self.listening_on = match.group(1)
                return self
        self.kill()
        raise TimeoutError(f"{self.name} did not start within {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the services drain on it), SIGKILL after ``timeout``; the exit code."""
        return None if self.process is None else stop_process(self.process, timeout)

    def restart(self, timeout: float = START_TIMEOUT_S) -> ServiceProcess:
        """Start again on the same ports (a killed process's port is free at once)."""
        self.kill()
        return self.start(timeout)


def start_embedder(
    model: Path | Sequence[Path] = DEFAULT_MODEL,
    port: int = 0,
    extra_args: Sequence[str] = (),
    timeout: float = START_TIMEOUT_S,
) -> ServiceProcess:
    """``python -m ris.embedder`` on 127.0.0.1 with a fixed port and a metrics port.

    Defaults for a shared CPU machine (2 ORT threads, 2 s shutdown grace); ``extra_args`` come
    last, so they override them (e.g. ``embedder_flags(config)``).
    """
    models = [model] if isinstance(model, Path) else list(model)
    port = port or free_port()
    metrics = free_port()
    argv = [
        sys.executable, "-m", "ris.embedder", "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", str(metrics), "--model-paths", ",".join(str(p) for p in models),
        "--provider", "cpu", "--intra-op-threads", "2", "--shutdown-grace-s", "2", *extra_args,
    ]  # fmt: skip
    return ServiceProcess("embedder", argv, port=port, metrics_port=metrics).start(timeout)


def start_search(
    embedder_address: str,
    milvus_uri: str,
    port: int = 0,
    extra_args: Sequence[str] = (),
    timeout: float = START_TIMEOUT_S,
) -> ServiceProcess:
    """``python -m ris.search`` on 127.0.0.1 over the given embedder(s) and Milvus (Milvus Lite
    then runs inside the service process, as in production)."""
    port = port or free_port()
    metrics = free_port()
    argv = [
        sys.executable, "-m", "ris.search", "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", str(metrics), "--embedder-address", embedder_address,
        "--milvus-uri", milvus_uri, "--shutdown-grace-s", "5", *extra_args,
    ]  # fmt: skip
    return ServiceProcess("search", argv, port=port, metrics_port=metrics).start(timeout)


# The embedder settings a benchmark measures, passed on as flags (``python -m ris.embedder``)
# or as RIS_EMBEDDER_* variables (``ris serve``); the model paths go with them.
MEASURED_SETTINGS = (
    "provider", "max_batch_size", "max_queue_delay_ms", "max_queue_images", "decode_workers",
    "decode_mode", "intra_op_threads", "ort_spinning",
)  # fmt: skip


def embedder_flags(config: EmbedderConfig) -> list[str]:
    """The command-line flags that run ``python -m ris.embedder`` with ``config``'s model,
    provider, batching, decoding and threads (what a benchmark measures)."""
    flags = ["--model-paths", ",".join(str(p) for p in config.model_paths)]
    for name in MEASURED_SETTINGS:
        value, flag = getattr(config, name), name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            flags += [f"--{flag}", str(value)]
    return [*flags, "--log-level", "WARNING"]


def embedder_env(config: EmbedderConfig) -> dict[str, str]:
    """The same settings as RIS_EMBEDDER_* variables, for ``ris serve``'s embedder."""
    env = {f"RIS_EMBEDDER_{name.upper()}": str(getattr(config, name)) for name in MEASURED_SETTINGS}
    env["RIS_EMBEDDER_MODEL_PATHS"] = ",".join(str(p) for p in config.model_paths)
    return env


def start_configured_embedder(
    config: EmbedderConfig, timeout: float = START_TIMEOUT_S
) -> ServiceProcess:
    """``start_embedder`` running ``config``'s settings (what a benchmark measures)."""
    return start_embedder(config.model_paths, extra_args=embedder_flags(config), timeout=timeout)
