"""Admission control: a bounded queue in front of the workers, then RESOURCE_EXHAUSTED with a hint.

gRPC's own ``maximum_concurrent_rpcs`` counts every call of every service and refuses the next
one at once, so 16 idle streams used to lock out health checks, and the 17th concurrent search
was refused although a worker would free up in milliseconds. Instead:

* unary calls and streaming calls each get their own slots (``workers``, ``streams``), so idle
  or long ingest streams cannot starve searches, nor searches the streams;
* a call that finds no free slot waits in a queue (first come, first served; at most ``queue``
  calls waiting in all, each at most ``queue_wait_s`` and never past its own deadline; a call
  whose deadline is nearer than the expected wait plus a mean call time is refused at once,
  rather than left to expire in the queue);
* beyond the queue, or after waiting too long, it is refused with RESOURCE_EXHAUSTED and the
  trailing metadata ``grpc-retry-pushback-ms`` (how long to back off: the typical call time
  times the queue ahead, 50 ms..10 s), which RisClient honours;
* health checking and reflection are exempt: they never queue and are never refused;
* a client stream that sends no message for ``stream_idle_s`` is ended with DEADLINE_EXCEEDED
  (``StreamIdle``), so an idle stream cannot hold a slot forever.

The server's thread pool has a thread for every slot and queue place plus a reserve, so queued
calls wait in a thread (no deadlock) and exempt calls always find one.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from ris.common import deadlines
from ris.common.errors import Cancelled, DeadlineExceeded

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
PUSHBACK_KEY = "grpc-retry-pushback-ms"
RESERVE_THREADS = 8  # for exempt calls and for answering refusals while everything is busy
_MIN_PUSHBACK_MS, _MAX_PUSHBACK_MS = 50, 10_000
_POLL_S = 1.0  # how often a queued call checks that its client is still there
_STREAM_POLL_S = 0.2  # how often a handler waiting for a stream message checks its call


class AdmissionSettings(Protocol):
    """The admission settings of a service's config (docs/configuration.md)."""

    grpc_workers: int
    max_concurrent_streams: int
    max_queued_calls: int
    max_queue_wait_s: float
    stream_idle_timeout_s: float


@dataclass(frozen=True)
class AdmissionLimits:
    """How many calls run, how many wait and for how long; see the module docstring."""

    workers: int  # unary calls running at once
    streams: int = 0  # client-streaming calls running at once; 0 = same as workers
    queue: int = 128  # calls waiting for a slot, unary and streams together
    queue_wait_s: float = 30.0  # longest wait in the queue (the call's deadline also ends it)
    stream_idle_s: float = 30.0  # longest gap between two messages of a client stream

    def __post_init__(self) -> None:
        if self.workers < 1 or self.streams < 0 or self.queue < 0:
            raise ValueError("workers must be >= 1, streams and queue >= 0")
        if self.queue_wait_s < 0 or self.stream_idle_s <= 0:
            raise ValueError("queue_wait_s must be >= 0 and stream_idle_s > 0")

    @classmethod
    def of(cls, config: AdmissionSettings) -> AdmissionLimits:
        """From a service's config: both services name these settings alike."""
        return cls(
            workers=config.grpc_workers,
            streams=config.max_concurrent_streams,
            queue=config.max_queued_calls,
            queue_wait_s=config.max_queue_wait_s,
            stream_idle_s=config.stream_idle_timeout_s,
        )

    @property
    def stream_slots(self) -> int:
        return self.streams or self.workers

    @property
    def threads(self) -> int:
        """Thread pool size: every slot and queue place can hold a thread, plus the reserve."""
        return self.workers + self.stream_slots + self.queue + RESERVE_THREADS


class StreamIdle(DeadlineExceeded):
    """The client sent no message for the idle limit; the call ends with DEADLINE_EXCEEDED."""


class CallEnded(Cancelled):
    """The call ended while its handler waited for the next message of its stream."""


class _Queue:
    """The count of waiting calls, shared by every gate of a server."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0
        self._lock = threading.Lock()

    def join(self) -> bool:
        with self._lock:
            if self.waiting >= self.limit:
                return False
            self.waiting += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.waiting -= 1


class _Gate:
    """Slots for one kind of call, handed to waiters first come, first served (a freed slot goes
    to the oldest waiter, never to a newcomer); keeps a moving average of how long a call
    holds a slot, for the expected wait and the pushback hint."""

    def __init__(self, kind: str, slots: int, waiting: _Queue, limits: AdmissionLimits) -> None:
        self.kind = kind
        self.slots = slots
        self._free = slots
        self._waiters: deque[threading.Event] = deque()  # set = that waiter got a slot
        self._lock = threading.Lock()
        self._queue = waiting
        self._limits = limits
        self._mean_s = 0.05

    def expected_wait_s(self) -> float:
        """How long a call joining the queue now should wait: mean call time x queue / slots."""
        return self._mean_s * (len(self._waiters) + 1) / self.slots

    def pushback_ms(self) -> int:
        estimate = 1000 * self.expected_wait_s()
        return int(min(_MAX_PUSHBACK_MS, max(_MIN_PUSHBACK_MS, estimate)))

    def _refuse(self, context: grpc.ServicerContext, why: str) -> None:
        pushback = self.pushback_ms()
        context.set_trailing_metadata(((PUSHBACK_KEY, str(pushback)),))
        context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"server busy: {why}; retry in {pushback} ms",
        )

    def enter(self, context: grpc.ServicerContext) -> float:
        """Take a slot (waiting in the queue if need be) or abort the call; the start time."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return time.monotonic()
        deadline = deadlines.deadline_of(context)
        if deadline is not None and deadline - time.monotonic() < (
            self.expected_wait_s() + self._mean_s
        ):
            # it would expire in the queue or while served: say so now, while retrying later
            # or elsewhere can still help, instead of DEADLINE_EXCEEDED after holding a place
            self._refuse(context, "the expected queue wait exceeds the call's deadline")
        if not self._queue.join():
            self._refuse(
                context,
                f"{self.slots} {self.kind} calls running and {self._queue.limit} waiting "
                "(max_queued_calls)",
            )
        granted = threading.Event()
        with self._lock:
            self._waiters.append(granted)
        try:
            end = time.monotonic() + self._limits.queue_wait_s
            if deadline is not None:
                end = min(end, deadline)
            while True:
                left = end - time.monotonic()
                if left <= 0 or granted.wait(min(left, _POLL_S)):
                    break
                if not context.is_active():
                    break
        finally:
            self._queue.leave()
            with self._lock:
                if not granted.is_set():
                    self._waiters.remove(granted)
        if granted.is_set():
            if context.is_active():
                return time.monotonic()
            self._release()  # got it just as the client left: pass it on
        if not context.is_active():
            context.abort(grpc.StatusCode.CANCELLED, "cancelled while queued")
        self._refuse(
            context, f"no {self.kind} slot free within {self._limits.queue_wait_s:g} s (queued)"
        )
        raise AssertionError("unreachable")  # abort raised

    def _release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()  # the slot goes straight to the oldest waiter
            else:
                self._free += 1

    def leave(self, started: float) -> None:
        self._release()
        with self._lock:
            self._mean_s = 0.9 * self._mean_s + 0.1 * (time.monotonic() - started)


