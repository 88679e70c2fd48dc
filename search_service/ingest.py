"""Ingest: a stream of items -> batches -> embedder (EmbedStream) -> Milvus upserts.

Every received item ends up either stored or in the failure list with its 0-based position in
the stream; nothing is dropped silently. A bad item (undecodable image, bad id, path outside the
roots) fails alone; its batch neighbours are stored. The whole call fails only when the
collection is unusable (unknown, model mismatch) or a dependency is down before anything starts.
When the embedder or Milvus goes away in the middle of the stream (UNAVAILABLE, or the embedder's
RESOURCE_EXHAUSTED), the call still returns its summary: what was stored is counted, and every
other item (in flight, or still to come: the rest of the stream is read, not processed) is a
failure with that code, so the caller re-sends exactly the failed ids (upserts: no duplicates).
At most ``WINDOW`` batches are in the embedder at once, so memory stays bounded however long the
client's stream is. Items are searchable when the call returns: upserts are acknowledged before
it does and reads use Strong consistency. Milvus Lite gets a final flush (writes its files); a
Milvus server does not: acknowledged writes are already durable in its log, and a flush per call
would seal tiny segments and cost seconds. For an augmented collection embedded items are held
and written (raw twin, then the collection, blended with their neighbours) every 1,024 items and
at the end of the call, before it returns (augmentation.py); an item counts as stored once written.
A cancelled call, or one past its deadline, stops at the next embedder answer (no more upserts;
the embedder stream is cancelled): what was stored before stays stored (re-sending the call is
safe: upserts by id) and its count goes back in the trailing metadata ``ris-stored-count``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import grpc

from ris.api import search_pb2
from ris.common import deadlines
from ris.common.errors import (
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from ris.common.status import status_int
from ris.search.augmentation import BLEND_CHUNK, Augmenter
from ris.search.batching import EmbedLimits, Grouper
from ris.search.config import SearchConfig
from ris.search.embedder_client import EmbedBatch, EmbedderClient, ModelRef, check_model
from ris.search.metrics import SearchMetrics
from ris.search.paths import SourceError, read_image_file
from ris.search.store import MilvusStore
from ris.search.store_schema import CollectionMeta, Record, check_record_fields

log = logging.getLogger(__name__)
WINDOW = 4  # embed batches in flight per Ingest call


@dataclass
class Failure:
    id: str
    position: int
    code: int
    message: str


@dataclass
class IngestSummary:
    received: int = 0
    stored: int = 0
    failures: list[Failure] = field(default_factory=list)
    embed_seconds: float = 0.0
    milvus_seconds: float = 0.0


@dataclass
class _Pending:
    position: int
    item: search_pb2.Item
    data: bytes
    uri: str


class Ingestor:
    """Runs one Ingest call; create one per call."""

    def __init__(
        self,
        store: MilvusStore,
        embedder: EmbedderClient,
        config: SearchConfig,
        augmenter: Augmenter,
        metrics: SearchMetrics | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config
        self.augmenter = augmenter  # shared: it holds the per-collection write locks
        self.metrics = metrics
        self.summary = IngestSummary()
        self._lock = threading.Lock()
        self._broken: ServiceError | None = None  # a dependency failed mid-stream
        # Augmented collections: embedded items waiting to be blended and written (then they
        # count as stored).
        self._staged: dict[str, Record] = {}
        self._staged_items: list[_Pending] = []

    def _fail(self, item_id: str, position: int, code: int, message: str) -> None:
        with self._lock:
            self.summary.failures.append(Failure(item_id, position, code, message))

    def _oversize(self, pending: _Pending, reason: str) -> None:
        """An image no embedder call can carry fails alone; its neighbours go on."""
        code = status_int(grpc.StatusCode.RESOURCE_EXHAUSTED)
        self._fail(pending.item.id, pending.position, code, f"item {pending.item.id!r}: {reason}")

    # -- input side (runs on gRPC's sending thread) ----------------------------------------

    def _items(self, requests: Iterable[search_pb2.IngestRequest], name: str) -> Iterator[_Pending]:
        """Valid items with their image bytes; invalid ones go straight to the failure list."""
        position = 0
        for request in requests:
            if request.collection and request.collection != name:
                raise InvalidArgument(
                    f"one Ingest call fills one collection: got {request.collection!r} "
                    f"after {name!r}"
                )
            for item in request.items:
                pos, position = position, position + 1
                with self._lock:
                    self.summary.received += 1
                try:
                    check_record_fields(item.id, item.label, item.display_uri, dict(item.metadata))
                    source = item.WhichOneof("source")
                    if source == "image":
                        if not item.image:
                            raise InvalidArgument("empty image")
                        yield _Pending(pos, item, item.image, item.display_uri)
                    elif source == "uri":
                        check_record_fields(item.id, item.label, item.uri, {})
                        data = b""  # draining after a dependency failed: no need to read it
                        if self._broken is None:
                            data = read_image_file(
                                item.uri, self.config.allowed_roots, self.config.max_file_bytes
                            )
                        yield _Pending(pos, item, data, item.uri)
                    else:
                        raise InvalidArgument("item has neither image bytes nor a uri")
                except InvalidArgument as exc:
                    self._fail(item.id, pos, status_int(grpc.StatusCode.INVALID_ARGUMENT), str(exc))
                except SourceError as exc:
                    self._fail(item.id, pos, status_int(exc.code), str(exc))

    # -- the call -----------------------------------------------------------------------------

    def run(self, requests: Iterator[search_pb2.IngestRequest]) -> IngestSummary:
        first = next(requests, None)
        if first is None:
            return self.summary
        if not first.collection:
            raise InvalidArgument("the first IngestRequest must name the collection")
        meta = self.store.describe(first.collection)
        self.store.ensure_loaded(meta.name)
        model = self.embedder.model_info(meta.model_name)
        check_model(meta.name, meta.model_name, meta.model_version, meta.dim, model)
        limits = EmbedLimits.for_model(model, self.config, self.config.ingest_batch_size)

        pending: deque[list[_Pending]] = deque()
        window = threading.Semaphore(WINDOW)
        done = threading.Event()
        input_error: list[BaseException] = []
        items = Grouper(
            self._items(itertools.chain([first], requests), meta.name),
            lambda p: len(p.data),
            limits,
            self._oversize,
        )
        items_lock = threading.Lock()  # the sending thread and the drain below share `items`

        def batches() -> Iterator[list[bytes]]:
            try:
                while True:
                    while not window.acquire(timeout=0.2):
                        if done.is_set():
                            return
                    with items_lock:  # taking a batch and recording it as pending: one step
                        if done.is_set():
                            window.release()
                            return
                        batch = items.take()  # by count and by bytes (batching.py)
                        if not batch:
                            return
                        pending.append(batch)
                    yield [p.data for p in batch]
            except Exception as exc:  # surfaced on the calling thread below
                input_error.append(exc)

        try:
            self._embed_and_store(meta, model, batches(), pending, window)
        finally:
            done.set()
        if input_error:
            raise input_error[0]
        broken = self._broken
        code = status_int(broken.code if broken else grpc.StatusCode.UNAVAILABLE)
        reason = f"not stored: {broken}" if broken else "not embedded"
        with items_lock:
            left = [p for batch in pending for p in batch]  # answered by nobody
            if broken is not None:
                log.warning("ingest into %s: %s; reporting the rest as failed", meta.name, broken)
                left.extend(items.rest())  # the rest of the client's stream: received and reported
        if self._staged:
            start = time.perf_counter()
            try:
                self._blend(meta)
            except ServiceError as exc:  # the stream is over: the staged items fail, not the call
                for p in self._take_staged():
                    self._fail(p.item.id, p.position, status_int(exc.code), f"not stored: {exc}")
            finally:
                self.summary.milvus_seconds += time.perf_counter() - start
        for p in left:
            self._fail(p.item.id, p.position, code, reason)
        if self.summary.stored and self.config.is_milvus_lite:
            start = time.perf_counter()
            self.store.flush(meta.name)  # (a raw twin was flushed when its rows were written)
            self.summary.milvus_seconds += time.perf_counter() - start
        self.summary.failures.sort(key=lambda f: f.position)
        if self.metrics:
            self.metrics.ingest_items.labels("stored").inc(self.summary.stored)
            self.metrics.ingest_items.labels("failed").inc(len(self.summary.failures))
            self.metrics.stage_seconds.labels("ingest", "embed").observe(self.summary.embed_seconds)
            self.metrics.stage_seconds.labels("ingest", "milvus").observe(
                self.summary.milvus_seconds
            )
        return self.summary

    def _stage(
        self, meta: CollectionMeta, records: dict[str, Record], items: list[_Pending]
    ) -> None:
        """Augmented collections: hold embedded items, blend and write them every BLEND_CHUNK
        items and at the end of the call (memory stays bounded; one round of Milvus calls per
        chunk instead of per batch)."""
        for item_id, record in records.items():
            self._staged.pop(item_id, None)  # re-sent in this call: the last one wins
            self._staged[item_id] = record
        self._staged_items.extend(items)
        if len(self._staged) >= BLEND_CHUNK:
            self._blend(meta)

    def _blend(self, meta: CollectionMeta) -> None:
        """Write the staged items, blended, with the neighbours they change; they count as stored
        once written. On a Milvus failure the caller reports them (a raw twin row written before
        the failure is a harmless leftover that a re-send overwrites)."""
        start = time.perf_counter()
        try:
            self.augmenter.blend(meta, list(self._staged.values()))
            self.summary.stored += len(self._take_staged())
        finally:
            if self.metrics:
                elapsed = time.perf_counter() - start
                self.metrics.stage_seconds.labels("ingest", "augment").observe(elapsed)

    def _take_staged(self) -> list[_Pending]:
        """The staged items, emptying the stage."""
        taken = self._staged_items
        self._staged, self._staged_items = {}, []
        return taken

    def _embed_and_store(
        self,
        meta: CollectionMeta,
        model: ModelRef,
        batches: Iterator[list[bytes]],
        pending: deque[list[_Pending]],
        window: threading.Semaphore,
    ) -> None:
        # the caller's deadline ends the embedder stream too (none: the stream runs until done)
        stream = self.embedder.embed_stream(
            batches, model=meta.model_name, timeout_s=deadlines.remaining()
        )
        try:
            self._store_answers(meta, model, stream, pending, window)
        except (Unavailable, ResourceExhausted) as exc:
            self._broken = exc  # run() reports the in-flight and remaining items
        finally:
            close = getattr(stream, "close", None)  # a generator: closing cancels the call
            if close is not None:
                close()

    def _store_answers(
        self,
        meta: CollectionMeta,
        model: ModelRef,
        stream: Iterator[EmbedBatch],
        pending: deque[list[_Pending]],
        window: threading.Semaphore,
    ) -> None:
        while True:
            start = time.perf_counter()
            answer = next(stream, None)
            self.summary.embed_seconds += time.perf_counter() - start
            if answer is None:
                return
            if deadlines.call_over():  # cancelled or past its deadline: store nothing more
                raise Cancelled(f"ingest stopped after {self.summary.stored} stored items")
            batch = pending.popleft()
            window.release()
            if answer.model.dim != meta.dim or (
                meta.model_name
                and (answer.model.name, answer.model.version) != (model.name, model.version)
            ):
                raise FailedPrecondition(
                    f"embedder switched to model {answer.model.name} {answer.model.version} "
                    f"({answer.model.dim}-d) during the call"
                )
            records: dict[str, Record] = {}  # last one wins for ids repeated in a batch
            stored_items: list[_Pending] = []
            for p, result in zip(batch, answer.results, strict=True):
                if result.vector is None:
                    self._fail(p.item.id, p.position, result.error_code, result.error_message)
                    continue
                records.pop(p.item.id, None)
                records[p.item.id] = Record(
                    p.item.id, result.vector, p.item.label, p.uri, dict(p.item.metadata)
                )
                stored_items.append(p)
            if not records:
                continue
            start = time.perf_counter()
            try:
                if meta.augmented:
                    self._stage(meta, records, stored_items)
                    continue  # counted as stored when blended
                self.store.upsert(meta, list(records.values()))
            except (Unavailable, ServiceError) as exc:
                # An augmented batch joined the stage before anything could fail, so the stage
                # holds it and every other item not yet written.
                lost = self._take_staged() if meta.augmented else stored_items
                if isinstance(exc, Unavailable):
                    pending.appendleft(lost)  # reported failed by run(), with the rest
                    raise
                for p in lost:
                    self._fail(p.item.id, p.position, status_int(exc.code), str(exc))
                continue
            finally:
                self.summary.milvus_seconds += time.perf_counter() - start
            self.summary.stored += len(stored_items)
