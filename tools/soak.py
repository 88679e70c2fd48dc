"""Sustained load (search + ingest together) against real service processes, with RSS sampled.

Drives ``concurrency`` workers for ``duration_s`` seconds (some ingest, the rest search) against
a search service started by ris.tools.harness, samples each process's RSS from /proc/PID/status,
then checks that every stored item is there exactly once. Every loop is bounded by a request
count and a deadline. scripts/soak.py runs it by hand; tests/test_load_mixed.py runs it short.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ris.client import IngestItem, RetryPolicy, RisClient
from ris.client.errors import RisError
from ris.client.types import QueryLike
from ris.common.status import status_name
from ris.tools.harness import ServiceProcess
from ris.tools.machine import machine_info, rss_mb
from ris.tools.stats import percentiles_ms

# -- the load ------------------------------------------------------------------------------------


@dataclass
class SoakReport:
    duration_s: float
    concurrency: int
    ingest_workers: int
    calls: dict[str, int]
    errors: dict[str, int]
    latency_ms: dict[str, dict[str, float]]
    items_sent: int
    items_stored: int
    items_failed: int
    count_after: int
    duplicates: int
    rss_mb: dict[str, list[tuple[float, float]]]
    rss_growth_mb: dict[str, float]
    loadavg_before: list[float]
    loadavg_after: list[float]
    machine: dict[str, Any]


class _Results:
    """Thread-safe tallies for the workers."""

    def __init__(self, warmup_until: float) -> None:
        self.lock = threading.Lock()
        self.warmup_until = warmup_until
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.latency: dict[str, list[float]] = {"search": [], "ingest": []}
        self.sent = self.stored = self.failed = 0
        self.failed_ids: list[str] = []
        self.sent_ids: list[str] = []

    def record(self, kind: str, started: float, error: str = "") -> None:
        now = time.monotonic()
        with self.lock:
            self.calls[kind] += 1
            if error:
                self.errors[f"{kind}:{error}"] += 1
            elif started >= self.warmup_until:
                self.latency[kind].append(now - started)


def _back_off(code: str, rng: random.Random) -> None:
    """What a polite client does when told the service is full: wait a little, with jitter."""
    if code == "RESOURCE_EXHAUSTED":
        time.sleep(rng.uniform(0.05, 0.2))


def _code_name(error: RisError) -> str:
    return error.code.name if error.code else "UNKNOWN"


def _client(address: str, timeout_s: float) -> RisClient:
    """RisClient with no retry: the tallies show what the service answered."""
    return RisClient(
        address=address, timeout=timeout_s, ingest_timeout=timeout_s, retry=RetryPolicy(1)
    )


def drive(
    address: str,
    collection: str,
    images: list[bytes],
    duration_s: float,
    concurrency: int,
    ingest_workers: int,
    warmup_s: float = 10.0,
    items_per_ingest: int = 4,
    max_calls_per_worker: int = 100_000,
    timeout_s: float = 120.0,
) -> _Results:
    """Run the mixed load; returns the tallies (bounded by ``duration_s`` and the call cap)."""
    start = time.monotonic()
    deadline = start + duration_s
    results = _Results(start + warmup_s)
    ris = _client(address, timeout_s)
    dim = ris.describe_collection(collection).dim  # vector queries in the collection's space

    def ingest_worker(w: int) -> None:
        rng = random.Random(w)
        for n in range(max_calls_per_worker):
            if time.monotonic() >= deadline:
                return
            items = [
                IngestItem(
                    id=f"w{w}-{n}-{k}",
                    data=rng.choice(images),
                    label=f"w{w}",
                    metadata={"worker": str(w)},
                )
                for k in range(items_per_ingest)
            ]
            began = time.monotonic()
            summary = ris.ingest(collection, items, items_per_call=items_per_ingest)
            # One call: when it failed as a whole, every item carries the call's status.
            failed_call = summary.stored == 0 and len(summary.failures) == len(items)
            code = status_name(summary.failures[0].code) if failed_call else ""
            results.record("ingest", began, code)
            _back_off(code, rng)
            with results.lock:
                results.sent += len(items)
                results.sent_ids += [i.id for i in items]
                results.stored += summary.stored
                results.failed += summary.failed
                results.failed_ids += [f.id for f in summary.failures]

    def search_worker(w: int) -> None:
        rng = random.Random(1000 + w)
        for n in range(max_calls_per_worker):
            if time.monotonic() >= deadline:
                return
            query: QueryLike
            if n % 4 == 3:
                query = np.random.default_rng(n).standard_normal(dim).astype(np.float32)
            else:
                query = rng.choice(images)
            began = time.monotonic()
            try:
                [result] = ris.search_batch(collection, [query], top_k=10)
            except RisError as error:
                results.record("search", began, _code_name(error))
                _back_off(_code_name(error), rng)
                continue
            code = result.error.code if result.error is not None else 0
            results.record("search", began, f"item-{code}" if code else "")

    threads = [
        threading.Thread(
            target=ingest_worker if w < ingest_workers else search_worker, args=(w,), daemon=True
        )
        for w in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic()) + timeout_s + 30)
    ris.close()
    return results


def sample_rss(
    pids: dict[str, int], stop: threading.Event, every_s: float, out: dict[str, list]
) -> None:
    """Append (seconds since start, RSS MB) per process every ``every_s`` until ``stop``."""
    start = time.monotonic()
    for _ in range(100_000):  # bounded; stop ends it long before
        t = round(time.monotonic() - start, 1)
        for name, pid in pids.items():
            out.setdefault(name, []).append((t, round(rss_mb(pid), 1)))
        if stop.wait(every_s):
            return


def rss_growth(series: list[tuple[float, float]], warmup_s: float) -> float:
    """Median RSS of the last quarter minus median RSS of the first quarter after warm-up."""
    after = [mb for t, mb in series if t >= warmup_s]
    if len(after) < 4:
        return 0.0
    q = len(after) // 4
    return float(np.median(after[-q:]) - np.median(after[:q]))


def verify_stored(address: str, collection: str, expected_ids: set[str]) -> tuple[int, int]:
    """(count, duplicates): Count, and how many ids Get returns more than once."""
    with _client(address, 60.0) as ris:
        count = ris.count(collection)
        seen: Counter[str] = Counter()
        ids = sorted(expected_ids)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            seen.update(item.id for item in ris.get(collection, chunk, limit=16384))
        return count, sum(n - 1 for n in seen.values() if n > 1)


def soak(
    search: ServiceProcess,
    pids: dict[str, int],
    images: list[bytes],
    duration_s: float,
    concurrency: int,
    ingest_workers: int,
    warmup_s: float = 10.0,
    rss_every_s: float = 2.0,
) -> SoakReport:
    """Create a collection, drive the load while sampling RSS, verify what was stored."""
    name = f"soak_{int(time.time())}"
    with _client(search.address, 120.0) as ris:
        ris.create_collection(name)
    series: dict[str, list] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(pids, stop, rss_every_s, series))
    load_before = list(os.getloadavg())
    began = time.monotonic()
    sampler.start()
    try:
        results = drive(
            search.address, name, images, duration_s, concurrency, ingest_workers, warmup_s
        )
    finally:
        stop.set()
        sampler.join(timeout=30)
    elapsed = time.monotonic() - began
    load_after = list(os.getloadavg())
    stored_ids = set(results.sent_ids) - set(results.failed_ids)
    count, duplicates = verify_stored(search.address, name, stored_ids)
    return SoakReport(
        duration_s=round(elapsed, 1),
        concurrency=concurrency,
        ingest_workers=ingest_workers,
        calls=dict(results.calls),
        errors=dict(results.errors),
        latency_ms={k: percentiles_ms(v) for k, v in results.latency.items()},
        items_sent=results.sent,
        items_stored=results.stored,
        items_failed=results.failed,
        count_after=count,
        duplicates=duplicates,
        rss_mb=series,
        rss_growth_mb={k: round(rss_growth(v, warmup_s), 1) for k, v in series.items()},
        loadavg_before=load_before,
        loadavg_after=load_after,
        machine=machine_info(),
    )
