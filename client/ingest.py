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
from dataclasses import dataclass

import grpc

from ris.api import search_pb2
from ris.client.limits import RESOURCE_EXHAUSTED, Limits
from ris.client.types import IngestFailure, IngestItem, IngestSummary

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


def to_item(item: IngestItem, transform: Callable[[bytes], bytes] | None = None) -> search_pb2.Item:
    """Protobuf item; reads the file when the item is a local path (OSError when it cannot).
    ``transform`` (e.g. client/shrink.py) rewrites the image bytes on the way."""
    message = search_pb2.Item(id=item.id, label=item.label, metadata=dict(item.metadata))
    if item.path is not None:
        data = item.path.read_bytes()
        message.image = transform(data) if transform else data
        message.display_uri = item.display_uri or str(item.path.resolve())
    elif item.data is not None:
        message.image = transform(item.data) if transform else item.data
        if item.display_uri:
            message.display_uri = item.display_uri
    else:
        message.uri = item.server_uri or ""
    return message


class CallStream:
    """The request messages of one call attempt, built one chunk at a time.

    `next_request()` reads the files of the next chunk; files that cannot be read become local
    failures. `consumed` counts items handled so far (sent or failed), for progress bars.
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
        request = search_pb2.IngestRequest(items=items)
        if self._first:
            request.collection = self.collection
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
            code = grpc.StatusCode.NOT_FOUND.value[0]
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

    def record(self, response: search_pb2.IngestResponse, summary: IngestSummary) -> None:
        """Add a successful call's outcome to the running summary, positions made global."""
        summary.received += int(response.received) + len(self.local_failures)
        summary.stored += int(response.stored)
        summary.failed += int(response.failed) + len(self.local_failures)
        summary.embed_seconds += response.embed_seconds
        summary.milvus_seconds += response.milvus_seconds
        for failure in response.failures:
            local = int(failure.position)
            known = 0 <= local < len(self.sent_positions)
            position = self.sent_positions[local] if known else -1
            summary.failures.append(
                IngestFailure(failure.id, position, failure.error.code, failure.error.message)
            )
        summary.failures.extend(self.local_failures)

    def record_local_only(self, summary: IngestSummary) -> None:
        """Account for a call whose items all failed locally, so nothing was sent."""
        summary.received += len(self.local_failures)
        summary.failed += len(self.local_failures)
        summary.failures.extend(self.local_failures)
