"""The ceiling a benchmark holds the embedder service against: the bare ONNX Runtime session's
images/s on already-preprocessed batches (no decoding, no gRPC), built as the server builds it."""

from __future__ import annotations

import time

import numpy as np

from ris.embedder.config import EmbedderConfig
from ris.embedder.preprocessing import prepare
from ris.embedder.runtime import ModelRuntime


def raw_throughput(
    config: EmbedderConfig, images: list[bytes], seconds: float, max_iters: int
) -> dict[str, float | str]:
    """Images/s of the bare session on preprocessed uint8 batches of ``max_batch_size``, the
    batch's p50 ms, and one thread's decode + preprocess ms per image."""
    runtime = ModelRuntime(config.model_paths[0], config)
    spec = runtime.metadata.preprocessing
    batch_size = config.max_batch_size
    arrays = [prepare(images[i % len(images)], spec) for i in range(batch_size)]
    batch = np.stack(arrays)
    decode_started = time.perf_counter()
    for data in images[:32]:
        prepare(data, spec)
    decode_ms = (time.perf_counter() - decode_started) * 1000 / min(len(images), 32)
    for _ in range(2):
        runtime.infer(batch)
    timings: list[float] = []
    stop_at = time.perf_counter() + seconds
    while len(timings) < max_iters and time.perf_counter() < stop_at:
        started = time.perf_counter()
        runtime.infer(batch)
        timings.append(time.perf_counter() - started)
    total = sum(timings)
    return {
        "batch_size": batch_size,
        "iterations": len(timings),
        "images_per_s": batch_size * len(timings) / total,
        "batch_ms_p50": float(np.percentile(timings, 50) * 1000),
        "decode_ms_per_image": decode_ms,
        "provider": runtime.execution_provider,
    }
