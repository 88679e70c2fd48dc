"""Retry with exponential backoff and jitter, for UNAVAILABLE and RESOURCE_EXHAUSTED, in a budget.

UNAVAILABLE means the request did not reach a working server (not started yet, restarting,
connection dropped); RESOURCE_EXHAUSTED means the server was too busy to take it (its queue was
full: common/admission.py), so sending either again is safe. Every write the API offers is
idempotent (ingest upserts by id). A busy server says how long to back off in the trailing
metadata ``grpc-retry-pushback-ms``; the wait is then at least that (plus jitter, so refused
callers do not come back together). A RESOURCE_EXHAUSTED for a message over the size limit is
not retried (it would fail again), nor is any other code: a bad request stays bad.

All attempts share the caller's deadline (``budget_s``): each gets what is left as its timeout,
and no retry is started that could not finish in time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import grpc

from ris.client.config import RetryPolicy
from ris.client.errors import rpc_code

T = TypeVar("T")
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
PUSHBACK_KEY = "grpc-retry-pushback-ms"
MIN_ATTEMPT_S = 0.05  # no retry is started with less of the budget left
OnRetry = Callable[[int, float, BaseException], None]


def backoff_delays(policy: RetryPolicy, rng: random.Random | None = None) -> Iterator[float]:
    """The waits between attempts: max_attempts - 1 of them, growing, capped, jittered."""
    rng = rng or random.Random()
    delay = policy.initial_backoff
    for _ in range(policy.max_attempts - 1):
        factor = 1.0 + rng.uniform(-policy.jitter, policy.jitter)
        yield min(policy.max_backoff, delay) * factor
        delay *= policy.multiplier


def pushback_s(error: BaseException) -> float | None:
    """The server's ``grpc-retry-pushback-ms`` hint in seconds, if it sent one."""
    trailing = getattr(error, "trailing_metadata", None)
    try:
        metadata = trailing() if callable(trailing) else None
    except Exception:  # an error that is not a finished call
        return None
    for key, value in metadata or ():
        if key == PUSHBACK_KEY:
            try:
                return max(0.0, int(value) / 1000.0)
            except (TypeError, ValueError):
                return None
    return None


def is_retryable(error: BaseException) -> bool:
    code = rpc_code(error)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        details = getattr(error, "details", None)
        text = (details() if callable(details) else str(error)) or ""
        return "larger than max" not in text  # a too-big message stays too big
    return code in RETRYABLE


def _next_delay(
    error: BaseException,
    delays: Iterator[float],
    policy: RetryPolicy,
    left: float | None,
    rng: random.Random,
) -> float | None:
    """The wait before the next attempt, or None when the error must be raised."""
    if not is_retryable(error):
        return None
    delay = next(delays, None)
    if delay is None:
        return None
    hint = pushback_s(error)
    if hint is not None:
        delay = max(delay, hint * (1.0 + rng.uniform(0.0, policy.jitter)))
    if left is not None and left - delay < MIN_ATTEMPT_S:
        return None  # the next attempt could not finish within the caller's deadline
    return delay


def call_with_retry(
    fn: Callable[[float | None], T],
    policy: RetryPolicy,
    *,
    budget_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: OnRetry | None = None,
) -> T:
    """Call ``fn(timeout)`` until it succeeds, fails for good, or attempts or budget run out.

    ``timeout`` is what is left of ``budget_s`` (None without a budget)."""
    rng = random.Random()
    delays = backoff_delays(policy, rng)
    end = None if budget_s is None else time.monotonic() + budget_s
    attempt = 1
    while True:
        try:
            return fn(None if end is None else max(MIN_ATTEMPT_S, end - time.monotonic()))
        except grpc.RpcError as error:
            left = None if end is None else end - time.monotonic()
            delay = _next_delay(error, delays, policy, left, rng)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(attempt, delay, error)
            sleep(delay)
            attempt += 1


async def acall_with_retry(
    fn: Callable[[float | None], Awaitable[T]],
    policy: RetryPolicy,
    *,
    budget_s: float | None = None,
    on_retry: OnRetry | None = None,
) -> T:
    """asyncio twin of call_with_retry; fn must start a fresh call each time it is called."""
    rng = random.Random()
    delays = backoff_delays(policy, rng)
    end = None if budget_s is None else time.monotonic() + budget_s
    attempt = 1
    while True:
        try:
            return await fn(None if end is None else max(MIN_ATTEMPT_S, end - time.monotonic()))
        except grpc.RpcError as error:
            left = None if end is None else end - time.monotonic()
            delay = _next_delay(error, delays, policy, left, rng)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(attempt, delay, error)
            await asyncio.sleep(delay)
            attempt += 1