class _IdleLimited:
    """A request iterator whose ``next()`` gives up after ``idle_s`` without a message.

    gRPC's request iterator blocks without a timeout, so a pump thread reads it into a
    one-place queue (backpressure kept). The pump ends with the call: gRPC's iterator returns
    or raises once the call is over, and a pump with nobody left to hand to gives up then too.
    """

    _END = object()

    def __init__(self, source: Iterator[Any], idle_s: float, context: grpc.ServicerContext):
        self._source = source
        self._idle_s = idle_s
        self._context = context
        self._queue: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=1)
        self._done = False
        self._over = threading.Event()
        self._pump: threading.Thread | None = None
        context.add_callback(self._over.set)

    def _give(self, entry: tuple[object, BaseException | None]) -> bool:
        while not self._over.is_set():
            try:
                self._queue.put(entry, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        try:
            for message in self._source:
                if not self._give((message, None)):
                    return
            self._give((self._END, None))
        except BaseException as exc:  # the call ended (cancelled, deadline): hand it on
            self._give((self._END, exc))

    def __iter__(self) -> _IdleLimited:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        if self._pump is None:
            self._pump = threading.Thread(target=self._read, name="stream-reader", daemon=True)
            self._pump.start()
        end = time.monotonic() + self._idle_s
        while True:
            try:
                message, error = self._queue.get(timeout=min(_STREAM_POLL_S, self._idle_s))
                break
            except queue.Empty:
                if self._over.is_set() or not self._context.is_active():
                    self._done = True
                    raise CallEnded("the call ended (cancelled, or past its deadline)") from None
                if time.monotonic() >= end:
                    self._done = True
                    raise StreamIdle(
                        f"no message on the stream for {self._idle_s:g} s (stream_idle_timeout_s)"
                    ) from None
        if message is self._END:
            self._done = True
            if error is not None:
                raise error
            raise StopIteration
        return message


class AdmissionInterceptor(grpc.ServerInterceptor):
    """Queues, then sheds, every call but health checking and reflection (module docstring)."""

    def __init__(
        self, limits: AdmissionLimits, exempt_prefixes: tuple[str, ...] = OPEN_PREFIXES
    ) -> None:
        self.limits = limits
        waiting = _Queue(limits.queue)
        self._unary = _Gate("unary", limits.workers, waiting, limits)
        self._streams = _Gate("streaming", limits.stream_slots, waiting, limits)
        self._exempt = exempt_prefixes
        self._running = 0  # handlers inside the service (queued ones included)
        self._idle = threading.Condition()

    @property
    def running(self) -> int:
        with self._idle:
            return self._running

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no handler runs (after a stop: so what they use can be closed)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        with self._idle:
            self._running += 1
        try:
            yield
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._exempt):
            return handler
        return self._admitted(handler)

    def _admitted(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        gate = self._streams if handler.request_streaming else self._unary
        idle_s = self.limits.stream_idle_s

        def arguments(request: Any, context: grpc.ServicerContext) -> Any:
            return _IdleLimited(request, idle_s, context) if handler.request_streaming else request

        def unary_response(inner: Callable[..., Any]) -> Callable[..., Any]:
            def behavior(request: Any, context: grpc.ServicerContext) -> Any:
                with self._counted(), deadlines.serving(context):
                    started = gate.enter(context)
                    try:
                        return inner(arguments(request, context), context)
                    finally:
                        gate.leave(started)

            return behavior

        def stream_response(inner: Callable[..., Any]) -> Callable[..., Any]:
            def behavior(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                # a generator: gRPC iterates it on one thread; closing it releases the slot
                started = None
                with self._counted():
                    token = deadlines.enter(context)
                    try:
                        started = gate.enter(context)
                        yield from inner(arguments(request, context), context)
                    finally:
                        if started is not None:
                            gate.leave(started)
                        deadlines.leave(token)

            return behavior

        des, ser = handler.request_deserializer, handler.response_serializer
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                stream_response(handler.stream_stream), des, ser
            )
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                unary_response(handler.stream_unary), des, ser
            )
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                stream_response(handler.unary_stream), des, ser
            )
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), des, ser)
