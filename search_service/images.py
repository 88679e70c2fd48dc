"""GetItemImage: a stored item's image for result pages, read through the same confinement as
server-side ingest (paths.py: inside the allowed roots, regular files, size-capped), and served
only when Pillow reads it as an image (its header, and ``verify``: nothing is decoded), so a page
can show hits without a browser (or anyone) reading the server's disk freely.

Every refusal about the item's file (no uri, not a local absolute path, server-side paths off,
outside the allowed roots, missing, not a regular file, unreadable, too large, not an image)
gets one answer: NOT_FOUND with the same message, so that a caller cannot tell a missing file
from a directory, a text file or a path outside the roots. The reason goes to the service log.
An unknown collection or id keeps its own NOT_FOUND (what Get and DescribeCollection tell too).
"""

from __future__ import annotations

import io
import logging

from PIL import Image

from ris.api import search_pb2
from ris.common.errors import NotFound
from ris.common.imaging import heif_supported
from ris.search.config import SearchConfig
from ris.search.paths import SourceError, read_image_file
from ris.search.store import MilvusStore

log = logging.getLogger(__name__)
UNSERVABLE = (
    "this item has no image this service serves (its uri must name an image file in the "
    "allowed roots)"
)


def image_type(data: bytes) -> str | None:
    """The MIME type of ``data`` when Pillow reads it as an image (header and ``verify``, no
    decoding), else None. Only ``image/*`` types: never PDF, PostScript or video."""
    heif_supported()  # HEIC/HEIF too, where pillow-heif is installed
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format or ""
            image.verify()
    except Exception:  # anything Pillow cannot take is not an image here
        return None
    mime = "image/jpeg" if kind == "MPO" else Image.MIME.get(kind, "")  # MPO: a phone's JPEG
    return mime if mime.startswith("image/") else None


def item_image(
    store: MilvusStore, config: SearchConfig, req: search_pb2.GetItemImageRequest
) -> search_pb2.ItemImage:
    meta = store.describe(req.collection)
    rows = store.get(meta.name, ids=[req.id], limit=1) if req.id else []
    if not rows:
        raise NotFound(f"no item with id {req.id!r} in {meta.name!r}")
    refusal = NotFound(UNSERVABLE)  # the same for every refusal: see the module docstring
    uri = rows[0].uri
    if not uri:
        log.info("GetItemImage %s/%s: refused: the item has no uri", meta.name, req.id)
        raise refusal
    try:
        data = read_image_file(uri, config.allowed_roots, config.max_file_bytes)
    except (SourceError, ValueError) as exc:
        log.info("GetItemImage %s/%s: refused: %s", meta.name, req.id, exc)
        raise refusal from None
    kind = image_type(data)
    if kind is None:
        log.info("GetItemImage %s/%s: refused: %s is not an image", meta.name, req.id, uri)
        raise refusal
    return search_pb2.ItemImage(data=data, content_type=kind)
