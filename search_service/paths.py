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

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class SourceError(Exception):
    """One item's image could not be read; ``code`` is the gRPC status for its ItemError."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def resolve(uri: str, roots: Sequence[Path]) -> Path:
    """The real path ``uri`` names, if it lies inside one of ``roots``."""
    if not roots:
        raise SourceError(
            grpc.StatusCode.PERMISSION_DENIED,
            "server-side paths are disabled (no allowed roots configured)",
        )
    text = uri[len("file://") :] if uri.startswith("file://") else uri
    if _SCHEME.match(text) and not os.path.isabs(text):
        raise SourceError(
            grpc.StatusCode.INVALID_ARGUMENT, f"remote URIs are not fetched: {uri[:100]}"
        )
    if not os.path.isabs(text):
        raise SourceError(grpc.StatusCode.INVALID_ARGUMENT, f"path must be absolute: {uri[:200]}")
    if "\x00" in text:
        raise SourceError(grpc.StatusCode.INVALID_ARGUMENT, "path contains a NUL byte")
    real = Path(os.path.realpath(text))
    for root in roots:
        if real.is_relative_to(os.path.realpath(root)):
            return real
    raise SourceError(grpc.StatusCode.PERMISSION_DENIED, f"path outside the allowed roots: {uri}")


def read_image_file(uri: str, roots: Sequence[Path], max_bytes: int) -> bytes:
    """The bytes of a server-side image file, after the checks above."""
    path = resolve(uri, roots)
    try:
        if not path.is_file():
            if not path.exists():
                raise SourceError(grpc.StatusCode.NOT_FOUND, f"no such file: {uri}")
            raise SourceError(grpc.StatusCode.INVALID_ARGUMENT, f"not a regular file: {uri}")
        size = path.stat().st_size
        if size > max_bytes:
            raise SourceError(
                grpc.StatusCode.INVALID_ARGUMENT, f"file too large: {size} > {max_bytes} bytes"
            )
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(grpc.StatusCode.PERMISSION_DENIED, f"cannot read {uri}: {exc}") from exc
