"""Python client of the reverse image search service (no torch, no onnxruntime needed).

The generated gRPC code is in client.grpc_gen; the high-level API is re-exported here.
"""

from client.aio import AsyncRisClient
from client.client import RisClient
from client.config import ClientConfig, RetryPolicy
from client.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    QueryFailed,
    RisError,
    Unavailable,
)
from client.sources import Source, from_csv, from_folder, from_glob, load_source
from client.types import (
    ById,
    ByText,
    CollectionInfo,
    Hit,
    IngestFailure,
    IngestItem,
    IngestSummary,
    ItemPage,
    QueryResult,
    StoredItem,
)

__all__ = [
    "AlreadyExists",
    "AsyncRisClient",
    "ById",
    "ByText",
    "ClientConfig",
    "CollectionInfo",
    "Hit",
    "IngestFailure",
    "IngestItem",
    "IngestSummary",
    "InvalidArgument",
    "ItemPage",
    "NotFound",
    "QueryFailed",
    "QueryResult",
    "RetryPolicy",
    "RisClient",
    "RisError",
    "Source",
    "StoredItem",
    "Unavailable",
    "from_csv",
    "from_folder",
    "from_glob",
    "load_source",
]
