"""Every request message the clients send is built here, and every answer is read here into the
plain values of client/types.py: the one place that turns protobuf into client types and back.
Both clients send exactly these (through client/operations.py), so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ris.api import search_pb2
from ris.client.types import (
    ById,
    ByText,
    CollectionInfo,
    Hit,
    IngestFailure,
    IngestItem,
    IngestSummary,
    ItemError,
    ItemPage,
    QueryLike,
    QueryResult,
    StoredItem,
)

METRICS = {"COSINE": search_pb2.COSINE, "IP": search_pb2.IP, "L2": search_pb2.L2}
SPACES = {
    "": search_pb2.SEARCH_SPACE_DEFAULT,
    "augmented": search_pb2.SEARCH_SPACE_AUGMENTED,
    "raw": search_pb2.SEARCH_SPACE_RAW,
}

# -- pieces of requests ----------------------------------------------------------------------


def metric_value(name: str) -> int:
    """Metric enum value from its name ("" = server default)."""
    if not name:
        return search_pb2.METRIC_UNSPECIFIED
    try:
        return METRICS[name.upper()]
    except KeyError:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {name!r}") from None


def metric_name(value: int) -> str:
    return str(search_pb2.Metric.Name(value))


def to_query(query: QueryLike) -> search_pb2.Query:
    """str/Path = image file, bytes = encoded image, numbers = vector, ById / ByText."""
    if isinstance(query, ById):
        return search_pb2.Query(id=query.id)
    if isinstance(query, ByText):
        return search_pb2.Query(text=query.text)
    if isinstance(query, bytes | bytearray | memoryview):
        return search_pb2.Query(image=bytes(query))
    if isinstance(query, str | Path):
        return search_pb2.Query(image=Path(query).read_bytes())
    vector = np.asarray(query, dtype=np.float32)
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"a vector query must be 1-D and non-empty, got shape {vector.shape}")
    return search_pb2.Query(vector=search_pb2.Vector(values=vector.tolist()))


def to_filter(
    labels: Iterable[str] | None = None,
    metadata: Mapping[str, str] | None = None,
    ids: Iterable[str] | None = None,
) -> search_pb2.Filter | None:
    if not labels and not metadata and not ids:
        return None
    return search_pb2.Filter(
        labels=list(labels or []), metadata=dict(metadata or {}), ids=list(ids or [])
    )


def augmentation(top_n: int | None, alpha: float = 0.0) -> search_pb2.DatabaseAugmentation | None:
    """None = the server's default; 0 = raw embeddings; n = blend each item with its top n."""
    if top_n is None:
        return None
    if top_n < 0:
        raise ValueError("augmentation top_n must be >= 0 (None = the server's default)")
    return search_pb2.DatabaseAugmentation(enabled=top_n > 0, top_n=top_n, alpha=alpha)


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


# -- requests --------------------------------------------------------------------------------


def create_collection_request(
    name: str,
    *,
    metric: str,
    index_type: str,
    index_params: Mapping[str, str] | None,
    description: str,
    exist_ok: bool,
    model: str,
    augmentation_top_n: int | None,
    augmentation_alpha: float,
) -> search_pb2.CreateCollectionRequest:
    return search_pb2.CreateCollectionRequest(
        name=name,
        metric=metric_value(metric),  # type: ignore[arg-type]
        index_type=index_type,
        index_params=dict(index_params or {}),
        description=description,
        exist_ok=exist_ok,
        model=model,
        augmentation=augmentation(augmentation_top_n, augmentation_alpha),
    )


def describe_collection_request(name: str) -> search_pb2.DescribeCollectionRequest:
    return search_pb2.DescribeCollectionRequest(name=name)


def list_collections_request() -> search_pb2.ListCollectionsRequest:
    return search_pb2.ListCollectionsRequest()


def drop_collection_request(name: str) -> search_pb2.DropCollectionRequest:
    return search_pb2.DropCollectionRequest(name=name)


def service_info_request(collection: str = "") -> search_pb2.GetServiceInfoRequest:
    return search_pb2.GetServiceInfoRequest(collection=collection)


def ingest_request(items: Sequence[search_pb2.Item], collection: str) -> search_pb2.IngestRequest:
    """One message of an Ingest stream; only the first names the collection ("" = not first)."""
    request = search_pb2.IngestRequest(items=items)
    if collection:
        request.collection = collection
    return request


