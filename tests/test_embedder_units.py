"""Embedder parts without a network: configuration, dynamic batcher, admission, runtime helpers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from ris.embedder.batcher import BatcherClosed, DeadlineDropped, DynamicBatcher
from ris.embedder.config import ConfigError, EmbedderConfig, from_args, from_env
from ris.embedder.core import Admission
from ris.embedder.metrics import EmbedderMetrics
from ris.embedder.runtime import fp16_sibling, l2_normalise


def test_flags_override_env_override_defaults():
    env = {
        "RIS_EMBEDDER_MAX_BATCH_SIZE": "8",
        "RIS_EMBEDDER_PORT": "6000",
        "RIS_EMBEDDER_ALLOW_FALLBACK": "yes",
        "RIS_EMBEDDER_METRICS_PORT": "off",
    }
    config = from_args(["--port", "7000", "--model", "a.onnx,b.onnx", "--no-allow-fallback"], env)
    assert config.port == 7000  # flag beats env
    assert config.max_batch_size == 8  # env beats default
    assert config.allow_fallback is False
    assert config.metrics_port is None
    assert config.model_paths == [Path("a.onnx"), Path("b.onnx")]
    assert config.max_queue_delay_ms == EmbedderConfig().max_queue_delay_ms


def test_env_model_and_bad_values():
    assert from_env({"RIS_EMBEDDER_MODEL": "m.onnx"}).model_paths == [Path("m.onnx")]
    with pytest.raises(ConfigError, match="RIS_EMBEDDER_MAX_BATCH_SIZE"):
        from_env({"RIS_EMBEDDER_MAX_BATCH_SIZE": "many"})
    with pytest.raises(ConfigError, match="provider"):
        from_args(["--provider", "tpu"], {})
    with pytest.raises(ConfigError, match="max_queue_images"):
        from_args(["--max-queue-images", "2", "--max-images-per-request", "8"], {})


def test_resize_mode_defaults_to_squash_and_is_checked():
    assert EmbedderConfig().resize_mode == "squash"  # the retrieval default
    assert from_env({"RIS_EMBEDDER_RESIZE_MODE": "model"}).resize_mode == "model"
    assert from_args(["--resize-mode", "shorter_crop"], {}).resize_mode == "shorter_crop"
    with pytest.raises(ConfigError, match="resize_mode"):
        from_args(["--resize-mode", "stretch"], {})


def test_fp16_sibling_and_normalise():
    assert fp16_sibling(Path("m/resnet50.onnx")) == Path("m/resnet50.fp16.onnx")
    assert fp16_sibling(Path("m/resnet50.fp16.onnx")) == Path("m/resnet50.fp16.onnx")
    v = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(v, [[0.6, 0.8], [0.0, 0.0]])


class Recorder:
    """A real infer function (row sums) that records the batch sizes it was given."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay = delay
        self.started = threading.Event()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.started.set()
        self.sizes.append(len(batch))
        time.sleep(self.delay)
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True).astype(np.float32)


def test_batcher_merges_up_to_max_and_keeps_order():
    infer = Recorder()
    batcher = DynamicBatcher(infer, max_batch_size=4, max_queue_delay_s=0.5)
    batcher.expect(10)  # as the core does while the ten are decoded
    futures: list[Future] = [Future() for _ in range(10)]
    for i, f in enumerate(futures):
        batcher.submit(np.full((2, 2), i, dtype=np.float32), f)
    results = [f.result(timeout=10) for f in futures]
    batcher.close(timeout=10)
    assert [float(r[0]) for r in results] == [4.0 * i for i in range(10)]
    assert infer.sizes[:2] == [4, 4] and sum(infer.sizes) == 10
    assert max(infer.sizes) <= 4


def test_batcher_waits_at_most_the_delay():
    infer = Recorder()
    batcher = DynamicBatcher(infer, max_batch_size=64, max_queue_delay_s=0.05)
    batcher.expect(2)  # a second image is being decoded and never comes in time
    future: Future = Future()
    started = time.monotonic()
    batcher.submit(np.ones((1,), dtype=np.float32), future)
    future.result(timeout=10)
    waited = time.monotonic() - started
    batcher.close(timeout=10)
    assert 0.04 <= waited < 2.0
    assert infer.sizes == [1]


def test_batcher_runs_a_lone_image_at_once_and_stops_waiting_for_a_withdrawn_one():
    """Nothing else on its way: waiting max_queue_delay would only delay the one image."""
    infer = Recorder()
    batcher = DynamicBatcher(infer, max_batch_size=64, max_queue_delay_s=5.0)
    lone: Future = Future()
    started = time.monotonic()
    batcher.submit(np.ones((1,), dtype=np.float32), lone)
    lone.result(timeout=10)
    assert time.monotonic() - started < 2.0  # far less than the 5 s delay
    batcher.expect(2)  # two on their way; one arrives, the other fails to decode
    first: Future = Future()
    batcher.submit(np.ones((1,), dtype=np.float32), first)
    time.sleep(0.1)
    assert not first.done()  # waits for its expected neighbour
    started = time.monotonic()
    batcher.withdraw(1)
    first.result(timeout=10)
    assert time.monotonic() - started < 2.0
    batcher.close(timeout=10)
    assert infer.sizes == [1, 1]


def test_batcher_drops_expired_and_cancelled_items():
    infer = Recorder(delay=0.2)
    drops: list[str] = []
    batcher = DynamicBatcher(infer, 1, 0.0, on_drop=drops.append)
    blocker: Future = Future()
    batcher.submit(np.zeros((1,), dtype=np.float32), blocker)
    assert infer.started.wait(10)
    expired: Future = Future()
    cancelled: Future = Future()
    kept: Future = Future()
    batcher.submit(np.zeros((1,), dtype=np.float32), expired, deadline=time.monotonic() + 0.01)
    batcher.submit(np.zeros((1,), dtype=np.float32), cancelled)
    batcher.submit(np.zeros((1,), dtype=np.float32), kept)
    assert cancelled.cancel()
    kept.result(timeout=10)
    batcher.close(timeout=10)
    with pytest.raises(DeadlineDropped):
        expired.result(timeout=0)
    assert sorted(drops) == ["cancelled", "deadline"]
    assert infer.sizes == [1, 1]  # the blocker and the kept item only


def test_batcher_failure_fails_only_that_batch_and_close_refuses():
    calls = []

    def infer(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.zeros((len(batch), 1), dtype=np.float32)

    batcher = DynamicBatcher(infer, 1, 0.0)
    bad: Future = Future()
    good: Future = Future()
    batcher.submit(np.zeros((1,), dtype=np.float32), bad)
    batcher.submit(np.zeros((1,), dtype=np.float32), good)
    with pytest.raises(RuntimeError, match="boom"):
        bad.result(timeout=10)
    assert good.result(timeout=10).shape == (1,)
    batcher.close(timeout=10)
    with pytest.raises(BatcherClosed):
        batcher.submit(np.zeros((1,), dtype=np.float32), Future())


def test_admission_bounds_and_waits():
    metrics = EmbedderMetrics()
    admission = Admission(4, metrics)
    assert admission.acquire(3)
    assert not admission.acquire(2)  # would exceed 4: refused at once
    threading.Timer(0.05, admission.release, args=(2,)).start()
    assert admission.acquire(2, timeout=5)  # waits for the release
    assert admission.pending == 3
    assert metrics.pending_images._value.get() == 3
