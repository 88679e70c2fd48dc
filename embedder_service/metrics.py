"""Prometheus metrics for the embedder, in a registry per server (tests run several)."""

from __future__ import annotations

import threading
import time
from collections import deque
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RATE_WINDOW_S = 10.0


class _RateWindow:
    """Images per second over the last RATE_WINDOW_S seconds, for a gauge that needs no PromQL."""

    def __init__(self) -> None:
        self._events: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._events.append((now, count))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._events and now - self._events[0][0] > RATE_WINDOW_S:
            self._events.popleft()

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            return sum(c for _, c in self._events) / RATE_WINDOW_S


class EmbedderMetrics:
    """Counters and histograms the servicer, core and batcher update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ris_embedder_requests",
            "RPCs finished, by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "ris_embedder_request_seconds",
            "RPC latency (per message for EmbedStream)",
            ["method"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "ris_embedder_images", "Images embedded successfully", ["model"], registry=r
        )
        self.item_errors = Counter(
            "ris_embedder_item_errors", "Images that failed, by reason", ["reason"], registry=r
        )
        self.batches = Counter("ris_embedder_batches", "Model invocations", ["model"], registry=r)
        self.batch_size = Histogram(
            "ris_embedder_batch_size",
            "Images per model invocation",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "ris_embedder_queue_seconds",
            "Time from preprocessed to batch start",
            ["model"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "ris_embedder_inference_seconds",
            "Model run time per batch",
            ["model"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.decode_seconds = Histogram(
            "ris_embedder_decode_seconds",
            "Decode + preprocess time per image",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.pending_images = Gauge(
            "ris_embedder_pending_images", "Images admitted and not yet answered", registry=r
        )
        self.rejected = Counter(
            "ris_embedder_rejected_requests",
            "Requests refused because the queue was full",
            registry=r,
        )
        self.texts = Counter(
            "ris_embedder_texts", "Texts embedded successfully", ["model"], registry=r
        )
        self.low_confidence_texts = Counter(
            "ris_embedder_low_confidence_texts",
            "Texts that matched no known concept (answered, flagged low_confidence)",
            ["model"],
            registry=r,
        )
        self._rate = _RateWindow()
        self.images_per_second = Gauge(
            "ris_embedder_images_per_second",
            f"Images embedded per second over the last {RATE_WINDOW_S:.0f} s",
            registry=r,
        )
        self.images_per_second.set_function(self._rate.rate)
        self._http: WSGIServer | None = None

    def observe_batch(self, model: str, size: int, seconds: float) -> None:
        self.batches.labels(model).inc()
        self.batch_size.labels(model).observe(size)
        self.inference_seconds.labels(model).observe(seconds)
        self.images.labels(model).inc(size)
        self._rate.add(size)

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP endpoint; returns the bound port (port 0 picks one)."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_address[1])

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
