"""ListItems: a whole collection a page at a time, for export, folder sync and dedup.

The cursor is the last id of the previous page (opaque to callers: URL-safe base64), and each
page is the next ``page_size`` ids in byte order, so a listing needs no server-side state,
survives a restart of the service between pages and holds one page in memory. Pages are cut
to about MAX_PAGE_BYTES so that any gRPC client's default 4 MiB message limit holds them.
"""

from __future__ import annotations

import base64
import binascii
import json

from ris.api import search_pb2
from ris.common.errors import InvalidArgument
from ris.search.operations import filter_expr
from ris.search.store import MilvusStore
from ris.search.store_schema import MAX_ID_BYTES, Row

DEFAULT_PAGE_SIZE = 256
MAX_PAGE_SIZE = 1024
MAX_PAGE_BYTES = 3 * 1024 * 1024


def encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def decode_token(token: str) -> str:
    """The id a page token continues after; INVALID_ARGUMENT for anything we did not issue."""
    if not token:
        return ""
    try:
        last_id = base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except (UnicodeError, binascii.Error, ValueError):
        raise InvalidArgument("page_token is not one this service issued") from None
    if not last_id or len(last_id.encode()) > MAX_ID_BYTES:
        raise InvalidArgument("page_token is not one this service issued")
    return last_id


def _row_bytes(row: Row) -> int:
    size = len(row.id) + len(row.label) + len(row.uri) + len(json.dumps(row.metadata)) + 32
    return size + 4 * len(row.vector or ())


def list_items(
    store: MilvusStore, req: search_pb2.ListItemsRequest
) -> search_pb2.ListItemsResponse:
    page_size = req.page_size or DEFAULT_PAGE_SIZE
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be 1..{MAX_PAGE_SIZE}")
    after = decode_token(req.page_token)
    meta = store.describe(req.collection)
    expr = filter_expr(req.filter)
    if req.include_vectors:  # vectors dominate the size: ask Milvus for no more than fit
        page_size = max(1, min(page_size, MAX_PAGE_BYTES // (4 * meta.dim + 512)))
    rows = store.page(
        meta.name,
        after,
        page_size,
        expr,
        include_vectors=req.include_vectors and not meta.augmented,
    )
    if req.include_vectors and meta.augmented:  # the embeddings, not the blends
        store.fill_raw_vectors(meta, rows)
    response = search_pb2.ListItemsResponse()
    size = 0
    for row in rows:
        size += _row_bytes(row)
        if response.items and size > MAX_PAGE_BYTES:  # large metadata: the rest next page
            break
        response.items.add(
            id=row.id, label=row.label, uri=row.uri, metadata=row.metadata, vector=row.vector or []
        )
    # A short page from Milvus is the last one; a full (or cut) page continues after its last id.
    if response.items and (len(rows) == page_size or len(response.items) < len(rows)):
        response.next_page_token = encode_token(response.items[-1].id)
    return response
