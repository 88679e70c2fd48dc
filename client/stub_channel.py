"""A channel for tools that call the generated stubs directly (`ris eval`, `ris bench`): the same
TLS, token and retries as RisClient, so they work against a secured deployment too.

Unary calls are retried like RisClient's (client/retry.py: UNAVAILABLE and RESOURCE_EXHAUSTED,
backoff, jitter, the server's pushback hint, within the call's own timeout); streaming calls
get the token but no retry (their request iterator cannot be replayed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import grpc

from ris.client.channel import open_channel
from ris.client.config import ClientConfig
from ris.client.retry import call_with_retry


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _CallDetails(_Details, grpc.ClientCallDetails):
    """grpc.ClientCallDetails with fields (the grpc class declares them only)."""


class _ConfiguredCalls(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, config: ClientConfig) -> None:
        self._config = config

    def _details(self, details: grpc.ClientCallDetails, timeout: float | None) -> _CallDetails:
        metadata = [m for m in (details.metadata or ()) if m[0].lower() != "authorization"]
        return _CallDetails(
            details.method,
            timeout,
            (*metadata, *self._config.metadata()),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        def attempt(timeout: float | None) -> Any:
            outcome = continuation(self._details(details, timeout), request)
            outcome.result()  # raises the call's RpcError, which decides on a retry
            return outcome

        try:
            return call_with_retry(attempt, self._config.retry, budget_s=details.timeout)
        except grpc.RpcError as error:
            return error  # the failed call: the stub raises it, as without the interceptor

    def _stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details, details.timeout), request)

    intercept_unary_stream = _stream
    intercept_stream_unary = _stream
    intercept_stream_stream = _stream


def open_stub_channel(config: ClientConfig) -> grpc.Channel:
    """open_channel(config) whose calls carry the token and retry like RisClient's."""
    return grpc.intercept_channel(open_channel(config), _ConfiguredCalls(config))
