"""gRPC <-> Services: message plumbing; failures become status codes once (common/errors.py)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from ris.api import common_pb2, search_pb2, search_pb2_grpc
from ris.common.errors import abort_with, status_of
from ris.search.export import list_items
from ris.search.images import item_image
from ris.search.ingest import Ingestor
from ris.search.operations import Services

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
STORED_COUNT_KEY = "ris-stored-count"  # trailing metadata of a failed Ingest call


def rpc(method: F) -> F:
    """Run one RPC: time it, count it, and map failures to status codes exactly once."""

    @functools.wraps(method)
    def wrapper(self: SearchServicer, request: Any, context: grpc.ServicerContext) -> Any:
        name = method.__name__
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.RpcError) or type(exc).__name__ == "_AbortedError":
                raise  # context.abort's own exception, or a cancelled client stream
            code = status_of(exc)  # a ServiceError's code (the stream limits' too), or INTERNAL
            if code == grpc.StatusCode.UNAVAILABLE:
                log.warning("%s failed: %s", name, exc)
            abort_with(context, exc, name)
        finally:
            metrics = self.services.metrics
            metrics.requests.labels(name, code.name).inc()
            metrics.request_seconds.labels(name).observe(time.perf_counter() - start)

    return wrapper  # type: ignore[return-value]


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services

    @rpc
    def CreateCollection(self, request, context):
        return self.services.create_collection(request)

    @rpc
    def DescribeCollection(self, request, context):
        return self.services.describe_collection(request.name)

    @rpc
    def ListCollections(self, request, context):
        return self.services.list_collections()

    @rpc
    def DropCollection(self, request, context):
        return search_pb2.DropCollectionResponse(
            dropped=self.services.store.drop_collection(request.name)
        )

    @rpc
    def Ingest(self, request_iterator: Iterator[search_pb2.IngestRequest], context):
        s = self.services
        ingestor = Ingestor(s.store, s.embedder, s.config, s.augmenter, s.metrics)
        try:
            summary = ingestor.run(request_iterator)
        except BaseException:
            # The call fails, but what was stored stays stored: say how much (search_service/
            # ingest.py; re-sending the call is safe, upserts by id).
            stored = str(ingestor.summary.stored)
            context.set_trailing_metadata(((STORED_COUNT_KEY, stored),))
            raise
        return search_pb2.IngestResponse(
            received=summary.received,
            stored=summary.stored,
            failed=len(summary.failures),
            failures=[
                search_pb2.ItemFailure(
                    id=f.id,
                    position=f.position,
                    error=common_pb2.ItemError(code=f.code, message=f.message),
                )
                for f in summary.failures
            ],
            embed_seconds=summary.embed_seconds,
            milvus_seconds=summary.milvus_seconds,
        )

    @rpc
    def Search(self, request, context):
        return self.services.search(request)

    @rpc
    def Get(self, request, context):
        return self.services.get(request)

    @rpc
    def Delete(self, request, context):
        return self.services.delete(request)

    @rpc
    def Count(self, request, context):
        return self.services.count(request)

    @rpc
    def GetServiceInfo(self, request, context):
        return self.services.service_info(request)

    @rpc
    def ListItems(self, request, context):
        return list_items(self.services.store, request)

    @rpc
    def GetItemImage(self, request, context):
        return item_image(self.services.store, self.services.config, request)
