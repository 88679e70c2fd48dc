"""`ris collections export`: a whole collection as JSON Lines, one item per line, in id order.

Streams page by page (RisClient.iter_items), so memory stays at one page whatever the size.
Each line: {"id", "label", "uri", "metadata"} and, with vectors, "vector" (raw embeddings).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from ris.client.client import RisClient
from ris.client.types import StoredItem


def item_record(item: StoredItem) -> dict[str, object]:
    record: dict[str, object] = {
        "id": item.id,
        "label": item.label,
        "uri": item.uri,
        "metadata": dict(item.metadata),
    }
    if item.vector is not None:
        record["vector"] = item.vector
    return record


def write_jsonl(
    ris: RisClient,
    collection: str,
    handle: TextIO,
    *,
    include_vectors: bool = False,
    page_size: int = 0,
    show_progress: bool = False,
) -> int:
    """Write every item of the collection to handle; returns how many."""
    total = ris.count(collection) if show_progress else None
    written = 0
    items = ris.iter_items(collection, page_size=page_size, include_vectors=include_vectors)
    for item in tqdm(items, total=total, unit="item", disable=not show_progress, file=sys.stderr):
        handle.write(json.dumps(item_record(item), ensure_ascii=False) + "\n")
        written += 1
    return written


def export_to(
    ris: RisClient, collection: str, out: str, *, include_vectors: bool, page_size: int = 0
) -> int:
    """Export to a file (written as OUT.partial, renamed when complete) or "-" for stdout."""
    if out == "-":
        return write_jsonl(
            ris, collection, sys.stdout, include_vectors=include_vectors, page_size=page_size
        )
    target = Path(out)
    partial = target.with_name(target.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        count = write_jsonl(
            ris,
            collection,
            handle,
            include_vectors=include_vectors,
            page_size=page_size,
            show_progress=sys.stderr.isatty(),
        )
    partial.replace(target)
    return count
