"""gRPC <-> Services: message plumbing and the one place errors become status codes."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from ris.api import common_pb2, search_pb2, search_pb2_grpc
from ris.common.admission import CallEnded, StreamIdle
from ris.search.errors import SearchError
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
        except SearchError as exc:
            code = exc.code
            if code == grpc.StatusCode.INTERNAL:  # a dependency's message stays in the log
                context.abort(code, _logged_internal(name, exc))
            if code == grpc.StatusCode.UNAVAILABLE:
                log.warning("%s failed: %s", name, exc)
            context.abort(code, str(exc))
        except (StreamIdle, CallEnded) as exc:  # the client stopped (common/admission.py)
            code = exc.code
            context.abort(code, str(exc))
        except Exception as exc:
            if isinstance(exc, grpc.RpcError) or type(exc).__name__ == "_AbortedError":
                raise  # context.abort's own exception, or a cancelled client stream
            code = grpc.StatusCode.INTERNAL
            context.abort(code, _logged_internal(name, exc))
        finally:
            metrics = self.services.metrics
            metrics.requests.labels(name, code.name).inc()
            metrics.request_seconds.labels(name).observe(time.perf_counter() - start)

    return wrapper  # type: ignore[return-value]


def _logged_internal(method: str, exc: BaseException) -> str:
    """Log an internal failure in full under a new request id; the message for the caller,
    which carries the id and nothing of the failure (it may quote Milvus or a stack)."""
    request_id = uuid.uuid4().hex[:12]
    log.error("%s failed [request %s]: %s", method, request_id, exc, exc_info=exc)
    return f"internal error (request id {request_id}; details in the service log)"


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
