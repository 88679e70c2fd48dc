"""Connection settings for the client: one place, filled from arguments or RIS_* environment.

Environment variables (all optional):
  RIS_ADDRESS              host:port of the search service (default 127.0.0.1:50052)
  RIS_TLS                  "1" to use TLS (implied by RIS_TLS_ROOT_CERT)
  RIS_TLS_ROOT_CERT        PEM file with the CA that signed the server certificate
  RIS_TLS_CLIENT_CERT      PEM client certificate (mutual TLS), with RIS_TLS_CLIENT_KEY
  RIS_TLS_CLIENT_KEY       PEM private key of the client certificate
  RIS_TLS_SERVER_NAME      override the name checked against the server certificate
  RIS_TOKEN                bearer token, sent as `authorization: Bearer <token>` metadata
  RIS_TIMEOUT              deadline in seconds for unary calls (default 30)
  RIS_INGEST_TIMEOUT       deadline in seconds for one ingest stream call (default 600)
  RIS_RETRIES              attempts per call on UNAVAILABLE / RESOURCE_EXHAUSTED (default 5)
  RIS_RETRY_BACKOFF        first backoff in seconds (default 0.2), doubled each retry
  RIS_RETRY_MAX_BACKOFF    longest backoff in seconds (default 5)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_ADDRESS = "127.0.0.1:50052"  # the search service (the embedder is on 50051)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, for UNAVAILABLE and RESOURCE_EXHAUSTED (client/retry.py)."""

    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2  # each delay is scaled by a random factor in [1 - jitter, 1 + jitter]

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")


@dataclass(frozen=True)
class ClientConfig:
    """How to reach the search service. Build with `ClientConfig.from_env(**overrides)`."""

    address: str = DEFAULT_ADDRESS
    tls: bool = False
    root_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_name: str | None = None
    token: str | None = None
    timeout: float = 30.0
    ingest_timeout: float = 600.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_message_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not self.address or ":" not in self.address:
            raise ValueError(f"address must be host:port, got {self.address!r}")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together (mutual TLS)")
        if self.timeout <= 0 or self.ingest_timeout <= 0:
            raise ValueError("timeouts must be positive")

    @property
    def secure(self) -> bool:
        """TLS is on when asked for or when any certificate is given."""
        return self.tls or self.root_cert is not None or self.client_cert is not None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Per-call metadata: the bearer token, when there is one."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ClientConfig:
        """Defaults, then RIS_* variables, then explicit overrides (None means "not given")."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        retry: dict[str, Any] = {}
        if env.get("RIS_ADDRESS"):
            values["address"] = env["RIS_ADDRESS"]
        if env.get("RIS_TLS"):
            values["tls"] = _flag(env["RIS_TLS"], "RIS_TLS")
        for key, name in (
            ("root_cert", "RIS_TLS_ROOT_CERT"),
            ("client_cert", "RIS_TLS_CLIENT_CERT"),
            ("client_key", "RIS_TLS_CLIENT_KEY"),
        ):
            if env.get(name):
                values[key] = Path(env[name])
        if env.get("RIS_TLS_SERVER_NAME"):
            values["server_name"] = env["RIS_TLS_SERVER_NAME"]
        if env.get("RIS_TOKEN"):
            values["token"] = env["RIS_TOKEN"]
        if env.get("RIS_TIMEOUT"):
            values["timeout"] = _number(env["RIS_TIMEOUT"], "RIS_TIMEOUT")
        if env.get("RIS_INGEST_TIMEOUT"):
            values["ingest_timeout"] = _number(env["RIS_INGEST_TIMEOUT"], "RIS_INGEST_TIMEOUT")
        if env.get("RIS_RETRIES"):
            retry["max_attempts"] = int(_number(env["RIS_RETRIES"], "RIS_RETRIES"))
        if env.get("RIS_RETRY_BACKOFF"):
            retry["initial_backoff"] = _number(env["RIS_RETRY_BACKOFF"], "RIS_RETRY_BACKOFF")
        if env.get("RIS_RETRY_MAX_BACKOFF"):
            retry["max_backoff"] = _number(env["RIS_RETRY_MAX_BACKOFF"], "RIS_RETRY_MAX_BACKOFF")
        given = {k: v for k, v in overrides.items() if v is not None}
        policy = given.pop("retry", None) or RetryPolicy(**retry)
        if "retries" in given:  # shorthand for the attempt count alone (the CLI's --retries)
            policy = replace(policy, max_attempts=int(given.pop("retries")))
        values["retry"] = policy
        for key in ("root_cert", "client_cert", "client_key"):
            if key in given:
                given[key] = Path(given[key])
        values.update(given)
        return cls(**values)


def _flag(text: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name} must be 1/0, true/false, yes/no or on/off, got {text!r}")


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
