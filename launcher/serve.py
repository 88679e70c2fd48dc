"""`ris serve`: the embedder and the search service in one process, on Milvus Lite by default.

The service packages (extra `server`) are imported only when this runs, so the client installs
and works without onnxruntime or pymilvus. Every other setting comes from the services' own
environment variables (RIS_EMBEDDER_*, RIS_SEARCH_*, RIS_MILVUS_*; see the README).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import secrets
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """The flags of `ris serve`; None keeps the service's own env/default value."""

    host: str | None = None
    port: int | None = None  # search service (what clients call)
    embedder_port: int | None = None
    embedder_address: str | None = None  # use a running embedder instead of starting one
    model: Path | None = None
    provider: str | None = None
    milvus_uri: str | None = None


class Services:
    """Both servers, started in order (embedder first), stopped in reverse."""

    def __init__(self, options: ServeOptions) -> None:
        self.embedder: Any = None
        search_config = _search_config(options)
        embedder_address = options.embedder_address
        if embedder_address is None:
            embedder_config, search_config = _share_embedder_token(
                _embedder_config(options), search_config
            )
            self.embedder = _start_embedder(embedder_config)
            embedder_address = f"{embedder_config.host}:{self.embedder.port}"
        search_config = dataclasses.replace(search_config, embedder_address=embedder_address)
        try:
            self.search = _start_search(search_config)
        except BaseException:
            if self.embedder is not None:
                self.embedder.stop(0)
            raise
        self.embedder_address = embedder_address
        self.address = f"{search_config.host}:{self.search.port}"
        self.milvus_uri: str = search_config.milvus_uri

    def stop(self, grace: float | None = None) -> None:
        """Search first (it drains its calls, waits for their handlers, then closes Milvus),
        then the embedder, which by then has nothing left in flight from it."""
        self.search.stop(grace)
        if self.embedder is not None:
            self.embedder.stop(grace)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()  # with each service's own shutdown_grace_s


def _embedder_config(options: ServeOptions) -> Any:
    """The embedder's settings: its environment, then the flags."""
    from ris.embedder.config import from_env

    return dataclasses.replace(
        from_env(),
        **_given(
            host=options.host,
            port=options.embedder_port,
            provider=options.provider,
            model_paths=[options.model] if options.model else None,
        ),
    ).validate()


def _search_config(options: ServeOptions) -> Any:
    """The search service's settings: its environment, then the flags (the embedder's address
    is filled in once it runs)."""
    from ris.search.config import from_env

    return dataclasses.replace(
        from_env(),
        **_given(
            host=options.host,
            port=options.port,
            milvus_uri=options.milvus_uri,
            embedder_address=options.embedder_address,
        ),
    ).validate()


def _share_embedder_token(embedder: Any, search: Any) -> tuple[Any, Any]:
    """The embedder started here takes calls with a token whenever the search service checks
    tokens (or the embedder has its own): the search service's RIS_EMBEDDER_TOKEN when set, else
    a random one made now and held in memory only, which the search service alone sends. So the
    embedder's port never answers what the search service's tokens guard (docs/security.md)."""
    read, write = search.tokens()
    allowed = embedder.allowed_tokens()
    if not (read or write or allowed):
        return embedder, search  # nothing checks tokens: both stay open, as configured
    token = search.secrets().embedder_token or secrets.token_urlsafe(32)
    tokens = ",".join(dict.fromkeys([*allowed, token]))
    return (
        dataclasses.replace(embedder, tokens=tokens, tokens_file="").validate(),
        dataclasses.replace(search, embedder_token=token, embedder_token_file=""),
    )


def _start_embedder(config: Any) -> Any:
    from ris.embedder.server import start_server

    return start_server(config)


def _start_search(config: Any) -> Any:
    from ris.search.server import start_server

    if config.is_milvus_lite:
        Path(config.milvus_uri).parent.mkdir(parents=True, exist_ok=True)
    return start_server(config.validate())


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address of both services (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="search service port (default 50052)")
    parser.add_argument("--embedder-port", type=int, help="embedder port (default 50051)")
    parser.add_argument(
        "--embedder-address", help="use this running embedder instead of starting one"
    )
    parser.add_argument("--model", type=Path, help="ONNX model (default models/resnet50.onnx)")
    parser.add_argument("--provider", help="auto | cpu | cuda | tensorrt (default auto)")
    parser.add_argument(
        "--milvus-uri", help="Milvus Lite file (*.db) or server URI (default data/milvus/ris.db)"
    )


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    names = [f.name for f in dataclasses.fields(ServeOptions)]
    return ServeOptions(**{n: getattr(args, n, None) for n in names})


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM, then drain and stop both services."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with Services(options_from_args(args)) as services:
        embedder = services.embedder_address
        print(
            f"ris serving: search service on {services.address}, embedder on {embedder}, "
            f"Milvus at {services.milvus_uri} (Ctrl-C to stop)",
            flush=True,
        )
        with _http_gateway(args, services.address):
            while not stop.wait(1.0):
                pass
    return 0


@contextlib.contextmanager
def _http_gateway(args: argparse.Namespace, address: str) -> Iterator[None]:
    """``--http-port``: the HTTP/JSON API and search page (gateway/app.py) too, on the host of
    the services, with the limits of RIS_HTTP_* (gateway/settings.py)."""
    port = getattr(args, "http_port", None)
    if port is None:
        yield
        return
    from ris.client.config import ClientConfig
    from ris.gateway.app import Gateway
    from ris.gateway.settings import HttpSettings

    settings = HttpSettings.from_env(host=getattr(args, "host", None), port=port)
    gateway = Gateway(ClientConfig.from_env(address=address), settings=settings).start()
    where = f"http://{settings.host}:{gateway.port}/"
    print(f"ris serving: HTTP API and search page on {where}", flush=True)
    try:
        yield
    finally:
        gateway.stop()
