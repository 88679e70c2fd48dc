"""uvicorn's h11 protocol, held to the gateway's connection limits (HttpSettings).

uvicorn bounds keep-alive idleness and request heads (h11's buffer), but not a connection that
sends nothing, or its head or body a byte at a time (slowloris), nor how many connections are
open. Each connection here has one deadline for what it owes: its request line and headers
(``header_timeout_s``, from the connection or the previous response, not reset by trickled
bytes), then its body (``body_timeout_s``, plus a grace second so the application's own 408
comes first when it is reading); it is closed when that passes. A connection over
``max_connections`` is answered 503 and closed at once, so its descriptor is back in
microseconds. A head over ``max_header_bytes`` is answered 431, other malformed requests 400,
both with the gateway's JSON error body.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, ClassVar

import grpc
import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ris.gateway.api import error_body
from ris.gateway.settings import HttpSettings

log = logging.getLogger("ris.gateway")
BODY_GRACE_S = 1.0


def _raw_response(status: str, code: grpc.StatusCode, message: str) -> bytes:
    """A whole response written before (or instead of) h11 parsing a request."""
    body = json.dumps(error_body(code, message)).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


TOO_MANY = _raw_response(
    "503 Service Unavailable",
    grpc.StatusCode.UNAVAILABLE,
    "too many connections to the gateway; try again shortly",
)
TIMED_OUT = _raw_response(
    "408 Request Timeout",
    grpc.StatusCode.DEADLINE_EXCEEDED,
    "request headers not received in time",
)


class BoundedH11Protocol(H11Protocol):
    """One connection; ``settings`` is set on the subclass protocol_class() makes."""

    settings: ClassVar[HttpSettings]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: Any = None  # h11.IDLE (head owed), h11.SEND_BODY (body owed) or None
        self._refused = False
        super().connection_made(transport)
        if len(self.connections) > self.settings.max_connections:
            self._refused = True
            transport.write(TOO_MANY)
            transport.close()
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request h11 could not parse: 431 for a head over the limit, else 400; JSON."""
        self._cancel()
        pending = len(self.conn.trailing_data[0])
        if pending > self.settings.max_header_bytes:
            status = 431
            text = f"request line and headers over {self.settings.max_header_bytes} bytes"
        else:
            status, text = 400, "malformed HTTP request"
        body = json.dumps(error_body(grpc.StatusCode.INVALID_ARGUMENT, text)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers)))
            self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # mid-response already: nothing more can be said
            pass
        self.transport.close()

    # -- the deadline of what the caller owes ----------------------------------------------

    def _watch(self) -> None:
        state = self.conn.their_state
        phase = state if state in (h11.IDLE, h11.SEND_BODY) else None
        if phase is self._phase or self.transport.is_closing():
            return
        self._cancel()
        self._phase = phase
        if phase is h11.IDLE:
            self._deadline = self.loop.call_later(self.settings.header_timeout_s, self._expire)
        elif phase is h11.SEND_BODY:
            timeout = self.settings.body_timeout_s + BODY_GRACE_S
            self._deadline = self.loop.call_later(timeout, self._expire)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._phase = None

    def _expire(self) -> None:
        """The caller did not send what it owed in time: 408 if it began a head, then close."""
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._phase is h11.IDLE and self.conn.trailing_data[0]:
            self.transport.write(TIMED_OUT)
        log.info("closed a connection from %s: request not received in time", self.client)
        self.transport.close()


def protocol_class(settings: HttpSettings) -> type[BoundedH11Protocol]:
    """The protocol uvicorn builds a connection with, bound to these settings."""
    return type("GatewayH11Protocol", (BoundedH11Protocol,), {"settings": settings})
