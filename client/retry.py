"""Retry with exponential backoff and jitter, for UNAVAILABLE only.

UNAVAILABLE means the request did not reach a working server (not started yet, restarting,
connection dropped), so sending it again is safe. Every write the API offers is idempotent
(ingest upserts by id), and no other code is retried: a bad request stays bad.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import grpc

from client.config import RetryPolicy
from client.errors import rpc_code

T = TypeVar("T")
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
OnRetry = Callable[[int, float, BaseException], None]


def backoff_delays(policy: RetryPolicy, rng: random.Random | None = None) -> Iterator[float]:
    """The waits between attempts: max_attempts - 1 of them, growing, capped, jittered."""
    rng = rng or random.Random()
    delay = policy.initial_backoff
    for _ in range(policy.max_attempts - 1):
        factor = 1.0 + rng.uniform(-policy.jitter, policy.jitter)
        yield min(policy.max_backoff, delay) * factor
        delay *= policy.multiplier


def is_retryable(error: BaseException) -> bool:
    return rpc_code(error) in RETRYABLE


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: OnRetry | None = None,
) -> T:
    """Call fn until it succeeds, fails with a non-retryable error, or attempts run out."""
    delays = backoff_delays(policy)
    attempt = 1
    while True:
        try:
            return fn()
        except grpc.RpcError as error:
            delay = next(delays, None) if is_retryable(error) else None
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(attempt, delay, error)
            sleep(delay)
            attempt += 1


async def acall_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: OnRetry | None = None,
) -> T:
    """asyncio twin of call_with_retry; fn must start a fresh call each time it is called."""
    delays = backoff_delays(policy)
    attempt = 1
    while True:
        try:
            return await fn()
        except grpc.RpcError as error:
            delay = next(delays, None) if is_retryable(error) else None
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(attempt, delay, error)
            await asyncio.sleep(delay)
            attempt += 1