def search_request(
    collection: str,
    queries: Sequence[QueryLike],
    *,
    top_k: int,
    labels: Iterable[str] | None,
    metadata: Mapping[str, str] | None,
    ids: Iterable[str] | None,
    exclude_self: bool,
    min_score: float | None = None,
    expansion: bool | None = None,
    space: str = "",
) -> search_pb2.SearchRequest:
    """Reads the query images. ``min_score``: drop hits scoring below it (None = keep all);
    ``expansion``: None = the server's default, False = off; ``space``: "" (server's choice),
    "augmented" or "raw"."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {sorted(SPACES)}, got {space!r}")
    filter_ = to_filter(labels, metadata, ids)
    request = search_pb2.SearchRequest(
        collection=collection,
        queries=[to_query(q) for q in queries],
        top_k=top_k,
        exclude_self=exclude_self,
        space=SPACES[space],
    )
    if filter_ is not None:
        request.filter.CopyFrom(filter_)
    if min_score is not None:
        request.min_score = min_score
    if expansion is not None:
        request.query_expansion.enabled = expansion
    return request


def search_part(
    request: search_pb2.SearchRequest, positions: Sequence[int]
) -> search_pb2.SearchRequest:
    """The same request (every field) with only the queries at ``positions``: one of several
    calls. The request itself when that is all of them."""
    if list(positions) == list(range(len(request.queries))):
        return request
    part = search_pb2.SearchRequest()
    for field, value in request.ListFields():
        if field.name == "queries":
            continue
        if field.is_repeated:
            getattr(part, field.name).extend(value)
        elif field.message_type is not None:
            getattr(part, field.name).CopyFrom(value)
        else:
            setattr(part, field.name, value)
    part.queries.extend(request.queries[i] for i in positions)
    return part


def get_request(
    collection: str,
    ids: Iterable[str] | None,
    *,
    labels: Iterable[str] | None,
    metadata: Mapping[str, str] | None,
    limit: int,
    include_vectors: bool,
) -> search_pb2.GetRequest:
    request = search_pb2.GetRequest(
        collection=collection, ids=list(ids or []), limit=limit, include_vectors=include_vectors
    )
    _set_filter(request, labels, metadata)
    return request


def delete_request(
    collection: str,
    ids: Iterable[str] | None,
    *,
    labels: Iterable[str] | None,
    metadata: Mapping[str, str] | None,
) -> search_pb2.DeleteRequest:
    request = search_pb2.DeleteRequest(collection=collection, ids=list(ids or []))
    _set_filter(request, labels, metadata)
    return request


def count_request(
    collection: str, *, labels: Iterable[str] | None, metadata: Mapping[str, str] | None
) -> search_pb2.CountRequest:
    request = search_pb2.CountRequest(collection=collection)
    _set_filter(request, labels, metadata)
    return request


def list_items_request(
    collection: str,
    *,
    page_size: int,
    page_token: str,
    labels: Iterable[str] | None,
    metadata: Mapping[str, str] | None,
    include_vectors: bool,
) -> search_pb2.ListItemsRequest:
    request = search_pb2.ListItemsRequest(
        collection=collection,
        page_size=page_size,
        page_token=page_token,
        include_vectors=include_vectors,
    )
    _set_filter(request, labels, metadata)
    return request


def _set_filter(
    request: search_pb2.GetRequest
    | search_pb2.DeleteRequest
    | search_pb2.CountRequest
    | search_pb2.ListItemsRequest,
    labels: Iterable[str] | None,
    metadata: Mapping[str, str] | None,
) -> None:
    filter_ = to_filter(labels, metadata)
    if filter_ is not None:
        request.filter.CopyFrom(filter_)


# -- answers ---------------------------------------------------------------------------------


def hit(message: search_pb2.Hit) -> Hit:
    return Hit(
        id=message.id,
        score=float(message.score),
        label=message.label,
        uri=message.uri,
        metadata=dict(message.metadata),
        near_duplicate=message.near_duplicate,
        visual_score=message.visual_score if message.HasField("visual_score") else None,
    )


def query_result(message: search_pb2.QueryResult) -> QueryResult:
    error = None
    if message.HasField("error") and (message.error.code or message.error.message):
        error = ItemError(code=message.error.code, message=message.error.message)
    return QueryResult(
        hits=[hit(h) for h in message.hits], error=error, low_confidence=message.low_confidence
    )


def query_results(message: search_pb2.SearchResponse) -> list[QueryResult]:
    return [query_result(r) for r in message.results]


def collection_info(message: search_pb2.CollectionInfo) -> CollectionInfo:
    return CollectionInfo(
        name=message.name,
        count=int(message.count),
        dim=int(message.dim),
        model_name=message.model_name,
        model_version=message.model_version,
        metric=metric_name(message.metric),
        index_type=message.index_type,
        index_params=dict(message.index_params),
        description=message.description,
        augmentation_top_n=int(message.augmentation.top_n) if message.augmentation.enabled else 0,
        augmentation_alpha=float(message.augmentation.alpha),
        warnings=tuple(message.warnings),
    )


def collection_infos(message: search_pb2.ListCollectionsResponse) -> list[CollectionInfo]:
    return [collection_info(c) for c in message.collections]


def dropped(message: search_pb2.DropCollectionResponse) -> bool:
    return bool(message.dropped)


def deleted(message: search_pb2.DeleteResponse) -> int:
    return int(message.deleted)


def counted(message: search_pb2.CountResponse) -> int:
    return int(message.count)


def stored_item(message: search_pb2.StoredItem, with_vector: bool) -> StoredItem:
    return StoredItem(
        id=message.id,
        label=message.label,
        uri=message.uri,
        metadata=dict(message.metadata),
        vector=list(message.vector) if with_vector else None,
    )


def stored_items(message: search_pb2.GetResponse, with_vectors: bool) -> list[StoredItem]:
    return [stored_item(i, with_vectors) for i in message.items]


def item_page(message: search_pb2.ListItemsResponse, with_vectors: bool) -> ItemPage:
    return ItemPage(
        items=[stored_item(i, with_vectors) for i in message.items],
        next_page_token=message.next_page_token,
    )


def ingest_outcome(message: search_pb2.IngestResponse) -> IngestSummary:
    """One Ingest call's answer; its failures' positions are the call's own (0 = the first
    item it sent), which client/ingest.py makes global."""
    return IngestSummary(
        received=int(message.received),
        stored=int(message.stored),
        failed=int(message.failed),
        failures=[
            IngestFailure(f.id, int(f.position), f.error.code, f.error.message)
            for f in message.failures
        ],
        embed_seconds=message.embed_seconds,
        milvus_seconds=message.milvus_seconds,
    )
