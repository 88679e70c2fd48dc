"""Server-side image paths: read only regular files inside the configured roots.

Refused: remote URIs (the service fetches nothing over the network), relative paths, paths whose
real location (symlinks and ``..`` resolved) is outside every root, non-files, oversized files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import grpc

from ris.common.errors import ServiceError
from ris.common.names import name_path

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class SourceError(ServiceError):
    """One item's image could not be read; ``code`` is the gRPC status for its ItemError (or,
    for GetItemImage, for the call)."""


def resolve(uri: str, roots: Sequence[Path]) -> Path:
    """The real path ``uri`` names, if it lies inside one of ``roots``."""
    if not roots:
        raise SourceError(
            "server-side paths are disabled (no allowed roots configured)",
            grpc.StatusCode.PERMISSION_DENIED,
        )
    text = uri[len("file://") :] if uri.startswith("file://") else uri
    if _SCHEME.match(text) and not os.path.isabs(text):
        raise SourceError(
            f"remote URIs are not fetched: {uri[:100]}", grpc.StatusCode.INVALID_ARGUMENT
        )
    if not os.path.isabs(text):
        raise SourceError(f"path must be absolute: {uri[:200]}", grpc.StatusCode.INVALID_ARGUMENT)
    if "\x00" in text:
        raise SourceError("path contains a NUL byte", grpc.StatusCode.INVALID_ARGUMENT)
    real = Path(os.path.realpath(name_path(text)))  # a name that is not UTF-8 comes escaped
    for root in roots:
        if real.is_relative_to(os.path.realpath(root)):
            return real
    raise SourceError(f"path outside the allowed roots: {uri}", grpc.StatusCode.PERMISSION_DENIED)


def read_image_file(uri: str, roots: Sequence[Path], max_bytes: int) -> bytes:
    """The bytes of a server-side image file, after the checks above."""
    path = resolve(uri, roots)
    try:
        if not path.is_file():
            if not path.exists():
                raise SourceError(f"no such file: {uri}", grpc.StatusCode.NOT_FOUND)
            raise SourceError(f"not a regular file: {uri}", grpc.StatusCode.INVALID_ARGUMENT)
        size = path.stat().st_size
        if size > max_bytes:
            raise SourceError(
                f"file too large: {size} > {max_bytes} bytes", grpc.StatusCode.INVALID_ARGUMENT
            )
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {uri}: {exc}", grpc.StatusCode.PERMISSION_DENIED) from exc
