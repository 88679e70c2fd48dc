"""How an ingest is cut up and accounted for; shared by the sync and asyncio clients.

Items go out in calls of at most `items_per_call` items, each a client stream of messages of at
most `chunk_size` items and about `max_chunk_bytes` bytes (a larger item goes alone). An item
larger than the service accepts (`Limits.max_item_bytes`, client/limits.py) fails alone, before its
file is read, with RESOURCE_EXHAUSTED. A call that fails with UNAVAILABLE is sent again whole
(ingest upserts by id, so that is safe), re-reading its files: memory stays bounded by one chunk,
not by the source.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import grpc
from tqdm import tqdm

from ris.api import search_pb2
from ris.client.convert import ingest_request, to_item
from ris.client.limits import RESOURCE_EXHAUSTED, Limits
from ris.client.types import IngestFailure, IngestItem, IngestSummary
from ris.common.status import status_int

DEFAULT_CHUNK_SIZE = 32
DEFAULT_ITEMS_PER_CALL = 512
DEFAULT_MAX_CHUNK_BYTES = 3 * 1024 * 1024  # under gRPC's default 4 MiB receive limit


@dataclass(frozen=True)
class IngestCall:
    offset: int  # position of items[0] in everything passed to ingest
    items: list[IngestItem]


def plan_calls(items: Iterable[IngestItem], items_per_call: int) -> Iterator[IngestCall]:
    """Lazily group items into calls, keeping their global positions."""
    if items_per_call < 1:
        raise ValueError("items_per_call must be at least 1")
    iterator = iter(items)
    offset = 0
    while batch := list(itertools.islice(iterator, items_per_call)):
        yield IngestCall(offset, batch)
        offset += len(batch)


def image_size(item: IngestItem) -> int | None:
    """Bytes of the item's image without reading it (None: the server reads it)."""
    if item.path is not None:
        return item.path.stat().st_size
    if item.data is not None:
        return len(item.data)
    return None


class CallStream:
    """The request messages of one call attempt, built one chunk at a time.

    `next_request()` reads the files of the next chunk; files that cannot be read become local
    failures. `consumed` counts items handled so far (sent or failed locally); `on_record`, when
    set, is told the running summary once the call's answer is recorded (progress bars).
    """

    def __init__(
        self,
        collection: str,
        call: IngestCall,
        chunk_size: int,
        max_chunk_bytes: int,
        limits: Limits | None = None,
        transform: Callable[[bytes], bytes] | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.collection = collection
        self.call = call
        self.chunk_size = chunk_size
        self.limits = limits or Limits.local(64 * 1024 * 1024)
        self.max_chunk_bytes = min(max_chunk_bytes, self.limits.chunk_bytes)
        self.transform = transform
        self.sent_positions: list[int] = []  # global position of each item sent, in order
        self.local_failures: list[IngestFailure] = []
        self.consumed = 0
        self.on_record: Callable[[IngestSummary], None] | None = None
        self._first = True
        self._carried: search_pb2.Item | None = None

    def next_request(self) -> search_pb2.IngestRequest | None:
        """The next message, or None when the call's items are all handled."""
        items: list[search_pb2.Item] = []
        size = 0
        while self.consumed < len(self.call.items) and len(items) < self.chunk_size:
            item = self.call.items[self.consumed]
            position = self.call.offset + self.consumed
            message = self._carried or self._read(item, position)  # carried: read last time
            self._carried = None
            if message is None:
                self.consumed += 1
                continue
            item_size = message.ByteSize()
            if items and size + item_size > self.max_chunk_bytes:
                self._carried = message
                break
            items.append(message)
            size += item_size
            self.sent_positions.append(position)
            self.consumed += 1
        if not items:
            return None
        request = ingest_request(items, self.collection if self._first else "")
        self._first = False
        return request

    def _read(self, item: IngestItem, position: int) -> search_pb2.Item | None:
        """The item's message, or None when it became a local failure (unreadable, too big)."""
        try:
            # too big to send: fails here, before a file is read (unless it is to be shrunk)
            reason = self._too_big(item, None if self.transform else image_size(item))
            message = None
            if reason is None:
                message = to_item(item, self.transform)
                reason = self._too_big(item, len(message.image) if self.transform else None)
        except OSError as error:
            code = status_int(grpc.StatusCode.NOT_FOUND)
            self.local_failures.append(IngestFailure(item.id, position, code, str(error)))
            return None
        if reason is not None:
            self.local_failures.append(IngestFailure(item.id, position, RESOURCE_EXHAUSTED, reason))
            return None
        return message

    def _too_big(self, item: IngestItem, size: int | None) -> str | None:
        return None if size is None else self.limits.too_big(f"item {item.id!r}", size)

    def requests(self) -> Iterator[search_pb2.IngestRequest]:
        while (request := self.next_request()) is not None:
            yield request

    def record(self, outcome: IngestSummary | None, summary: IngestSummary) -> None:
        """Add the call's outcome (client/convert.py's reading of its answer; None when nothing
        was sent, all its items having failed locally) to the running summary, positions made
        global."""
        outcome = outcome or IngestSummary()
        summary.received += outcome.received + len(self.local_failures)
        summary.stored += outcome.stored
        summary.failed += outcome.failed + len(self.local_failures)
        summary.embed_seconds += outcome.embed_seconds
        summary.milvus_seconds += outcome.milvus_seconds
        summary.failures.extend(
            replace(failure, position=self._global(failure.position))
            for failure in outcome.failures
        )
        summary.failures.extend(self.local_failures)
        if self.on_record is not None:
            self.on_record(summary)

    def _global(self, local: int) -> int:
        """The position in everything passed to ingest of the call's ``local``-th item sent."""
        return self.sent_positions[local] if 0 <= local < len(self.sent_positions) else -1


class CallAttempts:
    """The attempts at one ingest call, each streamed afresh from the call's first item (a retry
    resends the call whole).

    The progress bar counts items the service has answered for (stored or failed), moved when
    the call's answer is recorded; items sent and not yet answered show beside it ("512 sent,
    awaiting the service"), so the bar never runs ahead of what is stored, and a failed attempt
    has nothing to take back."""

    def __init__(self, new_stream: Callable[[], CallStream], bar: tqdm, what: str) -> None:
        self.new_stream = new_stream
        self.bar = bar
        self.what = what  # for error messages
        self.stream = self._fresh_stream()
        self._started = False

    @contextmanager
    def attempt(self) -> Iterator[CallStream]:
        """The stream of a fresh attempt."""
        if self._started:
            self.stream = self._fresh_stream()
        self._started = True
        try:
            yield self.stream
        except grpc.RpcError:
            self.bar.set_postfix_str("call failed, sending again", refresh=False)
            raise
        self.sync()

    def sync(self) -> None:
        """Show the items sent in this attempt and not yet answered for."""
        self.bar.set_postfix_str(f"{self.stream.consumed} sent, awaiting the service")

    def follow(self, first: search_pb2.IngestRequest) -> Iterator[search_pb2.IngestRequest]:
        """``first`` and the rest of the stream's messages, the bar told after each is sent."""
        for request in itertools.chain([first], self.stream.requests()):
            yield request
            self.sync()

    def _fresh_stream(self) -> CallStream:
        stream = self.new_stream()
        stream.on_record = self._answered
        return stream

    def _answered(self, summary: IngestSummary) -> None:
        """The call's answer is recorded: every item of it is now stored or failed."""
        self.bar.set_postfix_str(f"{summary.stored} stored, {summary.failed} failed", refresh=False)
        self.bar.update(len(self.stream.call.items))
