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
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import grpc

from ris.client.config import RetryPolicy
from ris.client.errors import rpc_code

log = logging.getLogger(__name__)
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


class _Attempts:
    """The attempts of one retried call: the timeout of each, and the wait before the next."""

    def __init__(self, policy: RetryPolicy, budget_s: float | None, on_retry: OnRetry | None):
        self.policy = policy
        self.rng = random.Random()
        self.delays = backoff_delays(policy, self.rng)
        self.end = None if budget_s is None else time.monotonic() + budget_s
        self.on_retry = on_retry
        self.count = 1

    def timeout(self) -> float | None:
        """What is left of the budget for the next attempt (None without a budget)."""
        return None if self.end is None else max(MIN_ATTEMPT_S, self.end - time.monotonic())

    def wait_after(self, error: grpc.RpcError) -> float:
        """The wait before the next attempt; raises ``error`` when there is to be none."""
        left = None if self.end is None else self.end - time.monotonic()
        delay = _next_delay(error, self.delays, self.policy, left, self.rng)
        if delay is None:
            raise error
        if self.on_retry is not None:
            self.on_retry(self.count, delay, error)
        self.count += 1
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
    attempts = _Attempts(policy, budget_s, on_retry)
    while True:
        try:
            return fn(attempts.timeout())
        except grpc.RpcError as error:
            sleep(attempts.wait_after(error))


async def acall_with_retry(
    fn: Callable[[float | None], Awaitable[T]],
    policy: RetryPolicy,
    *,
    budget_s: float | None = None,
    on_retry: OnRetry | None = None,
) -> T:
    """asyncio twin of call_with_retry; fn must start a fresh call each time it is called."""
    attempts = _Attempts(policy, budget_s, on_retry)
    while True:
        try:
            return await fn(attempts.timeout())
        except grpc.RpcError as error:
            await asyncio.sleep(attempts.wait_after(error))


def log_retry(attempt: int, delay: float, error: BaseException) -> None:
    """The clients' ``on_retry``: one warning per failed attempt that is tried again."""
    code = rpc_code(error)
    details = getattr(error, "details", None)
    reason = f"{code.name if code else 'error'}: {details() if callable(details) else error}"
    log.warning("attempt %d failed (%s); retrying in %.2fs", attempt, reason, delay)
