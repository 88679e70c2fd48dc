"""The connection flags every `ris` command shares (TLS, token, deadline, retries), in one place.

`ris ingest/search/collections/demo` take them as a parent parser; `ris eval` and `ris bench`
mount the same group with their own address or deadline flags where theirs differ.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ris.client.config import ClientConfig


def add_connection_arguments(
    parser: argparse.ArgumentParser, *, address: bool = True, timeout: bool = True
) -> None:
    """The connection group; ``address``/``timeout`` False when the command has its own."""
    group = parser.add_argument_group("connection (defaults from RIS_* environment)")
    if address:
        group.add_argument(
            "--address", help="search service host:port (RIS_ADDRESS, 127.0.0.1:50052)"
        )
    group.add_argument("--token", help="bearer token (RIS_TOKEN)")
    group.add_argument("--tls", action="store_true", default=None, help="use TLS (RIS_TLS)")
    group.add_argument("--root-cert", type=Path, help="CA certificate PEM (RIS_TLS_ROOT_CERT)")
    group.add_argument("--client-cert", type=Path, help="mTLS certificate (RIS_TLS_CLIENT_CERT)")
    group.add_argument("--client-key", type=Path, help="mTLS key PEM (RIS_TLS_CLIENT_KEY)")
    group.add_argument("--server-name", help="TLS name override (RIS_TLS_SERVER_NAME)")
    if timeout:
        group.add_argument("--timeout", type=float, help="seconds per call (RIS_TIMEOUT, 30)")
    group.add_argument(
        "--retries",
        type=int,
        help="attempts on UNAVAILABLE / RESOURCE_EXHAUSTED (RIS_RETRIES, 5; 1 = no retry)",
    )


def client_options() -> argparse.ArgumentParser:
    """Flags shared by every subcommand that talks to the search service (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    add_connection_arguments(parent)
    return parent


def config_from_args(args: argparse.Namespace, **overrides: Any) -> ClientConfig:
    """ClientConfig from the flags above (absent ones: RIS_* environment, then defaults)."""
    given = {
        name: getattr(args, name, None)
        for name in (
            "address",
            "token",
            "tls",
            "root_cert",
            "client_cert",
            "client_key",
            "server_name",
            "timeout",
            "retries",
        )
    }
    given.update(overrides)
    return ClientConfig.from_env(**given)
