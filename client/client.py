"""RisClient: the blocking high-level client of the search service.

from ris.client import RisClient
with RisClient(address="127.0.0.1:50052") as ris:
    ris.create_collection("photos", exist_ok=True)
    ris.ingest_folder("photos", "path/to/images", show_progress=True)
    for hit in ris.search("photos", "query.jpg", top_k=5).hits:
        print(hit.score, hit.id, hit.label)

Each method runs its operation (client/operations.py, shared with AsyncRisClient), doing the
calls it asks for on a blocking channel.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from ris.api import search_pb2_grpc
from ris.client import operations
from ris.client.channel import open_channel
from ris.client.config import ClientConfig
from ris.client.errors import RisError, Unavailable, from_rpc_error
from ris.client.ingest import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_ITEMS_PER_CALL,
    DEFAULT_MAX_CHUNK_BYTES,
    CallAttempts,
)
from ris.client.limits import Limits, ServiceInfo
from ris.client.retry import call_with_retry, log_retry
from ris.client.sources import Source
from ris.client.types import (
    CollectionInfo,
    IngestItem,
    IngestSummary,
    ItemPage,
    QueryLike,
    QueryResult,
    StoredItem,
)

T = TypeVar("T")


class RisClient:
    """Typed, retrying access to every SearchService call. Thread-safe; close() when done."""

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        channel: grpc.Channel | None = None,
        **overrides: Any,
    ) -> None:
        """`config` or keyword overrides of ClientConfig.from_env() (address=, token=, ...).

        `channel`: call over this one (e.g. intercepted by a benchmark) instead of opening one
        from the config; it stays the caller's to close."""
        self.config = config or ClientConfig.from_env(**overrides)
        self._session = operations.Session(self.config)
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else open_channel(self.config)
        self._stub = search_pb2_grpc.SearchServiceStub(self._channel)
        self._metadata = self.config.metadata()

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def with_authorization(self, authorization: str) -> RisClient:
        """A view of this client whose calls send this ``authorization`` metadata (a caller's
        ``Bearer <token>``, which a gateway passes on) instead of the configured token; "" sends
        none. It shares this client's channel and limits: closing the view closes nothing."""
        view = copy.copy(self)
        view._metadata = (("authorization", authorization),) if authorization else ()
        view._owns_channel = False
        return view

    def call(self, method: str, request: Message) -> Message:
        """One SearchService call in the API's own messages, e.g. ``call("ListCollections",
        ListCollectionsRequest())``: the response message, sent with this client's channel,
        token, timeout and retries; a failure raised as a RisError."""
        return self._drive(operations.message_call(method, request))

    def __enter__(self) -> RisClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the channel connects (raises Unavailable after timeout seconds)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise Unavailable(f"{self.config.address} not reachable within {timeout}s") from None

    # -- collections -------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        *,
        metric: str = "",
        index_type: str = "",
        index_params: Mapping[str, str] | None = None,
        description: str = "",
        exist_ok: bool = False,
        model: str = "",
        augmentation_top_n: int | None = None,
        augmentation_alpha: float = 0.0,
    ) -> CollectionInfo:
        """``augmentation_top_n``: None = the server's default (database-side augmentation on,
        top 3, for COSINE/IP), 0 = store raw embeddings, n = blend each item with its top n."""
        return self._drive(
            operations.create_collection(
                name,
                metric=metric,
                index_type=index_type,
                index_params=index_params,
                description=description,
                exist_ok=exist_ok,
                model=model,
                augmentation_top_n=augmentation_top_n,
                augmentation_alpha=augmentation_alpha,
            )
        )

    def describe_collection(self, name: str) -> CollectionInfo:
        return self._drive(operations.describe_collection(name))

    def list_collections(self) -> list[CollectionInfo]:
        return self._drive(operations.list_collections())

    def drop_collection(self, name: str) -> bool:
        return self._drive(operations.drop_collection(name))

    def service_info(self, collection: str = "") -> ServiceInfo:
        """The service's limits (merged with this client's) and the model, with its geometry,
        that ``collection`` is embedded with (empty = the embedder's default model)."""
        return self._drive(operations.service_info(self._session, collection))

    def limits(self) -> Limits:
        """The limits messages are cut to: asked once (one attempt, no retries: the call that
        follows has its own), then kept. This client's own when the service does not say."""
        return self._drive(operations.limits(self._session))

    # -- ingest ------------------------------------------------------------------------------

    def ingest(
        self,
        collection: str,
        items: Iterable[IngestItem],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        items_per_call: int = DEFAULT_ITEMS_PER_CALL,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
        show_progress: bool = False,
        total: int | None = None,
        shrink: bool = False,
    ) -> IngestSummary:
        """Stream items in chunks; bad items are reported in the summary, never raised.

        ``shrink``: send each large photo as a small JPEG that still holds what the served model
        needs (client/shrink.py): for slow links; costs client CPU, off by default."""
        return self._drive(
            operations.ingest(
                self._session,
                collection,
                items,
                chunk_size=chunk_size,
                items_per_call=items_per_call,
                max_chunk_bytes=max_chunk_bytes,
                show_progress=show_progress,
                total=total,
                shrink=shrink,
            )
        )

    def ingest_source(self, collection: str, source: Source, **kwargs: Any) -> IngestSummary:
        """Ingest scanned items; the source's rejected rows land in summary.skipped."""
        return self._drive(operations.ingest_source(self._session, collection, source, **kwargs))

    def ingest_folder(
        self, collection: str, folder: str | Path, *, recursive: bool = True, **kwargs: Any
    ) -> IngestSummary:
        """Every image under folder; id = relative path, label = parent folder name."""
        op = operations.ingest_folder(self._session, collection, folder, recursive, **kwargs)
        return self._drive(op)

    def ingest_glob(self, collection: str, pattern: str, **kwargs: Any) -> IngestSummary:
        return self._drive(operations.ingest_glob(self._session, collection, pattern, **kwargs))

    def ingest_csv(self, collection: str, csv_path: str | Path, **kwargs: Any) -> IngestSummary:
        """Rows of id,path,label with paths relative to the CSV (the seed's format)."""
        return self._drive(operations.ingest_csv(self._session, collection, csv_path, **kwargs))

    # -- search and items --------------------------------------------------------------------

    def search(
        self,
        collection: str,
        query: QueryLike,
        *,
        top_k: int = 10,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        ids: Iterable[str] | None = None,
        exclude_self: bool = False,
        min_score: float | None = None,
        expansion: bool | None = None,
        space: str = "",
    ) -> QueryResult:
        """Top-k for one query: an image path, image bytes, a vector, ById(...) or ByText(...).

        Raises QueryFailed when the server could not use the query (e.g. not an image)."""
        return self._drive(
            operations.search(
                self._session,
                collection,
                query,
                top_k=top_k,
                labels=labels,
                metadata=metadata,
                ids=ids,
                exclude_self=exclude_self,
                min_score=min_score,
                expansion=expansion,
                space=space,
            )
        )

    def search_batch(
        self,
        collection: str,
        queries: Sequence[QueryLike],
        *,
        top_k: int = 10,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        ids: Iterable[str] | None = None,
        exclude_self: bool = False,
        min_score: float | None = None,
        expansion: bool | None = None,
        space: str = "",
    ) -> list[QueryResult]:
        """One result per query, in order; a failed query carries .error, the others are fine.
        More queries (or bytes) than one call takes are sent in several calls.

        ``min_score``: keep hits scoring at least this (COSINE: cosine similarity; IP: inner
        product; L2: minus the squared distance); ``expansion=False`` turns query expansion
        off; ``space="raw"`` searches an augmented collection's raw embeddings."""
        return self._drive(
            operations.search_batch(
                self._session,
                collection,
                queries,
                top_k=top_k,
                labels=labels,
                metadata=metadata,
                ids=ids,
                exclude_self=exclude_self,
                min_score=min_score,
                expansion=expansion,
                space=space,
            )
        )

    def get(
        self,
        collection: str,
        ids: Iterable[str] | None = None,
        *,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        limit: int = 0,
        include_vectors: bool = False,
    ) -> list[StoredItem]:
        return self._drive(
            operations.get(
                collection,
                ids,
                labels=labels,
                metadata=metadata,
                limit=limit,
                include_vectors=include_vectors,
            )
        )

    def delete(
        self,
        collection: str,
        ids: Iterable[str] | None = None,
        *,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        return self._drive(operations.delete(collection, ids, labels=labels, metadata=metadata))

    def count(
        self,
        collection: str,
        *,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        return self._drive(operations.count(collection, labels=labels, metadata=metadata))

    def list_items_page(
        self,
        collection: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        include_vectors: bool = False,
    ) -> ItemPage:
        """One page of the collection in id order (page_size 0 = the server's, 256)."""
        return self._drive(
            operations.list_items_page(
                collection,
                page_size=page_size,
                page_token=page_token,
                labels=labels,
                metadata=metadata,
                include_vectors=include_vectors,
            )
        )

    def iter_items(
        self,
        collection: str,
        *,
        page_size: int = 0,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        include_vectors: bool = False,
    ) -> Iterator[StoredItem]:
        """Every (matching) item, in id order, one page in memory at a time; each page is a
        retried call of its own, so a long listing survives a restart of the service."""
        pages = operations.ItemPages(
            collection,
            page_size=page_size,
            labels=labels,
            metadata=metadata,
            include_vectors=include_vectors,
        )
        while (page := pages.next_page()) is not None:
            yield from self._drive(page)

    # -- driving operations ------------------------------------------------------------------

    def _drive(self, op: operations.Op[T]) -> T:
        return operations.drive(op, self._do)

    def _do(self, step: operations.Step) -> Any:
        """One step: a call (retried, its failure raised as a RisError), a probe, local work."""
        if isinstance(step, operations.Unary):
            call = functools.partial(self._send, step)
            return self._retried(call, step.what, self.config.timeout)
        if isinstance(step, operations.Probe):
            try:
                return self._send(step, step.timeout), None
            except grpc.RpcError as error:
                return None, error
        if isinstance(step, operations.Offload):
            return step.work()
        ingest = functools.partial(self._ingest_attempt, step)
        return self._retried(ingest, step.what, self.config.ingest_timeout)

    def _send(self, step: operations.Unary | operations.Probe, timeout: float | None) -> Any:
        method = getattr(self._stub, step.method)
        return method(step.request, timeout=timeout, metadata=self._metadata)

    def _ingest_attempt(self, call: CallAttempts, timeout: float | None) -> Any:
        with call.attempt() as stream:
            first = stream.next_request()
            if first is None:
                return None
            return self._stub.Ingest(call.follow(first), timeout=timeout, metadata=self._metadata)

    def _retried(self, fn: Callable[[float | None], T], what: str, budget_s: float) -> T:
        """``fn(timeout)`` retried (client/retry.py) within ``budget_s`` for all attempts."""
        try:
            return call_with_retry(fn, self.config.retry, budget_s=budget_s, on_retry=log_retry)
        except grpc.RpcError as error:
            raise from_rpc_error(error, what) from error


__all__ = ["RisClient", "RisError"]
