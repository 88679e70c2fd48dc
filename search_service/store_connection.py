"""How the store reaches Milvus: the MilvusClient arguments, opening and closing the client.

A Milvus Lite target (a local ``*.db`` path) gets its directory made, its one harmless log
traceback filtered, and its in-process server released on close; a server target gets its URI,
TLS (CA certificate, server name) and credentials. The reads and writes over the open client are
store.py's; the service's RPCs are operations.py's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pymilvus import MilvusClient

from ris.search.config import SearchConfig

log = logging.getLogger(__name__)


def client_kwargs(cfg: SearchConfig) -> dict[str, Any]:
    """MilvusClient arguments for the configured target: Lite path, URI, or host/port with TLS.

    ``milvus_ca_cert`` implies TLS (``server_pem_path``: the CA/server certificate to trust);
    ``milvus_server_name`` overrides the name checked against the certificate (SNI).
    Token wins over user/password when both are given (that is pymilvus' rule too).
    """
    kwargs: dict[str, Any] = {"uri": cfg.milvus_target(), "timeout": cfg.milvus_timeout_s}
    if cfg.is_milvus_lite:
        return kwargs
    kwargs.update(
        user=cfg.milvus_user,
        password=cfg.milvus_password,
        token=cfg.milvus_token,
        db_name=cfg.milvus_db_name,
    )
    if cfg.milvus_secure or cfg.milvus_ca_cert or cfg.milvus_target().startswith("https://"):
        kwargs["secure"] = True
    if cfg.milvus_ca_cert:
        kwargs["server_pem_path"] = cfg.milvus_ca_cert
    if cfg.milvus_server_name:
        kwargs["server_name"] = cfg.milvus_server_name
    return kwargs


class _LiteUnimplementedFilter(logging.Filter):
    """Drop the traceback Milvus Lite's in-process gRPC server logs for AllocTimestamp.

    pymilvus 3 asks for a timestamp while it waits for a new collection's index; Milvus Lite 3.2
    does not implement that call, pymilvus falls back, and nothing is wrong, but grpc logs an
    ERROR with a traceback that reads like a failure. Only that exact record is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (
            isinstance(exc, NotImplementedError)
            and "Method not implemented" in str(exc)
            and record.getMessage().startswith("Exception calling application")
        )


_LITE_FILTER = _LiteUnimplementedFilter()


def lite_path(config: SearchConfig) -> str:
    """The Milvus Lite path the config names, or "" for a Milvus server."""
    return config.milvus_target() if config.is_milvus_lite else ""


def open_client(config: SearchConfig) -> MilvusClient:
    """A client of its own (``dedicated``: closing it really closes it) for the target."""
    lite = lite_path(config)
    if lite:
        Path(lite).parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("grpc._server").addFilter(_LITE_FILTER)  # idempotent
    return MilvusClient(**client_kwargs(config), dedicated=True)


def close_client(client: MilvusClient, lite: str) -> None:
    """Close the client; for Lite (``lite``: its path) also stop its in-process server so the
    directory is released."""
    try:
        client.close()
    except Exception:  # closing must not mask the reason for stopping
        log.exception("closing the Milvus client failed")
    if lite:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(lite)
