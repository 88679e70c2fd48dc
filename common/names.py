"""Ids, labels and uris for file names that are not valid UTF-8 (an old camera card, a Latin-1
archive): text that escapes those bytes, and the way back.

Ids travel as UTF-8 text, but a POSIX file name is bytes. A name that decodes as UTF-8 is used
unchanged, so ids already stored keep matching. A name that does not is escaped: each byte that
is not part of valid UTF-8 becomes ``\\xHH`` (two lowercase hex digits) and each backslash
becomes ``\\x5c``; every other character is kept. The Latin-1 name ``b"caf\\xe9.jpg"`` is the id
``caf\\xe9.jpg`` (11 characters). The same name always gives the same text (across runs and
``ris sync``), and `name_bytes` gives the bytes back.

One kind of valid name shares its text with an escaped one: a name that literally spells such an
escape (the 11 characters ``caf\\xe9.jpg`` themselves). A folder holding both reports the second
as a duplicate id, never storing one over the other; `name_bytes` reads such text as the escape.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_ESCAPE = re.compile(r"\\x([0-9a-f]{2})")


def name_text(name: str | bytes | os.PathLike[str]) -> str:
    """The text for a file name or path: itself when it is valid UTF-8, else escaped."""
    raw = os.fsencode(name)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # surrogateescape turns each byte that is not valid UTF-8 into U+DC80..U+DCFF
    return "".join(_escaped(ch) for ch in raw.decode("utf-8", "surrogateescape"))


def name_bytes(text: str) -> bytes:
    """The file name (bytes) that `name_text` made ``text`` from."""
    literal = text.encode("utf-8")
    matches = list(_ESCAPE.finditer(text))
    if not matches or len(matches) != text.count("\\"):
        return literal  # a backslash that is not an escape: a valid name as it is
    out, start = bytearray(), 0
    for match in matches:
        out += text[start : match.start()].encode("utf-8")
        out.append(int(match[1], 16))
        start = match.end()
    out += text[start:].encode("utf-8")
    raw = bytes(out)
    # escapes stand only for names that are not UTF-8, and spell them exactly as name_text does
    return raw if not _is_utf8(raw) and name_text(raw) == text else literal


def name_path(text: str) -> Path:
    """The local path that `name_text` made ``text`` (a uri, an id) from."""
    return Path(os.fsdecode(name_bytes(text)))


def _escaped(ch: str) -> str:
    if ch == "\\":
        return "\\x5c"
    if "\udc80" <= ch <= "\udcff":
        return f"\\x{ord(ch) - 0xDC00:02x}"
    return ch


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
