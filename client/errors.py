"""Typed exceptions: gRPC status codes are mapped to these once, here."""

from __future__ import annotations

import grpc


class RisError(Exception):
    """Base for every error the client raises; `code` is the gRPC status code when there is one."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class InvalidArgument(RisError):
    """The request was refused as malformed (bad name, bad image, bad top_k, ...)."""


class NotFound(RisError):
    """The collection or item does not exist."""


class AlreadyExists(RisError):
    """A collection with that name exists already."""


class Unavailable(RisError):
    """The server could not be reached, even after the configured retries."""


class DeadlineExceeded(RisError):
    """The call took longer than its timeout."""


class Unauthenticated(RisError):
    """The token is missing or wrong."""


class PermissionDenied(RisError):
    """The token is valid but not allowed to do this."""


class ResourceExhausted(RisError):
    """The server is overloaded or the request is too large; back off and retry later."""


class FailedPrecondition(RisError):
    """The collection cannot take this call as things stand, e.g. it was filled by another model."""


class QueryFailed(RisError):
    """One query of a search failed on the server (e.g. the query image could not be decoded)."""


_BY_CODE: dict[grpc.StatusCode, type[RisError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}


def rpc_code(error: BaseException) -> grpc.StatusCode | None:
    """Status code of a grpc.RpcError (sync or aio), None for anything else."""
    code = getattr(error, "code", None)
    if not isinstance(error, grpc.RpcError) or not callable(code):
        return None
    value = code()
    return value if isinstance(value, grpc.StatusCode) else None


def from_rpc_error(error: grpc.RpcError, what: str = "") -> RisError:
    """Translate a gRPC failure into the matching RisError subclass."""
    code = rpc_code(error)
    details_fn = getattr(error, "details", None)
    details = details_fn() if callable(details_fn) else str(error)
    name = code.name if code is not None else "UNKNOWN"
    prefix = f"{what}: " if what else ""
    cls = _BY_CODE.get(code, RisError) if code is not None else RisError
    return cls(f"{prefix}{name}: {details}", code)
