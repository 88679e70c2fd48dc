"""AsyncRisClient: the asyncio twin of RisClient, same methods as coroutines, over grpc.aio.

async with AsyncRisClient(address="127.0.0.1:50052") as ris:
    result = await ris.search("photos", "query.jpg", top_k=5)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from tqdm import tqdm

from ris.api import search_pb2, search_pb2_grpc
from ris.client import convert
from ris.client.channel import open_aio_channel
from ris.client.client import log_retry
from ris.client.config import ClientConfig
from ris.client.errors import QueryFailed, RisError, Unavailable, from_rpc_error
from ris.client.ingest import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_ITEMS_PER_CALL,
    DEFAULT_MAX_CHUNK_BYTES,
    CallStream,
    IngestCall,
    plan_calls,
)
from ris.client.limits import (
    Limits,
    ServiceInfo,
    limits_from,
    oversize_result,
    search_calls,
    service_info,
)
from ris.client.retry import acall_with_retry
from ris.client.shrink import shrinker
from ris.client.sources import Source, from_csv, from_folder, from_glob
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
log = logging.getLogger(__name__)


class AsyncRisClient:
    """Create inside a running event loop; `await close()` (or `async with`) when done."""

    def __init__(self, config: ClientConfig | None = None, **overrides: Any) -> None:
        self.config = config or ClientConfig.from_env(**overrides)
        self._channel = open_aio_channel(self.config)
        self._stub = search_pb2_grpc.SearchServiceStub(self._channel)
        self._limits: Limits | None = None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncRisClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except asyncio.TimeoutError:
            raise Unavailable(f"{self.config.address} not reachable within {timeout}s") from None

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
        """``augmentation_top_n``: None = the server's default (database-side augmentation on,
        top 3, for COSINE/IP), 0 = store raw embeddings, n = blend each item with its top n."""
        request = search_pb2.CreateCollectionRequest(
            name=name,
            metric=convert.metric_value(metric),  # type: ignore[arg-type]
            index_type=index_type,
            index_params=dict(index_params or {}),
            description=description,
            exist_ok=exist_ok,
            model=model,
            augmentation=convert.augmentation(augmentation_top_n, augmentation_alpha),
        )
        response = await self._unary(self._stub.CreateCollection, request, f"create {name}")
        return convert.collection_info(response)

    async def describe_collection(self, name: str) -> CollectionInfo:
        request = search_pb2.DescribeCollectionRequest(name=name)
        response = await self._unary(self._stub.DescribeCollection, request, f"describe {name}")
        return convert.collection_info(response)

    async def list_collections(self) -> list[CollectionInfo]:
        request = search_pb2.ListCollectionsRequest()
        response = await self._unary(self._stub.ListCollections, request, "list collections")
        return [convert.collection_info(c) for c in response.collections]

    async def drop_collection(self, name: str) -> bool:
        request = search_pb2.DropCollectionRequest(name=name)
        response = await self._unary(self._stub.DropCollection, request, f"drop {name}")
        return bool(response.dropped)

    async def service_info(self, collection: str = "") -> ServiceInfo:
        """Like RisClient.service_info."""
        request = search_pb2.GetServiceInfoRequest(collection=collection)
        response = await self._unary(self._stub.GetServiceInfo, request, "service info")
        info = service_info(response, self.config.max_message_bytes)
        if response.HasField("model"):  # else the embedder was unreachable: ask again later
            self._limits = info.limits
        return info

    async def limits(self) -> Limits:
        """Like RisClient.limits."""
        if self._limits is not None:
            return self._limits
        response, error = None, None
        try:
            response = await self._stub.GetServiceInfo(
                search_pb2.GetServiceInfoRequest(),
                timeout=min(self.config.timeout, 10.0),
                metadata=self.config.metadata(),
            )
        except grpc.RpcError as failed:
            error = failed
        limits, keep = limits_from(response, error, self.config.max_message_bytes)
        if keep:
            self._limits = limits
        return limits

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
        if total is None and isinstance(items, Sequence):
            total = len(items)
        limits, transform = await self.limits(), None
        if shrink:
            try:
                info = await self.service_info(collection)
                limits, transform = info.limits, shrinker(info.geometry)
            except RisError as error:  # a missing collection is reported by the ingest call
                log.warning("not shrinking: %s", error)
        make_stream = functools.partial(
            CallStream,
            collection,
            chunk_size=chunk_size,
            max_chunk_bytes=max_chunk_bytes,
            limits=limits,
            transform=transform,
        )
        summary = IngestSummary()
        started = time.perf_counter()
        with tqdm(
            total=total, unit="img", desc=f"ingest {collection}", disable=not show_progress
        ) as bar:
            for call in plan_calls(items, items_per_call):
                attempt = functools.partial(self._ingest_call, make_stream, call, bar)
                stream, response = await self._call(
                    attempt, f"ingest into {collection}", self.config.ingest_timeout
                )
                if response is None:
                    stream.record_local_only(summary)
                else:
                    stream.record(response, summary)
        summary.elapsed_seconds = time.perf_counter() - started
        return summary

    async def _ingest_call(
        self,
        make_stream: Callable[..., CallStream],
        call: IngestCall,
        bar: tqdm,
        timeout: float | None,
    ) -> tuple[CallStream, Any]:
        stream = make_stream(call=call)
        shown = 0

        def sync() -> None:
            nonlocal shown
            bar.update(stream.consumed - shown)
            shown = stream.consumed

        first = await asyncio.to_thread(stream.next_request)
        if first is None:
            sync()
            return stream, None

        async def requests() -> AsyncIterator[search_pb2.IngestRequest]:
            request: search_pb2.IngestRequest | None = first
            while request is not None:
                yield request
                sync()
                request = await asyncio.to_thread(stream.next_request)

        try:
            response = await self._stub.Ingest(
                requests(), timeout=timeout, metadata=self.config.metadata()
            )
        except grpc.RpcError:
            bar.update(-shown)  # the call is sent again from its first item
            raise
        sync()
        return stream, response

    async def ingest_source(self, collection: str, source: Source, **kwargs: Any) -> IngestSummary:
        summary = await self.ingest(collection, source.items, **kwargs)
        summary.skipped.extend(str(p) for p in source.problems)
        return summary

    async def ingest_folder(
        self, collection: str, folder: str | Path, *, recursive: bool = True, **kwargs: Any
    ) -> IngestSummary:
        source = await asyncio.to_thread(from_folder, Path(folder), recursive=recursive)
        return await self.ingest_source(collection, source, **kwargs)

    async def ingest_glob(self, collection: str, pattern: str, **kwargs: Any) -> IngestSummary:
        source = await asyncio.to_thread(from_glob, pattern)
        return await self.ingest_source(collection, source, **kwargs)

    async def ingest_csv(
        self, collection: str, csv_path: str | Path, **kwargs: Any
    ) -> IngestSummary:
        source = await asyncio.to_thread(from_csv, Path(csv_path))
        return await self.ingest_source(collection, source, **kwargs)

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
        results = await self.search_batch(
            collection,
            [query],
            top_k=top_k,
            labels=labels,
            metadata=metadata,
            ids=ids,
            exclude_self=exclude_self,
            min_score=min_score,
            expansion=expansion,
            space=space,
        )
        if results[0].error is not None:
            raise QueryFailed(f"query failed: {results[0].error.message}")
        return results[0]

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
        filter_ = convert.to_filter(labels, metadata, ids)
        request = await asyncio.to_thread(
            functools.partial(
                convert.search_request,
                min_score=min_score,
                expansion=expansion,
                space=space,
            ),
            collection,
            queries,
            top_k,
            filter_,
            exclude_self,
        )
        calls, oversize = search_calls(request.queries, await self.limits())
        answers = {i: oversize_result(reason) for i, reason in oversize.items()}
        for positions in calls:
            part = convert.search_part(request, positions)
            response = await self._unary(self._stub.Search, part, f"search {collection}")
            answers.update(zip(positions, response.results, strict=True))
        return [convert.query_result(answers[i]) for i in range(len(request.queries))]

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
        request = search_pb2.GetRequest(
            collection=collection, ids=list(ids or []), limit=limit, include_vectors=include_vectors
        )
        filter_ = convert.to_filter(labels, metadata)
        if filter_ is not None:
            request.filter.CopyFrom(filter_)
        response = await self._unary(self._stub.Get, request, f"get from {collection}")
        return [convert.stored_item(i, include_vectors) for i in response.items]

    async def delete(
        self,
        collection: str,
        ids: Iterable[str] | None = None,
        *,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        request = search_pb2.DeleteRequest(collection=collection, ids=list(ids or []))
        filter_ = convert.to_filter(labels, metadata)
        if filter_ is not None:
            request.filter.CopyFrom(filter_)
        response = await self._unary(self._stub.Delete, request, f"delete from {collection}")
        return int(response.deleted)

    async def count(
        self,
        collection: str,
        *,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        request = search_pb2.CountRequest(collection=collection)
        filter_ = convert.to_filter(labels, metadata)
        if filter_ is not None:
            request.filter.CopyFrom(filter_)
        response = await self._unary(self._stub.Count, request, f"count {collection}")
        return int(response.count)

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
        filter_ = convert.to_filter(labels, metadata)
        request = convert.list_items_request(
            collection, page_size, page_token, filter_, include_vectors
        )
        response = await self._unary(self._stub.ListItems, request, f"list items of {collection}")
        return convert.item_page(response, include_vectors)

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
        token = ""
        while True:
            page = await self.list_items_page(
                collection,
                page_size=page_size,
                page_token=token,
                labels=labels,
                metadata=metadata,
                include_vectors=include_vectors,
            )
            for item in page.items:
                yield item
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def _unary(self, method: Callable[..., Any], request: Any, what: str) -> Any:
        async def attempt(timeout: float | None) -> Any:
            return await method(request, timeout=timeout, metadata=self.config.metadata())

        return await self._call(attempt, what, self.config.timeout)

    async def _call(
        self, fn: Callable[[float | None], Awaitable[T]], what: str, budget_s: float
    ) -> T:
        """``fn(timeout)`` retried (client/retry.py) within ``budget_s`` for all attempts."""
        try:
            return await acall_with_retry(
                fn, self.config.retry, budget_s=budget_s, on_retry=log_retry
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error, what) from error
