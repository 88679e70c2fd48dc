"""gRPC <-> EmbedderCore: message conversion, deadlines, status codes. No logic of its own."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

from ris.api import common_pb2, embedder_pb2, embedder_pb2_grpc
from ris.common.errors import Cancelled, ServiceError, Unavailable, abort_with
from ris.embedder.core import (
    EmbedderCore,
    ItemResult,
    ModelDescription,
    ModelWorker,
    PendingEmbed,
)
from ris.embedder.text_worker import TextWorker

OK = grpc.StatusCode.OK
_POLL_S = 0.2  # how often a waiting stream handler checks that its call is still on
_GONE = object()  # the stream's call ended while the handler waited


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The call's deadline on time.monotonic's clock, or None when the client set none."""
    remaining = context.time_remaining()
    if remaining is None or remaining > 10**8:
        return None
    return time.monotonic() + remaining


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def to_response(
    worker: ModelWorker | TextWorker, results: list[ItemResult]
) -> embedder_pb2.EmbedResponse:
    response = embedder_pb2.EmbedResponse(
        model=worker.name, model_version=worker.version, dim=worker.description.dim
    )
    for r in results:
        if r.vector is not None:
            response.results.add(
                id=r.id,
                embedding=r.vector.tolist(),
                confidence=r.confidence,
                low_confidence=r.low_confidence,
            )
        else:
            error = common_pb2.ItemError(code=r.error_code, message=r.error_message)
            response.results.add(id=r.id, error=error)
    return response


def to_model_info(d: ModelDescription) -> common_pb2.ModelInfo:
    p = d.preprocessing
    info = common_pb2.ModelInfo(
        name=d.name,
        version=d.version,
        dim=d.dim,
        execution_provider=d.execution_provider,
        providers=list(d.providers),
        precision=d.precision,
        max_batch_size=d.max_batch_size,
        max_images_per_request=d.max_images_per_request,
        max_image_pixels=d.max_image_pixels,
        modality=d.modality,
        pooling=d.pooling,
        target_space=d.target_space,
        max_request_bytes=d.max_request_bytes,
        visual_dims=d.visual_dims,
    )
    if p is not None:
        info.preprocessing.CopyFrom(
            common_pb2.Preprocessing(
                color_order=p.color_order,
                mean=list(p.mean),
                std=list(p.std),
                resize_shorter=p.resize_shorter,
                crop_size=p.crop_size,
                interpolation=p.interpolation,
                input_layout=p.input_layout,
                resize_mode=p.resize_mode,
            )
        )
    return info


def _images(request: embedder_pb2.EmbedRequest) -> list[tuple[str, bytes]]:
    return [(image.id, image.data) for image in request.images]


