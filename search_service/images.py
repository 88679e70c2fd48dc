"""GetItemImage: a stored item's image for result pages, read through the same confinement as
server-side ingest (paths.py: inside the allowed roots, regular files, size-capped), so a page
can show hits without a browser (or anyone) reading the server's disk freely."""

from __future__ import annotations

from ris.api import search_pb2
from ris.common.errors import NotFound
from ris.search.config import SearchConfig
from ris.search.paths import read_image_file
from ris.search.store import MilvusStore

_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def content_type(data: bytes) -> str:
    """The image type the bytes start with (application/octet-stream when unknown)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    return "application/octet-stream"


def item_image(
    store: MilvusStore, config: SearchConfig, req: search_pb2.GetItemImageRequest
) -> search_pb2.ItemImage:
    meta = store.describe(req.collection)
    rows = store.get(meta.name, ids=[req.id], limit=1) if req.id else []
    if not rows:
        raise NotFound(f"no item with id {req.id!r} in {meta.name!r}")
    if not rows[0].uri:
        raise NotFound(f"item {req.id!r} has no uri to read its image from")
    data = read_image_file(rows[0].uri, config.allowed_roots, config.max_file_bytes)
    return search_pb2.ItemImage(data=data, content_type=content_type(data))
