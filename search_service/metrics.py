"""Prometheus metrics of the search service, in a registry of its own (one per server).

Ingest rate: ``rate(ris_search_ingest_items_total{result="stored"}[1m])``. Search latency is split
by stage: ``ris_search_stage_seconds{op="search"|"ingest",stage="embed"|"milvus"|"augment"}``
(augment: blending an Ingest call's items into an augmented collection, also inside milvus).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class SearchMetrics:
    """Counters and histograms; ``serve`` exposes them over HTTP."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ris_search_requests",
            "RPCs handled, by method and final status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "ris_search_request_seconds",
            "RPC wall time by method",
            ["method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "ris_search_stage_seconds",
            "Time spent in the embedder or Milvus, per operation",
            ["op", "stage"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.ingest_items = Counter(
            "ris_search_ingest_items",
            "Ingested items by result (stored or failed)",
            ["result"],
            registry=self.registry,
        )
        self.search_queries = Counter(
            "ris_search_queries", "Search queries by kind", ["kind"], registry=self.registry
        )
        self._http: Any = None

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics endpoint; returns the bound port (0 picks one)."""
        http, _ = start_http_server(port, addr=host, registry=self.registry)
        self._http = http
        return int(http.server_address[1])

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
