"""The deadline of the call a handler thread is serving, for the calls it makes on its behalf.

The admission interceptor records each call's deadline when its handler starts
(``serving(context)``); code deep in a service (the embedder client, the Milvus store) asks
``timeout(default)`` for the seconds it may still spend, so a caller's 2 s deadline is what the
embedder and Milvus get too, instead of fixed 30-60 s timeouts that outlive the caller, and
long work (an ingest stream) asks ``call_over()`` to stop once its caller is gone.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class _Call:
    context: grpc.ServicerContext
    deadline: float | None  # time.monotonic() by which to answer; None = no deadline set


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("call", default=None)
MIN_TIMEOUT_S = 0.05  # a call with less left still gets a short try that fails as DEADLINE_EXCEEDED
_NO_DEADLINE = 10**8  # gRPC reports "no deadline" as a huge time_remaining


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The call's deadline on time.monotonic's clock, or None when the client set none."""
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE:
        return None
    return time.monotonic() + remaining


def enter(context: grpc.ServicerContext) -> contextvars.Token[_Call | None]:
    """Make ``context`` the current call of this thread; pass the token to ``leave``."""
    return _CALL.set(_Call(context, deadline_of(context)))


def leave(token: contextvars.Token[_Call | None]) -> None:
    """Undo ``enter`` (a generator closed from another thread's context: nothing to undo)."""
    try:
        _CALL.reset(token)
    except ValueError:
        _CALL.set(None)


@contextlib.contextmanager
def serving(context: grpc.ServicerContext) -> Iterator[None]:
    """Make ``context`` the current call for this thread while the block runs."""
    token = enter(context)
    try:
        yield
    finally:
        leave(token)


def remaining() -> float | None:
    """Seconds left of the current call's deadline (None: no call or no deadline)."""
    call = _CALL.get()
    if call is None or call.deadline is None:
        return None
    return call.deadline - time.monotonic()


def call_over() -> bool:
    """True once the current call was cancelled or its deadline passed: stop working for it."""
    call = _CALL.get()
    if call is None:
        return False
    left = remaining()
    return (left is not None and left <= 0) or not call.context.is_active()


def timeout(default: float) -> float:
    """``default`` capped by the current call's remaining deadline (at least MIN_TIMEOUT_S)."""
    left = remaining()
    return default if left is None else max(MIN_TIMEOUT_S, min(default, left))


def expired(margin_s: float = 0.1) -> bool:
    """True when the current call's deadline is (within ``margin_s``) past: a dependency's
    DEADLINE_EXCEEDED then is the caller's own deadline, not a slow dependency."""
    left = remaining()
    return left is not None and left < margin_s
