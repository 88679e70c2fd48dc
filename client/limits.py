"""The service's message limits as the client applies them, and Search calls cut to fit.

The client asks the service once (GetServiceInfo) and keeps the smaller of each of its own and
the service's limits, so it never sends a message the service would refuse: an ingest item or an
image query larger than ``max_item_bytes`` fails alone, locally, with RESOURCE_EXHAUSTED naming
the limit, and a Search with more queries (or bytes) than one call allows becomes several calls.
A service too old to answer GetServiceInfo leaves the client's own limits in force.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from ris.api import search_pb2
from ris.client.shrink import Geometry
from ris.client.types import ItemError, QueryResult
from ris.common.status import status_int

DEFAULT_MAX_QUERIES = 256  # the service's own default (search_service/operations.py)
# Framing of a request message around its items (collection name, tags, lengths), generously.
MESSAGE_OVERHEAD = 4096
RESOURCE_EXHAUSTED = status_int(grpc.StatusCode.RESOURCE_EXHAUSTED)


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int  # one request message
    max_item_bytes: int  # one image, ingest item or query
    max_queries: int  # queries per Search call
    source: str = "the client's max_message_bytes"  # who set max_item_bytes, for messages

    @classmethod
    def local(cls, max_message_bytes: int) -> Limits:
        return cls(max_message_bytes, max_message_bytes - MESSAGE_OVERHEAD, DEFAULT_MAX_QUERIES)

    def with_service(self, service: search_pb2.ServiceLimits) -> Limits:
        """The smaller of ours and the service's (0 there = not reported)."""

        def smaller(ours: int, theirs: int) -> int:
            return min(ours, theirs) if theirs > 0 else ours

        item = smaller(self.max_item_bytes, int(service.max_item_bytes))
        return Limits(
            smaller(self.max_message_bytes, int(service.max_message_bytes)),
            item,
            smaller(self.max_queries, int(service.max_queries)),
            self.source if item == self.max_item_bytes else "the service's limit per image",
        )

    def too_big(self, what: str, size: int) -> str | None:
        """Why an image of ``size`` bytes cannot be sent, or None when it can."""
        if size <= self.max_item_bytes:
            return None
        return f"{what} is {size} bytes, over {self.source} of {self.max_item_bytes} bytes"

    @property
    def chunk_bytes(self) -> int:
        """The most item bytes one message may carry."""
        return self.max_message_bytes - MESSAGE_OVERHEAD


@dataclass(frozen=True)
class ServiceInfo:
    """What GetServiceInfo says: the limits (already merged with the client's own) and the model
    a collection is embedded with."""

    limits: Limits
    model_name: str
    model_version: str
    geometry: Geometry | None  # the served preprocessing; None when the server does not say


def service_info(response: search_pb2.ServiceInfo, max_message_bytes: int) -> ServiceInfo:
    return ServiceInfo(
        Limits.local(max_message_bytes).with_service(response.limits),
        response.model.name,
        response.model.version,
        Geometry.from_model(response.model),
    )


def limits_from(
    response: search_pb2.ServiceInfo | None, error: grpc.RpcError | None, max_message_bytes: int
) -> tuple[Limits, bool]:
    """(limits to use, whether to keep them) after one GetServiceInfo attempt. Kept: a full
    answer, or UNIMPLEMENTED (an older service: our own limits for good). Not kept: no answer or
    one without the model (the embedder was unreachable): asked again next time."""
    local = Limits.local(max_message_bytes)
    if response is None:
        code = getattr(error, "code", None)
        return local, callable(code) and code() == grpc.StatusCode.UNIMPLEMENTED
    return local.with_service(response.limits), response.HasField("model")


def search_calls(
    queries: Sequence[search_pb2.Query], limits: Limits
) -> tuple[list[list[int]], dict[int, str]]:
    """Query positions grouped into calls (count and bytes within limits), and the positions
    too large for any call with the reason."""
    calls: list[list[int]] = []
    oversize: dict[int, str] = {}
    current: list[int] = []
    size = 0
    for position, query in enumerate(queries):
        query_bytes = query.ByteSize()
        if query.WhichOneof("kind") == "image":
            reason = limits.too_big(f"query {position}", len(query.image))
            if reason is not None:
                oversize[position] = reason
                continue
        cost = query_bytes + 8  # the tag and length of this repeated field
        if current and (len(current) >= limits.max_queries or size + cost > limits.chunk_bytes):
            calls.append(current)
            current, size = [], 0
        current.append(position)
        size += cost
    if current:
        calls.append(current)
    return calls, oversize


def oversize_result(reason: str) -> QueryResult:
    """The answer to a query too large for any call, given without sending it."""
    return QueryResult(hits=[], error=ItemError(RESOURCE_EXHAUSTED, reason))
