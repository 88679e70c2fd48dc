"""The one error base of both services: a failure that carries its gRPC status code.

Code below the servicers raises ``ServiceError`` (or a subclass named after its code); each
servicer turns it into the call's status with ``abort_with``, the same way in both services.
INTERNAL, the base's default, is a bug or a dependency's failure: its message (which may quote
Milvus, a driver or a stack) goes to the log under a fresh request id, and the caller gets only
that id. Per-item failures (``ItemError`` in a response) are not exceptions; see status.py.
An error may carry a retry hint (``retry_after_ms``): it travels as the trailing metadata
``grpc-retry-pushback-ms``, which the client's retry honours (client/retry.py), and its message
says it too, for callers that read only messages.
"""

from __future__ import annotations

import logging
import uuid
from typing import NoReturn

import grpc

log = logging.getLogger(__name__)
PUSHBACK_KEY = "grpc-retry-pushback-ms"  # gRPC's retry hint (gRFC A6), what admission sends too


class ServiceError(Exception):
    """A call fails with ``code``; ``str(error)`` is the message the caller sees (INTERNAL
    excepted: see the module docstring); ``retry_after_ms``, when given, is the retry hint."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.retry_after_ms = retry_after_ms


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    """E.g. the embedder serves another model than the one that filled the collection."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServiceError):
    """A dependency cannot be reached, or the service is shutting down; retrying may work."""

    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(ServiceError):
    """The service (or the embedder behind it) is full; back off and retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Cancelled(ServiceError):
    """The caller cancelled, or its call ended: the work for it stops."""

    code = grpc.StatusCode.CANCELLED


class DeadlineExceeded(ServiceError):
    """The caller's deadline passed while the work (or a dependency) ran for it."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


def status_of(error: BaseException) -> grpc.StatusCode:
    """The status a failure ends its call with: a ServiceError's code, else INTERNAL."""
    return error.code if isinstance(error, ServiceError) else grpc.StatusCode.INTERNAL


def abort_with(context: grpc.ServicerContext, error: BaseException, method: str) -> NoReturn:
    """End the call with ``error``'s status (``status_of``); for INTERNAL only a request id."""
    code = status_of(error)
    if code == grpc.StatusCode.INTERNAL:
        context.abort(code, _logged_internal(method, error))
    hint = getattr(error, "retry_after_ms", None)
    if hint is not None:
        _add_trailer(context, PUSHBACK_KEY, str(max(0, int(hint))))
    context.abort(code, str(error))
    raise AssertionError("context.abort returned")  # it raises; its stubs do not say so


def _add_trailer(context: grpc.ServicerContext, key: str, value: str) -> None:
    """Add one trailing metadata entry, keeping what the handler set already (e.g. Ingest's
    stored count): set_trailing_metadata replaces the whole set."""
    current = getattr(context, "trailing_metadata", None)
    kept = tuple(current() or ()) if callable(current) else ()
    context.set_trailing_metadata((*(kv for kv in kept if kv[0] != key), (key, value)))


def _logged_internal(method: str, error: BaseException) -> str:
    """Log an internal failure in full under a new request id; the message for the caller,
    which carries the id and nothing of the failure."""
    request_id = uuid.uuid4().hex[:12]
    log.error("%s failed [request %s]: %s", method, request_id, error, exc_info=error)
    return f"internal error (request id {request_id}; details in the service log)"
