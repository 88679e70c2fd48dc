"""Decode + preprocess in a worker pool, so the model never waits on one JPEG.

Threads are the default: Pillow releases the GIL while decoding and resizing, and results need
no pickling. Processes are available for decode-heavy hosts with many cores.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np

from ris.embedder.batcher import DeadlineDropped
from ris.embedder.preprocessing import PreprocessSpec, prepare


def decode_task(
    data: bytes, spec: PreprocessSpec, max_pixels: int, deadline: float | None
) -> tuple[np.ndarray, float]:
    """Decoded, preprocessed image and the seconds it took. Module-level so processes can run it.

    time.monotonic is system-wide on Linux, so a deadline set in the server process holds here.
    """
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineDropped("deadline passed before decoding")
    started = time.perf_counter()
    array = prepare(data, spec, max_pixels)
    return array, time.perf_counter() - started


def _noop() -> None:
    return None


class DecodePool:
    """A bounded set of decode workers shared by every request."""

    def __init__(self, workers: int, mode: str = "thread") -> None:
        self.mode = mode
        self._executor: Executor
        if mode == "process":
            context = multiprocessing.get_context("spawn")  # never fork a process running gRPC
            self._executor = ProcessPoolExecutor(workers, mp_context=context)
            for f in [self._executor.submit(_noop) for _ in range(workers)]:
                f.result()  # start the workers now, not on the first request
        else:
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="decode")

    def submit(
        self, data: bytes, spec: PreprocessSpec, max_pixels: int, deadline: float | None
    ) -> Future[tuple[np.ndarray, float]]:
        return self._executor.submit(decode_task, data, spec, max_pixels, deadline)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
