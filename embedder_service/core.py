"""The embedder without the network: admission, decode pool, per-model batchers, per-item results.

The gRPC servicer is a thin layer over `EmbedderCore.submit`; tests can call it directly.
Whole-call failures are `ServiceError`s (common/errors.py) with a gRPC status code; per-image
failures are `ItemResult`s with an error code, so one bad image never fails its neighbours.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, wait
from functools import partial
from pathlib import Path

from ris.common.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from ris.embedder.batcher import BatcherClosed, DeadlineDropped, DynamicBatcher, settle
from ris.embedder.config import ConfigError, EmbedderConfig
from ris.embedder.core_types import INTERNAL, INVALID_ARGUMENT, ItemResult, ModelDescription
from ris.embedder.decoding import DecodePool
from ris.embedder.metrics import EmbedderMetrics
from ris.embedder.model_metadata import embedding_version, file_version
from ris.embedder.preprocessing import ImageDecodeError, PreprocessSpec, with_resize_mode
from ris.embedder.runtime import ModelRuntime
from ris.embedder.text_worker import TextWorker

log = logging.getLogger(__name__)


class Admission:
    """Counts images admitted and not yet answered; the bound that keeps memory bounded."""

    def __init__(self, capacity: int, on_change: EmbedderMetrics) -> None:
        self.capacity = capacity
        self._pending = 0
        self._cond = threading.Condition()
        self._metrics = on_change

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    def acquire(self, n: int, timeout: float | None = 0.0) -> bool:
        """Reserve n slots; timeout 0 = fail at once when full, None = wait as long as needed."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._pending + n <= self.capacity, timeout)
            if ok:
                self._pending += n
                self._metrics.pending_images.set(self._pending)
            return ok

    def release(self, n: int = 1) -> None:
        with self._cond:
            self._pending -= n
            self._metrics.pending_images.set(self._pending)
            self._cond.notify_all()


class ModelWorker:
    """One model: its runtime, its batcher and its description."""

    def __init__(self, path: Path, config: EmbedderConfig, metrics: EmbedderMetrics) -> None:
        self.path = path
        self.runtime = ModelRuntime(path, config)
        # Warm the shapes the batcher will use; on GPUs the first run of a shape is slow.
        on_cpu = self.runtime.execution_provider == "CPUExecutionProvider"
        for size in (1,) if on_cpu else (1, config.max_batch_size):
            self.runtime.warm_up(size)
        meta = self.runtime.metadata
        self.name = meta.name
        # The served geometry (config.resize_mode) may differ from the model's metadata.
        self.spec: PreprocessSpec = with_resize_mode(meta.preprocessing, config.resize_mode)
        self.version = embedding_version(
            file_version(path), self.runtime.pooling, self.spec.resize_mode
        )
        self.description = ModelDescription(
            name=meta.name,
            version=self.version,
            dim=self.runtime.dim,
            execution_provider=self.runtime.execution_provider,
            providers=tuple(self.runtime.providers),
            precision=self.runtime.precision,
            preprocessing=self.spec,
            pooling=self.runtime.pooling,
            max_batch_size=config.max_batch_size,
            semantic_weight=self.runtime.semantic_weight,
            visual_dims=int(meta.dim) if self.runtime.semantic_weight else 0,
            max_images_per_request=config.max_images_per_request,
            max_image_pixels=config.max_image_pixels,
            max_request_bytes=config.max_message_bytes,
        )
        self._metrics = metrics
        self.batcher = DynamicBatcher(
            self.runtime.infer,
            config.max_batch_size,
            config.max_queue_delay_ms / 1000.0,
            on_batch=self._on_batch,
            on_drop=lambda reason: metrics.item_errors.labels(reason).inc(),
            name=meta.name,
        )

    def _on_batch(self, size: int, seconds: float, waits: list[float]) -> None:
        self._metrics.observe_batch(self.name, size, seconds)
        for waited in waits:
            self._metrics.queue_seconds.labels(self.name).observe(waited)


