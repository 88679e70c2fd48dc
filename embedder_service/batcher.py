"""Dynamic batching: single preprocessed images from many requests are merged into model batches.

A batch is dispatched when it is full (max_batch_size), when its oldest image has waited
max_queue_delay, or at once when no other image is on its way (`expect`: admitted and still
being decoded), since then waiting only delays the one queued: a lone request never waits for
company. While the model runs, new images pile up and form the next batch, so under load
batches fill without any waiting. Images whose deadline passed, or whose request was
cancelled, are dropped before they reach the model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


class DeadlineDropped(TimeoutError):
    """The request's deadline passed before its image reached the model."""


class BatcherClosed(RuntimeError):
    """The batcher stopped; no more images are accepted."""


@dataclass
class _Item:
    array: np.ndarray
    future: Future
    deadline: float | None
    enqueued: float


def settle(future: Future, result: object = None, error: BaseException | None = None) -> None:
    """Resolve a future unless it was cancelled or resolved meanwhile (races are expected)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


class DynamicBatcher:
    """One thread per model runs `infer(np.stack(arrays))` and resolves each image's future."""

    def __init__(
        self,
        infer: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_queue_delay_s: float,
        on_batch: Callable[[int, float, list[float]], None] | None = None,
        on_drop: Callable[[str], None] | None = None,
        name: str = "model",
    ) -> None:
        self._infer = infer
        self._max_batch = max_batch_size
        self._max_delay = max_queue_delay_s
        self._on_batch = on_batch
        self._on_drop = on_drop
        self._queue: deque[_Item] = deque()
        self._incoming = 0  # images expected (being decoded), not yet submitted or withdrawn
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def expect(self, n: int = 1) -> None:
        """n images are on their way (being decoded): a queued batch may wait for them, up to
        max_queue_delay. Each one later arrives (`submit`) or is withdrawn (`withdraw`)."""
        with self._cond:
            self._incoming += n

    def withdraw(self, n: int = 1) -> None:
        """n expected images will not come (failed, cancelled): stop waiting for them."""
        with self._cond:
            self._incoming = max(0, self._incoming - n)
            self._cond.notify()

    def submit(self, array: np.ndarray, future: Future, deadline: float | None = None) -> None:
        """Queue one preprocessed image (one expected one has arrived, if any was expected);
        `future` gets its vector (or an exception)."""
        item = _Item(array, future, deadline, time.monotonic())
        with self._cond:
            self._incoming = max(0, self._incoming - 1)
            if self._closed:
                self._cond.notify()
                raise BatcherClosed("embedder is shutting down")
            self._queue.append(item)
            self._cond.notify()

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting; images already queued are still run, then the thread ends."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _take_batch(self) -> list[_Item] | None:
        """Block until a batch is due; None when closed and empty."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            due = self._queue[0].enqueued + self._max_delay
            while len(self._queue) < self._max_batch and self._incoming and not self._closed:
                remaining = due - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Item] = []
            while self._queue and len(batch) < self._max_batch:
                batch.append(self._queue.popleft())
            return batch

    def _live(self, batch: list[_Item]) -> list[_Item]:
        now = time.monotonic()
        live = []
        for item in batch:
            if item.deadline is not None and now >= item.deadline:
                settle(item.future, error=DeadlineDropped("deadline passed while queued"))
                if self._on_drop:
                    self._on_drop("deadline")
            elif not item.future.set_running_or_notify_cancel():
                if self._on_drop:
                    self._on_drop("cancelled")
            else:
                live.append(item)
        return live

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            live = self._live(batch)
            if not live:
                continue
            started = time.monotonic()
            try:
                vectors = self._infer(np.stack([item.array for item in live]))
            except Exception as exc:  # a failed run fails its own images, not the server
                log.exception("inference failed for a batch of %d", len(live))
                for item in live:
                    settle(item.future, error=exc)
                continue
            seconds = time.monotonic() - started
            for item, vector in zip(live, vectors, strict=True):
                settle(item.future, vector)
            if self._on_batch:
                self._on_batch(len(live), seconds, [started - item.enqueued for item in live])
