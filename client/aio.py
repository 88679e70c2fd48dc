"""AsyncRisClient: the asyncio twin of RisClient, same methods as coroutines, over grpc.aio.

async with AsyncRisClient(address="127.0.0.1:50052") as ris:
    result = await ris.search("photos", "query.jpg", top_k=5)

Each method runs the same operation as RisClient's (client/operations.py), awaiting the calls it
asks for and running its local work (reading files) in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import copy
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from ris.api import search_pb2, search_pb2_grpc
from ris.client import operations
from ris.client.channel import open_aio_channel
from ris.client.config import ClientConfig
from ris.client.errors import Unavailable, from_rpc_error
from ris.client.ingest import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_ITEMS_PER_CALL,
    DEFAULT_MAX_CHUNK_BYTES,
    CallAttempts,
)
from ris.client.limits import Limits, ServiceInfo
from ris.client.retry import acall_with_retry, log_retry
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


class AsyncRisClient:
    """Create inside a running event loop; `await close()` (or `async with`) when done."""

    def __init__(self, config: ClientConfig | None = None, **overrides: Any) -> None:
        self.config = config or ClientConfig.from_env(**overrides)
        self._session = operations.Session(self.config)
        self._channel = open_aio_channel(self.config)
        self._stub = search_pb2_grpc.SearchServiceStub(self._channel)
        self._metadata = self.config.metadata()
        self._owns_channel = True

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    def with_authorization(self, authorization: str) -> AsyncRisClient:
        """Like RisClient.with_authorization."""
        view = copy.copy(self)
        view._metadata = (("authorization", authorization),) if authorization else ()
        view._owns_channel = False
        return view

    async def call(self, method: str, request: Message) -> Message:
        """Like RisClient.call."""
        return await self._drive(operations.message_call(method, request))

    async def __aenter__(self) -> AsyncRisClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except asyncio.TimeoutError:
            raise Unavailable(f"{self.config.address} not reachable within {timeout}s") from None

    # -- collections -------------------------------------------------------------------------

    async def create_collection(
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
        """Like RisClient.create_collection."""
        return await self._drive(
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

    async def describe_collection(self, name: str) -> CollectionInfo:
        return await self._drive(operations.describe_collection(name))

    async def list_collections(self) -> list[CollectionInfo]:
        return await self._drive(operations.list_collections())

    async def drop_collection(self, name: str) -> bool:
        return await self._drive(operations.drop_collection(name))

    async def service_info(self, collection: str = "") -> ServiceInfo:
        """Like RisClient.service_info."""
        return await self._drive(operations.service_info(self._session, collection))

    async def limits(self) -> Limits:
        """Like RisClient.limits."""
        return await self._drive(operations.limits(self._session))

    # -- ingest ------------------------------------------------------------------------------

    async def ingest(
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
        """Like RisClient.ingest; files are read in a worker thread, off the event loop."""
        return await self._drive(
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

    async def ingest_source(self, collection: str, source: Source, **kwargs: Any) -> IngestSummary:
        return await self._drive(
            operations.ingest_source(self._session, collection, source, **kwargs)
        )

    async def ingest_folder(
        self, collection: str, folder: str | Path, *, recursive: bool = True, **kwargs: Any
    ) -> IngestSummary:
        op = operations.ingest_folder(self._session, collection, folder, recursive, **kwargs)
        return await self._drive(op)

    async def ingest_glob(self, collection: str, pattern: str, **kwargs: Any) -> IngestSummary:
        return await self._drive(
            operations.ingest_glob(self._session, collection, pattern, **kwargs)
        )

    async def ingest_csv(
        self, collection: str, csv_path: str | Path, **kwargs: Any
    ) -> IngestSummary:
        return await self._drive(
            operations.ingest_csv(self._session, collection, csv_path, **kwargs)
        )

    # -- search and items --------------------------------------------------------------------

    async def search(
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
        return await self._drive(
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

    async def search_batch(
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
        """Like RisClient.search_batch."""
        return await self._drive(
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

    async def get(
        self,
        collection: str,
        ids: Iterable[str] | None = None,
        *,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        limit: int = 0,
        include_vectors: bool = False,
    ) -> list[StoredItem]:
        return await self._drive(
            operations.get(
                collection,
                ids,
                labels=labels,
                metadata=metadata,
                limit=limit,
                include_vectors=include_vectors,
            )
        )

    async def delete(
        self,
        collection: str,
        ids: Iterable[str] | None = None,
        *,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        return await self._drive(
            operations.delete(collection, ids, labels=labels, metadata=metadata)
        )

    async def count(
        self,
        collection: str,
        *,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        return await self._drive(operations.count(collection, labels=labels, metadata=metadata))

    async def list_items_page(
        self,
        collection: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        include_vectors: bool = False,
    ) -> ItemPage:
        return await self._drive(
            operations.list_items_page(
                collection,
                page_size=page_size,
                page_token=page_token,
                labels=labels,
                metadata=metadata,
                include_vectors=include_vectors,
            )
        )

    async def iter_items(
        self,
        collection: str,
        *,
        page_size: int = 0,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        include_vectors: bool = False,
    ) -> AsyncIterator[StoredItem]:
        """Like RisClient.iter_items: ``async for item in ris.iter_items(name)``."""
        pages = operations.ItemPages(
            collection,
            page_size=page_size,
            labels=labels,
            metadata=metadata,
            include_vectors=include_vectors,
        )
        while (page := pages.next_page()) is not None:
            for item in await self._drive(page):
                yield item

    # -- driving operations ------------------------------------------------------------------

    async def _drive(self, op: operations.Op[T]) -> T:
        """Run an operation, awaiting each step it asks for in turn."""
        run = operations.Run(op)
        while run.step is not None:
            try:
                answer = await self._do(run.step)
            except Exception as error:  # raised inside the operation, where it asked
                run.throw(error)
            else:
                run.send(answer)
        return run.result

    async def _do(self, step: operations.Step) -> Any:
        """One step: a call (retried, its failure raised as a RisError), a probe, local work
        (in a worker thread)."""
        if isinstance(step, operations.Unary):
            call = functools.partial(self._send, step)
            return await self._retried(call, step.what, self.config.timeout)
        if isinstance(step, operations.Probe):
            try:
                return await self._send(step, step.timeout), None
            except grpc.RpcError as error:
                return None, error
        if isinstance(step, operations.Offload):
            return await asyncio.to_thread(step.work)
        ingest = functools.partial(self._ingest_attempt, step)
        return await self._retried(ingest, step.what, self.config.ingest_timeout)

    async def _send(self, step: operations.Unary | operations.Probe, timeout: float | None) -> Any:
        method = getattr(self._stub, step.method)
        return await method(step.request, timeout=timeout, metadata=self._metadata)

    async def _ingest_attempt(self, call: CallAttempts, timeout: float | None) -> Any:
        with call.attempt() as stream:
            first = await asyncio.to_thread(stream.next_request)
            if first is None:
                return None
            return await self._stub.Ingest(
                self._follow(call, first), timeout=timeout, metadata=self._metadata
            )

    @staticmethod
    async def _follow(
        call: CallAttempts, first: search_pb2.IngestRequest
    ) -> AsyncIterator[search_pb2.IngestRequest]:
        """CallAttempts.follow, with each next message read in a worker thread."""
        request: search_pb2.IngestRequest | None = first
        while request is not None:
            yield request
            call.sync()
            request = await asyncio.to_thread(call.stream.next_request)

    async def _retried(
        self, fn: Callable[[float | None], Awaitable[T]], what: str, budget_s: float
    ) -> T:
        """``fn(timeout)`` retried (client/retry.py) within ``budget_s`` for all attempts."""
        try:
            return await acall_with_retry(
                fn, self.config.retry, budget_s=budget_s, on_retry=log_retry
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error, what) from error
