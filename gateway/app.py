"""HTTP/JSON in front of a running search service: `ris gateway --http-port 8080`.

Every request becomes the matching call of the client library (AsyncRisClient, to
``--address`` like every client command), with the caller's ``Authorization: Bearer <token>``
header passed on as gRPC metadata: the service checks tokens, scopes and limits exactly as for
gRPC callers, and its status codes come back as HTTP statuses with a JSON body ``{"error":
{"code": 3, "status": "INVALID_ARGUMENT", "message": "..."}}``. Bodies and results use the
protobuf JSON mapping of ``ris.v1`` (field names as in search.proto; image bytes base64), so a
result is the gRPC one.

    GET  /                                 a search page (pick or drop a photo, or type text)
    GET  /v1/collections                   ListCollections
    GET  /v1/collections/{name}            DescribeCollection
    POST /v1/collections/{name}:search     Search: a JSON SearchRequest (collection from the
                                           path), or raw image bytes (Content-Type image/* or
                                           application/octet-stream) with ?top_k=&min_score=&label=
    GET  /v1/collections/{name}/items/{id}:image   GetItemImage: the item's image, read by the
                                           service inside its allowed roots only

Served by uvicorn (extra `gateway`, part of `server`) on one event loop, with bounded
connections (--max-connections; one more: 503), requests in flight (--max-requests; 429),
header and body timeouts (--header-timeout-s, --body-timeout-s: slowloris connections are
closed), keep-alive (--keep-alive-timeout-s), head and body sizes (--max-header-bytes: 431,
--max-body-bytes: 413) and a listen backlog (--backlog). Each flag has a RIS_HTTP_* variable
(RIS_HTTP_MAX_CONNECTIONS, ...), which is also how `ris serve --http-port` is tuned. The
open-files limit is raised to fit the connections. The gateway never adds a token of its own
(it would lend its rights to anyone who can reach it), binds 127.0.0.1 unless told otherwise,
and names no version in its responses.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import threading
import time
from types import FrameType
from typing import Any

from ris.client.config import ClientConfig
from ris.gateway import settings as http_settings
from ris.gateway.api import HTTP_STATUS, GatewayApi, GatewayError, error_body
from ris.gateway.listen import ListenError, fit_open_files, listen_socket
from ris.gateway.settings import HttpSettings

__all__ = ["HTTP_STATUS", "Gateway", "GatewayError", "ListenError", "error_body"]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
EXTRA_HINT = "the HTTP gateway needs uvicorn: pip install 'ris[gateway]' (ris[server] has it)"


class MissingExtra(ValueError):
    """uvicorn (the `gateway` extra) is not installed."""


class Gateway:
    """The HTTP server (uvicorn, on its own event loop) and its client of the search service;
    ``start()`` serves in a thread, ``stop()`` drains and closes."""

    def __init__(
        self,
        config: ClientConfig,
        host: str | None = None,
        port: int | None = None,
        *,
        settings: HttpSettings | None = None,
    ) -> None:
        """``host``/``port`` override ``settings`` (default: HttpSettings on a free port)."""
        try:
            import uvicorn

            from ris.gateway.protocol import protocol_class
        except ModuleNotFoundError as error:
            raise MissingExtra(f"{EXTRA_HINT} ({error})") from None
        settings = settings or HttpSettings(port=0)
        settings = dataclasses.replace(
            settings,
            host=settings.host if host is None else host,
            port=settings.port if port is None else port,
            max_connections=fit_open_files(settings.max_connections),
        )
        self.settings = settings
        self.config = dataclasses.replace(config, token=None)  # callers send their own
        self._socket = listen_socket(settings.host, settings.port, settings.backlog)
        server_config = uvicorn.Config(
            GatewayApi(self.config, settings),
            http=protocol_class(settings),
            ws="none",
            lifespan="on",
            loop="asyncio",
            interface="asgi3",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            backlog=settings.backlog,
            timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]
            timeout_graceful_shutdown=int(STOP_TIMEOUT_S / 2),
            h11_max_incomplete_event_size=settings.max_header_bytes,
        )
        self._server = uvicorn.Server(server_config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    @property
    def connections(self) -> int:
        """HTTP connections open now."""
        return len(self._server.server_state.connections)

    def start(self) -> Gateway:
        """Serve in a daemon thread; returns once it accepts connections."""
        self._thread = threading.Thread(
            target=self._server.run, args=([self._socket],), name="ris-gateway", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the HTTP gateway did not start (see the log)")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (a few seconds at most), close."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        self._socket.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    http_settings.add_arguments(parser)


def run(args: argparse.Namespace, config: ClientConfig) -> int:
    """Serve until Ctrl-C or SIGTERM; the token flags are not used (callers send their own)."""
    gateway = Gateway(config, settings=http_settings.from_args(args)).start()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    handlers: dict[int, Any] = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    print(
        f"ris gateway: http://{gateway.settings.host}:{gateway.port}/v1/collections -> "
        f"search service {config.address} (Ctrl-C to stop)",
        flush=True,
    )
    try:
        while not stop.wait(1.0):
            pass
    finally:
        gateway.stop()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 0
