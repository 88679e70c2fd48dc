"""Python client of the reverse image search service (no torch, no onnxruntime needed).

The generated gRPC code is in ris.api; the high-level API is re-exported here.
"""

from ris.client.aio import AsyncRisClient
from ris.client.client import RisClient
from ris.client.config import ClientConfig, RetryPolicy
from ris.client.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    QueryFailed,
    RisError,
    Unavailable,
)
from ris.client.sources import Source, from_csv, from_folder, from_glob, load_source
from ris.client.types import (
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
