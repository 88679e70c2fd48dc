"""Plain typed results and inputs: what the high-level client takes and returns (no protobuf)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Hit:
    """One search result; score is a similarity, higher is better."""

    id: str
    score: float
    label: str = ""
    uri: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    near_duplicate: bool = False  # ranked first as a near duplicate of the query (see proto)
    # Spaces with a semantic part: how alike the photos look (cosine of the visual parts).
    visual_score: float | None = None

    @property
    def similarity(self) -> float:
        """What a near-duplicate threshold compares: the visual score where there is one."""
        return self.score if self.visual_score is None else self.visual_score


@dataclass(frozen=True)
class ItemError:
    code: int
    message: str


@dataclass(frozen=True)
class QueryResult:
    """Top-k hits of one query, best first; `error` is set instead when that query failed."""

    hits: list[Hit]
    error: ItemError | None = None
    low_confidence: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    count: int
    dim: int
    model_name: str
    model_version: str
    metric: str
    index_type: str
    index_params: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    augmentation_top_n: int = 0  # neighbours blended into each stored item; 0 = raw embeddings
    augmentation_alpha: float = 0.0
    warnings: tuple[str, ...] = ()  # from describe: e.g. a Milvus Lite collection grown too big


@dataclass(frozen=True)
class StoredItem:
    id: str
    label: str
    uri: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    vector: list[float] | None = None


@dataclass(frozen=True)
class ItemPage:
    """One page of a collection listing; pass next_page_token back for the next ("" = done)."""

    items: list[StoredItem]
    next_page_token: str = ""


@dataclass(frozen=True)
class IngestFailure:
    """An item that was not stored; position is its 0-based place in what was passed to ingest."""

    id: str
    position: int
    code: int
    message: str


@dataclass
class IngestSummary:
    received: int = 0
    stored: int = 0
    failed: int = 0
    failures: list[IngestFailure] = field(default_factory=list)
    embed_seconds: float = 0.0
    milvus_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)  # source rows rejected before sending

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.skipped


@dataclass(frozen=True)
class IngestItem:
    """One image to store. Give exactly one of path (read here), data (bytes) or server_uri
    (a path the server reads itself, inside its allowed roots)."""

    id: str
    path: Path | None = None
    data: bytes | None = None
    server_uri: str | None = None
    label: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    display_uri: str | None = None  # stored as the item's uri; defaults to the absolute path

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.path, self.data, self.server_uri))
        if given != 1:
            raise ValueError(f"item {self.id!r}: give exactly one of path, data, server_uri")
        if not self.id:
            raise ValueError("item id must not be empty")


# Queries: a str or Path is an image file, bytes are an encoded image, a sequence of numbers or
# a 1-D array is a vector. Use ById / ByText for the other two kinds.
@dataclass(frozen=True)
class ById:
    """Search with the vector of an item already stored in the collection."""

    id: str


@dataclass(frozen=True)
class ByText:
    """Search with a text description (needs a text model on the embedder)."""

    text: str


QueryLike = str | Path | bytes | Sequence[float] | np.ndarray | ById | ByText