class EmbedderServicer(embedder_pb2_grpc.EmbedderServicer):
    def __init__(self, core: EmbedderCore) -> None:
        self.core = core
        self.metrics = core.metrics

    def _finish(self, method: str, code: grpc.StatusCode, started: float) -> None:
        self.metrics.requests.labels(method, code.name).inc()
        self.metrics.request_seconds.labels(method).observe(time.perf_counter() - started)

    def Embed(self, request, context):
        started = time.perf_counter()
        deadline = deadline_of(context)
        try:
            pending = self.core.submit(_images(request), request.model, deadline)
            context.add_callback(pending.cancel)  # client gone: drop its queued work
            response = to_response(pending.worker, pending.result(_remaining(deadline)))
        except ServiceError as exc:
            self._finish("Embed", exc.code, started)
            abort_with(context, exc, "Embed")
        self._finish("Embed", OK, started)
        return response

    def EmbedStream(self, request_iterator, context):
        """Pipelined: up to stream_window messages are in flight; answers keep request order.

        Whole-stream errors (too many images, unknown model, shutdown) end the stream with that
        status after the answers already due; the answers sent tell the client where to resume.
        """
        deadline = deadline_of(context)
        window: queue.Queue = queue.Queue(maxsize=self.core.config.stream_window)
        stop = threading.Event()
        in_flight: list[PendingEmbed] = []
        context.add_callback(stop.set)
        reader = threading.Thread(
            target=self._read_stream,
            args=(request_iterator, deadline, window, stop, in_flight),
            name="embed-stream-reader",
            daemon=True,
        )
        reader.start()
        try:
            while True:
                entry = self._next_entry(window, stop, context)
                if entry is _GONE:
                    self.metrics.requests.labels("EmbedStream", "CANCELLED").inc()
                    return
                if entry is None:
                    self.metrics.requests.labels("EmbedStream", OK.name).inc()
                    return
                if isinstance(entry, ServiceError):
                    self.metrics.requests.labels("EmbedStream", entry.code.name).inc()
                    abort_with(context, entry, "EmbedStream")
                started, pending = entry
                try:
                    results = self._results(pending, deadline, context)
                except ServiceError as exc:
                    self.metrics.requests.labels("EmbedStream", exc.code.name).inc()
                    abort_with(context, exc, "EmbedStream")
                in_flight.remove(pending)
                self.metrics.request_seconds.labels("EmbedStream").observe(
                    time.perf_counter() - started
                )
                yield to_response(pending.worker, results)
        finally:
            stop.set()
            for pending in list(in_flight):
                pending.cancel()

    @staticmethod
    def _next_entry(
        window: queue.Queue, stop: threading.Event, context: grpc.ServicerContext
    ) -> Any:
        """The reader's next entry, or _GONE once the call is over (cancelled, deadline,
        server stopping): the handler thread never waits on the window without a bound."""
        while True:
            try:
                return window.get(timeout=_POLL_S)
            except queue.Empty:
                if stop.is_set() or not context.is_active():
                    return _GONE

    @staticmethod
    def _results(
        pending: PendingEmbed, deadline: float | None, context: grpc.ServicerContext
    ) -> list[ItemResult]:
        """pending.result(), giving up (CANCELLED) when the call ends while it waits."""
        while True:
            left = _remaining(deadline)
            _, waiting = futures.wait(
                pending.futures, _POLL_S if left is None else min(left, _POLL_S)
            )
            if not waiting or (left is not None and left <= _POLL_S):
                return pending.result(0)  # done; or past the deadline: DEADLINE_EXCEEDED
            if not context.is_active():
                pending.cancel()
                raise Cancelled("call ended while embedding")

    def _read_stream(
        self,
        request_iterator: Iterator[embedder_pb2.EmbedRequest],
        deadline: float | None,
        window: queue.Queue,
        stop: threading.Event,
        in_flight: list[PendingEmbed],
    ) -> None:
        """Reads messages and starts them; the window bounds how far ahead of the answers."""

        def put(entry: object) -> bool:
            while not stop.is_set():
                try:
                    window.put(entry, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for request in request_iterator:
                if stop.is_set():
                    return
                if self.core.draining:
                    put(Unavailable("embedder is shutting down"))
                    return
                started = time.perf_counter()
                pending = self.core.submit(
                    _images(request), request.model, deadline, wait_for_capacity=True
                )
                in_flight.append(pending)
                if not put((started, pending)):
                    pending.cancel()
                    return
            put(None)
        except ServiceError as exc:  # the stream limits' StreamIdle, CallEnded too (admission.py)
            put(exc)
        except Exception as exc:  # the request stream broke (client cancelled, server stopping)
            put(Cancelled(f"request stream failed: {exc}"))

    def EmbedText(self, request, context):
        started = time.perf_counter()
        try:
            worker, results = self.core.embed_text(list(request.texts), request.model)
        except ServiceError as exc:
            self._finish("EmbedText", exc.code, started)
            abort_with(context, exc, "EmbedText")
        self._finish("EmbedText", OK, started)
        return to_response(worker, results)

    def GetModelInfo(self, request, context):
        started = time.perf_counter()
        models = [to_model_info(d) for d in self.core.descriptions()]
        response = embedder_pb2.GetModelInfoResponse(
            default_model=to_model_info(self.core.default.description), models=models
        )
        self._finish("GetModelInfo", OK, started)
        return response
