"""Bearer-token (and optional client-certificate) authentication as a gRPC server interceptor.

Each method needs a scope: READ or WRITE (a write token may also read). Tokens travel as
``authorization: Bearer <token>`` metadata and are compared in constant time. Health checking and
reflection stay open so that load balancers and grpcurl work without a token. Refusals name the
problem, never the token: UNAUTHENTICATED (none, malformed, unknown), PERMISSION_DENIED (a read
token on a write method, or a client certificate whose name is not allowed).
"""

from __future__ import annotations

import enum
import hmac
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc

log = logging.getLogger(__name__)

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class Scope(enum.IntEnum):
    """What a token may do; a higher scope includes the lower ones."""

    NONE = 0
    READ = 1
    WRITE = 2


def _matches(token: str, known: Sequence[bytes]) -> bool:
    """Constant-time membership: compare against every entry, never stop early."""
    candidate = token.encode("utf-8", "surrogatepass")
    found = False
    for entry in known:
        found |= hmac.compare_digest(candidate, entry)
    return found


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of the first ``authorization: Bearer ...`` entry; None when absent/malformed."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None


def peer_names(context: grpc.ServicerContext) -> set[str]:
    """The verified client certificate's common name and DNS/URI SANs (empty without mTLS)."""
    auth = context.auth_context() or {}
    names: set[str] = set()
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth.get(key, ()):
            names.add(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    return names


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks every call against ``method_scopes`` (unknown methods need WRITE).

    ``read_tokens``/``write_tokens`` both empty = tokens are not checked. ``client_names``, when
    given, must contain the client certificate's CN or a SAN (mutual TLS must be on).
    """

    def __init__(
        self,
        method_scopes: Mapping[str, Scope],
        read_tokens: Iterable[str] = (),
        write_tokens: Iterable[str] = (),
        client_names: Iterable[str] = (),
        open_prefixes: Sequence[str] = OPEN_PREFIXES,
    ) -> None:
        self._scopes = dict(method_scopes)
        self._write = [t.encode("utf-8", "surrogatepass") for t in write_tokens]
        self._read = [t.encode("utf-8", "surrogatepass") for t in read_tokens]
        self._names = set(client_names)
        self._open = tuple(open_prefixes)

    @property
    def checks_tokens(self) -> bool:
        return bool(self._read or self._write)

    def granted(self, token: str | None) -> Scope:
        """The scope ``token`` carries (NONE for no or an unknown token)."""
        if token is None:
            return Scope.NONE
        if _matches(token, self._write):
            return Scope.WRITE
        if _matches(token, self._read):
            return Scope.READ
        return Scope.NONE

    def check(self, method: str, context: grpc.ServicerContext) -> None:
        """Abort the call unless it may run; the message names the problem, never the token."""
        if self._names:
            names = peer_names(context)
            if not names:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
            if not names & self._names:
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"client certificate {sorted(names)} is not an allowed caller",
                )
        if not self.checks_tokens:
            return
        needed = self._scopes.get(method, Scope.WRITE)
        token = bearer_token(context.invocation_metadata())
        if token is None:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing credentials: send 'authorization: Bearer <token>' metadata",
            )
        scope = self.granted(token)
        if scope == Scope.NONE:
            log.warning("refused %s: unknown token from %s", method, context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
        if scope < needed:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs a {needed.name.lower()} token; this token is "
                f"{scope.name.lower()}-only",
            )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(self._open):
            return handler
        return _guarded(handler, lambda context: self.check(method, context))


def _guarded(
    handler: grpc.RpcMethodHandler, check: Callable[[grpc.ServicerContext], None]
) -> grpc.RpcMethodHandler:
    """The same handler with ``check(context)`` run before the method body."""

    def wrap(inner: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            check(context)
            return inner(request, context)

        return behavior

    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream), des, ser)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary), des, ser)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream), des, ser)
    return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), des, ser)


def method_scopes(
    service: Any, read: Iterable[str] = (), write: Iterable[str] = ()
) -> dict[str, Scope]:
    """``/package.Service/Method`` -> scope for a protobuf ServiceDescriptor; unlisted = WRITE."""
    read, write = set(read), set(write)
    names = {m.name for m in service.methods}
    unknown = (read | write) - names
    if unknown:
        raise ValueError(f"{service.full_name} has no methods {sorted(unknown)}")
    return {
        f"/{service.full_name}/{name}": Scope.READ if name in read else Scope.WRITE
        for name in names
    }
