"""RisClient: the blocking high-level client of the search service.

from ris.client import RisClient
with RisClient(address="127.0.0.1:50052") as ris:
    ris.create_collection("photos", exist_ok=True)
    ris.ingest_folder("photos", "path/to/images", show_progress=True)
    for hit in ris.search("photos", "query.jpg", top_k=5).hits:
        print(hit.score, hit.id, hit.label)
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from tqdm import tqdm

from ris.api import search_pb2, search_pb2_grpc
from ris.client import convert
from ris.client.channel import open_channel
from ris.client.config import ClientConfig
from ris.client.errors import QueryFailed, RisError, Unavailable, from_rpc_error, rpc_code
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
from ris.client.retry import call_with_retry
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

log = logging.getLogger(__name__)
T = TypeVar("T")


def log_retry(attempt: int, delay: float, error: BaseException) -> None:
    code = rpc_code(error)
    details = getattr(error, "details", None)
    reason = f"{code.name if code else 'error'}: {details() if callable(details) else error}"
    log.warning("attempt %d failed (%s); retrying in %.2fs", attempt, reason, delay)


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
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else open_channel(self.config)
        self._stub = search_pb2_grpc.SearchServiceStub(self._channel)
        self._limits: Limits | None = None

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

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
        response = self._unary(self._stub.CreateCollection, request, f"create {name}")
        return convert.collection_info(response)

    def describe_collection(self, name: str) -> CollectionInfo:
        request = search_pb2.DescribeCollectionRequest(name=name)
        return convert.collection_info(
            self._unary(self._stub.DescribeCollection, request, f"describe {name}")
        )

    def list_collections(self) -> list[CollectionInfo]:
        request = search_pb2.ListCollectionsRequest()
        response = self._unary(self._stub.ListCollections, request, "list collections")
        return [convert.collection_info(c) for c in response.collections]

    def drop_collection(self, name: str) -> bool:
        request = search_pb2.DropCollectionRequest(name=name)
        return bool(self._unary(self._stub.DropCollection, request, f"drop {name}").dropped)

    def service_info(self, collection: str = "") -> ServiceInfo:
        """The service's limits (merged with this client's) and the model, with its geometry,
        that ``collection`` is embedded with (empty = the embedder's default model)."""
        request = search_pb2.GetServiceInfoRequest(collection=collection)
        response = self._unary(self._stub.GetServiceInfo, request, "service info")
        info = service_info(response, self.config.max_message_bytes)
        if response.HasField("model"):  # else the embedder was unreachable: ask again later
            self._limits = info.limits
        return info

    def limits(self) -> Limits:
        """The limits messages are cut to: asked once (one attempt, no retries: the call that
        follows has its own), then kept. This client's own when the service does not say."""
        if self._limits is not None:
            return self._limits
        response, error = None, None
        try:
            response = self._stub.GetServiceInfo(
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
        if total is None and isinstance(items, Sequence):
            total = len(items)
        limits, transform = self._ingest_setup(collection, shrink)
        summary = IngestSummary()
        started = time.perf_counter()
        with tqdm(
            total=total, unit="img", desc=f"ingest {collection}", disable=not show_progress
        ) as bar:
            for call in plan_calls(items, items_per_call):

                def attempt(
                    timeout: float | None, call: IngestCall = call
                ) -> tuple[CallStream, Any]:
                    stream = CallStream(
                        collection, call, chunk_size, max_chunk_bytes, limits, transform
                    )
                    progress = _Progress(bar, stream)
                    first = stream.next_request()
                    if first is None:
                        progress.sync()
                        return stream, None
                    requests = progress.follow(itertools.chain([first], stream.requests()))
                    try:
                        response = self._stub.Ingest(
                            requests,
                            timeout=timeout,
                            metadata=self.config.metadata(),
                        )
                    except grpc.RpcError:
                        progress.undo()  # the call is sent again from its first item
                        raise
                    progress.sync()
                    return stream, response

                stream, response = self._call(
                    attempt, f"ingest into {collection}", self.config.ingest_timeout
                )
                if response is None:
                    stream.record_local_only(summary)
                else:
                    stream.record(response, summary)
        summary.elapsed_seconds = time.perf_counter() - started
        return summary

    def _ingest_setup(
        self, collection: str, shrink: bool
    ) -> tuple[Limits, Callable[[bytes], bytes] | None]:
        if not shrink:
            return self.limits(), None
        try:
            info = self.service_info(collection)
        except RisError as error:  # a missing collection is reported by the ingest call itself
            log.warning("not shrinking: %s", error)
            return self.limits(), None
        return info.limits, shrinker(info.geometry)

    def ingest_source(self, collection: str, source: Source, **kwargs: Any) -> IngestSummary:
        """Ingest scanned items; the source's rejected rows land in summary.skipped."""
        summary = self.ingest(collection, source.items, **kwargs)
        summary.skipped.extend(str(p) for p in source.problems)
        return summary

    def ingest_folder(
        self, collection: str, folder: str | Path, *, recursive: bool = True, **kwargs: Any
    ) -> IngestSummary:
        """Every image under folder; id = relative path, label = parent folder name."""
        source = from_folder(Path(folder), recursive=recursive)
        return self.ingest_source(collection, source, **kwargs)

    def ingest_glob(self, collection: str, pattern: str, **kwargs: Any) -> IngestSummary:
        return self.ingest_source(collection, from_glob(pattern), **kwargs)

    def ingest_csv(self, collection: str, csv_path: str | Path, **kwargs: Any) -> IngestSummary:
        """Rows of id,path,label with paths relative to the CSV (the seed's format)."""
        return self.ingest_source(collection, from_csv(Path(csv_path)), **kwargs)

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
        result = self.search_batch(
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
        )[0]
        if result.error is not None:
            raise QueryFailed(f"query failed: {result.error.message}")
        return result

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
        filter_ = convert.to_filter(labels, metadata, ids)
        request = convert.search_request(
            collection,
            queries,
            top_k,
            filter_,
            exclude_self,
            min_score=min_score,
            expansion=expansion,
            space=space,
        )
        calls, oversize = search_calls(request.queries, self.limits())
        answers = {i: oversize_result(reason) for i, reason in oversize.items()}
        for positions in calls:
            part = convert.search_part(request, positions)
            response = self._unary(self._stub.Search, part, f"search {collection}")
            answers.update(zip(positions, response.results, strict=True))
        return [convert.query_result(answers[i]) for i in range(len(request.queries))]

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
        request = search_pb2.GetRequest(
            collection=collection, ids=list(ids or []), limit=limit, include_vectors=include_vectors
        )
        filter_ = convert.to_filter(labels, metadata)
        if filter_ is not None:
            request.filter.CopyFrom(filter_)
        response = self._unary(self._stub.Get, request, f"get from {collection}")
        return [convert.stored_item(i, include_vectors) for i in response.items]

    def delete(
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
        return int(self._unary(self._stub.Delete, request, f"delete from {collection}").deleted)

    def count(
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
        return int(self._unary(self._stub.Count, request, f"count {collection}").count)

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
        filter_ = convert.to_filter(labels, metadata)
        request = convert.list_items_request(
            collection, page_size, page_token, filter_, include_vectors
        )
        response = self._unary(self._stub.ListItems, request, f"list items of {collection}")
        return convert.item_page(response, include_vectors)

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
        token = ""
        while True:
            page = self.list_items_page(
                collection,
                page_size=page_size,
                page_token=token,
                labels=labels,
                metadata=metadata,
                include_vectors=include_vectors,
            )
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token

    # -- plumbing ----------------------------------------------------------------------------

    def _unary(self, method: Callable[..., T], request: Any, what: str) -> T:
        return self._call(
            lambda timeout: method(request, timeout=timeout, metadata=self.config.metadata()),
            what,
            self.config.timeout,
        )

    def _call(self, fn: Callable[[float | None], T], what: str, budget_s: float) -> T:
        """``fn(timeout)`` retried (client/retry.py) within ``budget_s`` for all attempts."""
        try:
            return call_with_retry(fn, self.config.retry, budget_s=budget_s, on_retry=log_retry)
        except grpc.RpcError as error:
            raise from_rpc_error(error, what) from error


class _Progress:
    """Moves a progress bar with the items a call attempt has handled; undone on retry."""

    def __init__(self, bar: tqdm, stream: CallStream) -> None:
        self.bar = bar
        self.stream = stream
        self.shown = 0

    def sync(self) -> None:
        self.bar.update(self.stream.consumed - self.shown)
        self.shown = self.stream.consumed

    def undo(self) -> None:
        self.bar.update(-self.shown)
        self.shown = 0

    def follow(
        self, requests: Iterable[search_pb2.IngestRequest]
    ) -> Iterator[search_pb2.IngestRequest]:
        for request in requests:
            yield request
            self.sync()


__all__ = ["RisClient", "RisError"]