class PendingEmbed:
    """The in-flight images of one request; `result()` gathers them in request order."""

    def __init__(self, worker: ModelWorker, ids: list[str]) -> None:
        self.worker = worker
        self.ids = ids
        self.futures: list[Future] = []
        self.decodes: list[Future] = []

    def cancel(self) -> None:
        for f in self.decodes:
            f.cancel()
        for f in self.futures:
            f.cancel()

    def result(self, timeout: float | None = None) -> list[ItemResult]:
        _, not_done = wait(self.futures, timeout)
        if not_done:
            self.cancel()
            raise DeadlineExceeded("deadline exceeded while embedding")
        results = []
        for item_id, future in zip(self.ids, self.futures, strict=True):
            if future.cancelled():
                raise Cancelled("request cancelled")
            error = future.exception()
            if error is None:
                results.append(ItemResult(item_id, vector=future.result()))
            elif isinstance(error, DeadlineDropped):
                self.cancel()
                raise DeadlineExceeded(str(error))
            elif isinstance(error, BatcherClosed):
                self.cancel()
                raise Unavailable(str(error))
            elif isinstance(error, ImageDecodeError):
                results.append(ItemResult(item_id, None, INVALID_ARGUMENT, str(error)))
            else:
                results.append(ItemResult(item_id, None, INTERNAL, f"inference failed: {error}"))
        return results


