"""Milvus boolean expressions built from structured filters, with every value quoted literally.

User input never reaches the expression unquoted: values become double-quoted string literals in
which ``"`` and ``\\`` are escaped and newline/CR/tab use their escapes. Other characters go in
raw: Milvus Lite's parser knows no ``\\u``/``\\x`` escapes, while both it and Milvus 2.3 accept raw
control characters inside a literal. Metadata keys are quoted the same way (``metadata["k"]``);
keys with control characters are refused (Milvus 2.3 never matches them), values may hold any.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ris.common.errors import InvalidArgument

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
MAX_FILTER_VALUES = 16384


def check_metadata_key(key: str) -> str:
    """Metadata keys: non-empty, no control characters (Milvus 2.3 cannot match such JSON keys)."""
    if not key:
        raise InvalidArgument("metadata keys must not be empty")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise InvalidArgument(f"metadata key {key!r} contains control characters")
    return key


def quote(value: str) -> str:
    """A Milvus string literal that matches ``value`` exactly."""
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def _in_list(field: str, values: Iterable[str]) -> str:
    items = list(dict.fromkeys(values))
    if len(items) > MAX_FILTER_VALUES:
        raise InvalidArgument(f"too many {field} values: {len(items)} > {MAX_FILTER_VALUES}")
    if len(items) == 1:
        return f"{field} == {quote(items[0])}"
    return f"{field} in [{', '.join(quote(v) for v in items)}]"


def build_filter(
    ids: Iterable[str] = (),
    labels: Iterable[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> str:
    """AND of: id is any of ``ids``, label is any of ``labels``, each metadata key equals its value.

    Empty parts are left out; an empty result means "everything".
    """
    parts = []
    ids, labels = list(ids), list(labels)
    if ids:
        parts.append(_in_list("id", ids))
    if labels:
        parts.append(_in_list("label", labels))
    for key, value in sorted((metadata or {}).items()):
        check_metadata_key(key)
        parts.append(f"metadata[{quote(key)}] == {quote(value)}")
    return " and ".join(f"({p})" if len(parts) > 1 else p for p in parts)


def combine(*exprs: str) -> str:
    """AND of the non-empty expressions."""
    present = [e for e in exprs if e]
    if len(present) <= 1:
        return present[0] if present else ""
    return " and ".join(f"({e})" for e in present)
