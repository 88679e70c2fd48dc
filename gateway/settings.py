"""The HTTP gateway's settings: one dataclass, read from ``ris gateway`` flags or, under
``ris serve --http-port``, from RIS_HTTP_* environment variables (flag, then variable, then
default). ``HELP`` is each field's help text, for the flags and docs/configuration.md.

Why these bounds: the gateway shares its process with both gRPC services under ``ris serve``,
so idle or slow HTTP clients must never hold what gRPC needs (file descriptors, threads,
memory): connections are capped and timed out, bodies and headers are bounded, and requests in
flight are limited.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "RIS_HTTP_"
# The fields whose flags keep their historical names (``ris gateway --http-port``).
FLAG_NAMES = {"host": "--http-host", "port": "--http-port"}
HELP = {
    "host": "address to bind; 0.0.0.0 to serve beyond this machine",
    "port": "HTTP port (0 = any free)",
    "max_connections": "open connections at once; one more is answered 503 and closed at once",
    "max_requests": "requests in flight at once; beyond: 429 with Retry-After",
    "backlog": "listen queue of connections the server has not accepted yet",
    "header_timeout_s": "a request's line and headers must arrive within this, counted from "
    "the connection (or the previous response); else the connection is closed (slowloris)",
    "body_timeout_s": "a request's body must arrive within this after its headers; else 408",
    "keep_alive_timeout_s": "an idle keep-alive connection is closed after this",
    "max_header_bytes": "request line and headers together; beyond: 431",
    "max_body_bytes": "largest request body; beyond: 413, unread",
}


@dataclass(frozen=True)
class HttpSettings:
    """Bind address and the limits every connection and request is held to."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_connections: int = 2048
    max_requests: int = 128
    backlog: int = 2048
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_timeout_s: float = 5.0
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "port" and not 0 <= value <= 65535:
                raise ValueError(f"HTTP port must be in 0..65535, got {value}")
            if field.name not in ("host", "port") and not value > 0:
                raise ValueError(f"HTTP {field.name} must be positive, got {value}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> HttpSettings:
        """Defaults, then RIS_HTTP_<FIELD> variables, then ``overrides`` (None = not given)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = ENV_PREFIX + field.name.upper()
            if env.get(name):
                values[field.name] = _parse(env[name], field.type, name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(text: str, kind: Any, name: str) -> Any:
    convert = {"int": int, "float": float}.get(str(kind), str)
    try:
        return convert(text)
    except ValueError:
        raise ValueError(f"{name} must be {kind}, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag a setting (``--max-connections``, ...); defaults from RIS_HTTP_* or the class."""
    for field in dataclasses.fields(HttpSettings):
        flag = FLAG_NAMES.get(field.name, "--" + field.name.replace("_", "-"))
        kind = {"int": int, "float": float}.get(str(field.type), str)
        env = ENV_PREFIX + field.name.upper()
        help_text = f"{HELP[field.name]} (env {env}, default {field.default})"
        metavar = {"host": "HOST", "port": "PORT"}.get(field.name)
        metavar = metavar or ("SECONDS" if kind is float else "N")
        parser.add_argument(
            flag, dest=f"http_{field.name}", type=kind, metavar=metavar, help=help_text
        )


def from_args(args: argparse.Namespace) -> HttpSettings:
    names = [f.name for f in dataclasses.fields(HttpSettings)]
    return HttpSettings.from_env(**{n: getattr(args, f"http_{n}", None) for n in names})