class EmbedderCore:
    """Loads the models, owns the decode pool and admission, and embeds requests."""

    def __init__(self, config: EmbedderConfig, metrics: EmbedderMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or EmbedderMetrics()
        self.admission = Admission(config.max_queue_images, self.metrics)
        self.models: dict[str, ModelWorker] = {}
        self.draining = False
        for path in config.model_paths:
            worker = ModelWorker(Path(path), config, self.metrics)
            if worker.name in self.models:
                raise ConfigError(f"two models are named {worker.name!r}; names must differ")
            self.models[worker.name] = worker
        self.default = self.models[next(iter(self.models))]
        self.text_models: dict[str, TextWorker] = {}
        images = {w.name: (w.path, w.description) for w in self.models.values()}
        if not config.text_model_paths():
            log.info("no text model (text_models=%r): EmbedText is off", config.text_models)
        try:
            for path in config.text_model_paths():
                text = TextWorker(path, config, images, self.default.name)
                if text.name in self.models or text.name in self.text_models:
                    raise ConfigError(f"two models are named {text.name!r}; names must differ")
                self.text_models[text.name] = text
        except BaseException:
            for worker in self.models.values():  # started batcher threads must not outlive us
                worker.batcher.close()
            raise
        self.decoder = DecodePool(config.decode_workers, config.decode_mode)

    def descriptions(self) -> list[ModelDescription]:
        """Every model served: image models (default first), then text models."""
        return [w.description for w in self.models.values()] + [
            t.description for t in self.text_models.values()
        ]

    def text_model(self, name: str = "") -> TextWorker:
        """By name or version; "" = the text model that maps into the default image model."""
        for worker in self.text_models.values():
            if (name and name in (worker.name, worker.version)) or (
                not name and worker.description.target_space == self.default.name
            ):
                return worker
        if not name and self.text_models:
            return next(iter(self.text_models.values()))
        served = sorted(self.text_models)
        raise InvalidArgument(
            f"unknown text model {name!r}; text models served: {served}"
            if name
            else "no text model is served (start the embedder with --text-model)",
        )

    def embed_text(
        self, texts: Sequence[str], model: str = ""
    ) -> tuple[TextWorker, list[ItemResult]]:
        """Embed texts; per-item errors for empty or too-long texts, whole-call for the rest."""
        if self.draining:
            raise Unavailable("embedder is shutting down")
        limit = self.config.max_images_per_request
        if len(texts) > limit:
            raise InvalidArgument(
                f"too many texts in one request: {len(texts)} > max_images_per_request {limit}",
            )
        worker = self.text_model(model)
        try:
            results = worker.embed(list(texts))
        except Exception as exc:  # the text model failed: every item says so, the call succeeds
            log.exception("text model %s failed", worker.name)
            results = [
                ItemResult(str(i), None, INTERNAL, f"text inference failed: {exc}")
                for i in range(len(texts))
            ]
        ok = [r for r in results if r.vector is not None]
        self.metrics.texts.labels(worker.name).inc(len(ok))
        self.metrics.low_confidence_texts.labels(worker.name).inc(sum(r.low_confidence for r in ok))
        for r in results:
            if r.vector is None:
                self.metrics.item_errors.labels("invalid_text").inc()
        return worker, results

    def model(self, name: str = "") -> ModelWorker:
        """The default model for "", else the model with this name or version."""
        if not name:
            return self.default
        for worker in self.models.values():
            if name in (worker.name, worker.version):
                return worker
        raise InvalidArgument(f"unknown model {name!r}; served: {sorted(self.models)}")

    def submit(
        self,
        images: Sequence[tuple[str, bytes]],
        model: str = "",
        deadline: float | None = None,
        wait_for_capacity: bool = False,
    ) -> PendingEmbed:
        """Admit and start a request's images. Raises ServiceError when it cannot be taken."""
        if self.draining:
            raise Unavailable("embedder is shutting down")
        limit = self.config.max_images_per_request
        if len(images) > limit:
            raise InvalidArgument(
                f"too many images in one request: {len(images)} > max_images_per_request {limit}",
            )
        worker = self.model(model)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self.admission.acquire(len(images), timeout if wait_for_capacity else 0.0):
            self.metrics.rejected.inc()
            raise ResourceExhausted(
                f"embedder queue full ({self.admission.pending} of "
                f"{self.admission.capacity} images pending); retry with backoff",
            )
        pending = PendingEmbed(worker, [item_id for item_id, _ in images])
        for _, data in images:
            final: Future = Future()
            final.add_done_callback(lambda _f: self.admission.release(1))
            pending.futures.append(final)
            worker.batcher.expect(1)  # a batch due now waits for it (up to max_queue_delay)
            try:
                decode = self.decoder.submit(
                    data, worker.spec, self.config.max_image_pixels, deadline
                )
            except RuntimeError:  # the pool shut down under us: answer, and free the slot
                worker.batcher.withdraw(1)
                settle(final, error=BatcherClosed("embedder is shutting down"))
                continue
            pending.decodes.append(decode)
            decode.add_done_callback(partial(self._decoded, worker, final, deadline))
        return pending

    def _decoded(
        self, worker: ModelWorker, final: Future, deadline: float | None, decode: Future
    ) -> None:
        if decode.cancelled():
            worker.batcher.withdraw(1)
            final.cancel()
            return
        error = decode.exception()
        if error is not None:
            worker.batcher.withdraw(1)
            if isinstance(error, DeadlineDropped):
                self.metrics.item_errors.labels("deadline").inc()
            else:
                self.metrics.item_errors.labels("invalid_image").inc()
                if not isinstance(error, ImageDecodeError):
                    error = ImageDecodeError(
                        f"cannot decode image: {type(error).__name__}: {error}"
                    )
            settle(final, error=error)
            return
        array, seconds = decode.result()
        self.metrics.decode_seconds.observe(seconds)
        if final.cancelled():
            worker.batcher.withdraw(1)
            return
        try:
            worker.batcher.submit(array, final, deadline)
        except BatcherClosed as exc:
            settle(final, error=exc)

    def embed(
        self, images: Sequence[tuple[str, bytes]], model: str = "", timeout: float | None = None
    ) -> list[ItemResult]:
        deadline = None if timeout is None else time.monotonic() + timeout
        return self.submit(images, model, deadline).result(timeout)

    def close(self) -> None:
        """Finish what is queued, then stop the batchers and the decode pool."""
        self.draining = True
        self.decoder.close()
        for worker in self.models.values():
            worker.batcher.close()
