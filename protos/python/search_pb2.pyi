from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    COSINE: _ClassVar[Metric]
    IP: _ClassVar[Metric]
    L2: _ClassVar[Metric]

class SearchSpace(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_SPACE_DEFAULT: _ClassVar[SearchSpace]
    SEARCH_SPACE_AUGMENTED: _ClassVar[SearchSpace]
    SEARCH_SPACE_RAW: _ClassVar[SearchSpace]
METRIC_UNSPECIFIED: Metric
COSINE: Metric
IP: Metric
L2: Metric
SEARCH_SPACE_DEFAULT: SearchSpace
SEARCH_SPACE_AUGMENTED: SearchSpace
SEARCH_SPACE_RAW: SearchSpace

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "metric", "index_type", "index_params", "description", "exist_ok", "model", "augmentation")
    class IndexParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_PARAMS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXIST_OK_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AUGMENTATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    metric: Metric
    index_type: str
    index_params: _containers.ScalarMap[str, str]
    description: str
    exist_ok: bool
    model: str
    augmentation: DatabaseAugmentation
    def __init__(self, name: _Optional[str] = ..., metric: _Optional[_Union[Metric, str]] = ..., index_type: _Optional[str] = ..., index_params: _Optional[_Mapping[str, str]] = ..., description: _Optional[str] = ..., exist_ok: _Optional[bool] = ..., model: _Optional[str] = ..., augmentation: _Optional[_Union[DatabaseAugmentation, _Mapping]] = ...) -> None: ...

class DatabaseAugmentation(_message.Message):
    __slots__ = ("enabled", "top_n", "alpha")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    top_n: int
    alpha: float
    def __init__(self, enabled: _Optional[bool] = ..., top_n: _Optional[int] = ..., alpha: _Optional[float] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "count", "dim", "model_name", "model_version", "metric", "index_type", "index_params", "description", "augmentation", "warnings")
    class IndexParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_PARAMS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    AUGMENTATION_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    count: int
    dim: int
    model_name: str
    model_version: str
    metric: Metric
    index_type: str
    index_params: _containers.ScalarMap[str, str]
    description: str
    augmentation: DatabaseAugmentation
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., count: _Optional[int] = ..., dim: _Optional[int] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., metric: _Optional[_Union[Metric, str]] = ..., index_type: _Optional[str] = ..., index_params: _Optional[_Mapping[str, str]] = ..., description: _Optional[str] = ..., augmentation: _Optional[_Union[DatabaseAugmentation, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class DescribeCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "image", "uri", "label", "metadata", "display_uri")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_URI_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: bytes
    uri: str
    label: str
    metadata: _containers.ScalarMap[str, str]
    display_uri: str
    def __init__(self, id: _Optional[str] = ..., image: _Optional[bytes] = ..., uri: _Optional[str] = ..., label: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., display_uri: _Optional[str] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("collection", "items")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, collection: _Optional[str] = ..., items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class ItemFailure(_message.Message):
    __slots__ = ("id", "position", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    position: int
    error: _common_pb2.ItemError
    def __init__(self, id: _Optional[str] = ..., position: _Optional[int] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("received", "stored", "failed", "failures", "embed_seconds", "milvus_seconds")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    EMBED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MILVUS_SECONDS_FIELD_NUMBER: _ClassVar[int]
    received: int
    stored: int
    failed: int
    failures: _containers.RepeatedCompositeFieldContainer[ItemFailure]
    embed_seconds: float
    milvus_seconds: float
    def __init__(self, received: _Optional[int] = ..., stored: _Optional[int] = ..., failed: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[ItemFailure, _Mapping]]] = ..., embed_seconds: _Optional[float] = ..., milvus_seconds: _Optional[float] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("image", "vector", "id", "text")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    vector: Vector
    id: str
    text: str
    def __init__(self, image: _Optional[bytes] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("labels", "metadata", "ids")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "queries", "top_k", "filter", "exclude_self", "query_expansion", "space", "min_score")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SELF_FIELD_NUMBER: _ClassVar[int]
    QUERY_EXPANSION_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    top_k: int
    filter: Filter
    exclude_self: bool
    query_expansion: QueryExpansion
    space: SearchSpace
    min_score: float
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., top_k: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., exclude_self: _Optional[bool] = ..., query_expansion: _Optional[_Union[QueryExpansion, _Mapping]] = ..., space: _Optional[_Union[SearchSpace, str]] = ..., min_score: _Optional[float] = ...) -> None: ...

class QueryExpansion(_message.Message):
    __slots__ = ("enabled", "top_n", "alpha")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    top_n: int
    alpha: float
    def __init__(self, enabled: _Optional[bool] = ..., top_n: _Optional[int] = ..., alpha: _Optional[float] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "score", "label", "uri", "metadata", "near_duplicate", "visual_score")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NEAR_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    VISUAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    label: str
    uri: str
    metadata: _containers.ScalarMap[str, str]
    near_duplicate: bool
    visual_score: float
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., label: _Optional[str] = ..., uri: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., near_duplicate: _Optional[bool] = ..., visual_score: _Optional[float] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("hits", "error", "low_confidence")
    HITS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    error: _common_pb2.ItemError
    low_confidence: bool
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ..., low_confidence: _Optional[bool] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results", "embed_seconds", "milvus_seconds")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    EMBED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MILVUS_SECONDS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueryResult]
    embed_seconds: float
    milvus_seconds: float
    def __init__(self, results: _Optional[_Iterable[_Union[QueryResult, _Mapping]]] = ..., embed_seconds: _Optional[float] = ..., milvus_seconds: _Optional[float] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("collection", "ids", "filter", "limit", "include_vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    filter: Filter
    limit: int
    include_vectors: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., limit: _Optional[int] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class StoredItem(_message.Message):
    __slots__ = ("id", "label", "uri", "metadata", "vector")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    label: str
    uri: str
    metadata: _containers.ScalarMap[str, str]
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, id: _Optional[str] = ..., label: _Optional[str] = ..., uri: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., vector: _Optional[_Iterable[float]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[StoredItem]
    def __init__(self, items: _Optional[_Iterable[_Union[StoredItem, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids", "filter")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    filter: Filter
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class ListItemsRequest(_message.Message):
    __slots__ = ("collection", "page_size", "page_token", "filter", "include_vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page_size: int
    page_token: str
    filter: Filter
    include_vectors: bool
    def __init__(self, collection: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class ListItemsResponse(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[StoredItem]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[StoredItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetItemImageRequest(_message.Message):
    __slots__ = ("collection", "id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    id: str
    def __init__(self, collection: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class ItemImage(_message.Message):
    __slots__ = ("data", "content_type")
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    content_type: str
    def __init__(self, data: _Optional[bytes] = ..., content_type: _Optional[str] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ("collection", "filter")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    filter: Filter
    def __init__(self, collection: _Optional[str] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class GetServiceInfoRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class ServiceLimits(_message.Message):
    __slots__ = ("max_message_bytes", "max_item_bytes", "max_queries", "max_images_per_embed")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUERIES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_PER_EMBED_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_item_bytes: int
    max_queries: int
    max_images_per_embed: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_item_bytes: _Optional[int] = ..., max_queries: _Optional[int] = ..., max_images_per_embed: _Optional[int] = ...) -> None: ...

class ServiceInfo(_message.Message):
    __slots__ = ("limits", "model")
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    limits: ServiceLimits
    model: _common_pb2.ModelInfo
    def __init__(self, limits: _Optional[_Union[ServiceLimits, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...
