"""Where images to ingest come from: a folder, a glob pattern or a CSV (`id,path,label`).

Scanning only lists files (no image is read here), so a large source costs little until it is
sent. Rows that cannot be used are collected as problems, never silently dropped. A file or
folder that exists but cannot be read (EACCES, an I/O error) is a problem too, and is recorded in
``Source.unreadable`` so that ``ris sync`` keeps what it stored for it. A file name that is not
UTF-8 gets an id that escapes its bytes (common/names.py).
"""

from __future__ import annotations

import csv
import errno
import glob as globlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ris.client.types import IngestItem
from ris.common.names import name_text

# Every format the embedder decodes that people keep photos in; one list for folders, globs and
# sync. HEIC/HEIF (iPhones) decode with pillow-heif on the server; AVIF with Pillow itself.
IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".apng",
        ".webp",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".avif",
        ".heic",
        ".heif",
    }
)
MAX_ID_BYTES = 512
_GONE = {errno.ENOENT, errno.ENOTDIR}  # a dangling link or a name removed while scanning


@dataclass(frozen=True)
class SourceProblem:
    where: str  # "file.csv:12" or a path
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Source:
    items: list[IngestItem] = field(default_factory=list)
    problems: list[SourceProblem] = field(default_factory=list)
    # ids of files that exist but could not be read, and "folder/" for a folder that could not
    # be listed ("" when the top one could not): what is stored for them must be kept
    unreadable: list[str] = field(default_factory=list)

    def was_unreadable(self, item_id: str) -> bool:
        """Whether ``item_id`` is a file this scan saw, or may have missed, but could not read."""
        return any(
            item_id == entry or ((not entry or entry.endswith("/")) and item_id.startswith(entry))
            for entry in self.unreadable
        )


def is_image_file(path: Path) -> bool:
    """An existing regular file with an image suffix (False when it cannot be looked at)."""
    return _look_at(path) is True


def _look_at(path: Path) -> bool | str:
    """True for a regular file with an image suffix (a link to one too, as Path.rglob finds),
    False for anything else or nothing there (a dangling link), or why an entry with an image
    suffix that is there cannot be looked at (EACCES, EIO, a link loop)."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError as error:
        return False if error.errno in _GONE else f"cannot read: {error.strerror}"


def from_paths(paths: list[Path], base: Path, *, label_from_dir: bool = True) -> Source:
    """Items for files under base: id = path relative to base, label = parent folder's name.
    Ids, labels and uris of names that are not UTF-8 are escaped (common/names.py)."""
    source = Source()
    seen: set[str] = set()
    for path in sorted(paths):
        rel = path.relative_to(base) if path.is_relative_to(base) else Path(path.name)
        item_id = name_text(rel.as_posix())
        label = name_text(rel.parent.name) if label_from_dir and rel.parent != Path(".") else ""
        problem = _check_id(item_id, seen)
        if problem:
            source.problems.append(SourceProblem(name_text(path), problem))
            continue
        seen.add(item_id)
        resolved = path.resolve()
        item = IngestItem(id=item_id, path=resolved, label=label, display_uri=name_text(resolved))
        source.items.append(item)
    return source


def from_folder(root: Path, *, recursive: bool = True, label_from_dir: bool = True) -> Source:
    """Every image file in a folder (and its subfolders unless recursive=False; links to
    folders are not followed, as Path.rglob does not). Files and folders that exist but cannot
    be read are problems, named, and listed in ``unreadable``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    unreadable: list[SourceProblem] = []
    unreadable_ids: list[str] = []
    images: list[Path] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as error:
            if error.errno in _GONE and folder != root:
                continue
            unreadable.append(
                SourceProblem(name_text(folder), f"cannot list folder: {error.strerror}")
            )
            rel = folder.relative_to(root).as_posix()
            unreadable_ids.append("" if rel == "." else name_text(rel) + "/")
            continue
        for entry in entries:
            path = Path(entry.path)
            if _is_folder(entry):
                if recursive:
                    pending.append(path)
                continue
            looked = _look_at(path)
            if isinstance(looked, str):
                unreadable.append(SourceProblem(name_text(path), looked))
                unreadable_ids.append(name_text(path.relative_to(root).as_posix()))
            elif looked:
                images.append(path)
    source = from_paths(images, root, label_from_dir=label_from_dir)
    source.problems.extend(unreadable)
    source.unreadable.extend(unreadable_ids)
    return source


def from_glob(pattern: str, *, label_from_dir: bool = True) -> Source:
    """Image files matching a glob (`**` allowed); ids relative to the pattern's fixed prefix."""
    images, problems = [], []
    for path in (Path(p) for p in globlib.glob(pattern, recursive=True)):
        looked = _look_at(path)
        if isinstance(looked, str):
            problems.append(SourceProblem(name_text(path), looked))
        elif looked:
            images.append(path)
    source = from_paths(images, _glob_base(pattern), label_from_dir=label_from_dir)
    source.problems.extend(problems)
    return source


def from_csv(csv_path: Path) -> Source:
    """Rows of `id,path,label` (header required; id and label optional; other columns become
    metadata). Relative paths are relative to the CSV's folder, like the seed's
    reverse_image_search.csv."""
    csv_path = Path(csv_path)
    base = csv_path.parent
    source = Source()
    seen: set[str] = set()
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "path" not in columns:
            raise ValueError(f"{csv_path}: needs a header with a 'path' column, got {columns}")
        reader.fieldnames = columns
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            if None in row:
                source.problems.append(SourceProblem(where, "more fields than the header"))
                continue
            values = {k: (v or "").strip() for k, v in row.items()}
            raw_path = values.pop("path")
            if not raw_path:
                source.problems.append(SourceProblem(where, "empty path"))
                continue
            path = Path(raw_path) if Path(raw_path).is_absolute() else base / raw_path
            if not path.is_file():
                source.problems.append(SourceProblem(where, f"file not found: {path}"))
                continue
            item_id = values.pop("id", "") or Path(raw_path).as_posix()
            problem = _check_id(item_id, seen)
            if problem:
                source.problems.append(SourceProblem(where, problem))
                continue
            seen.add(item_id)
            label = values.pop("label", "")
            metadata = {k: v for k, v in values.items() if k and v}
            item = IngestItem(id=item_id, path=path.resolve(), label=label, metadata=metadata)
            source.items.append(item)
    return source


def load_source(spec: str | Path, *, label_from_dir: bool = True) -> Source:
    """Guess the kind: a .csv file, a folder, a single image, or else a glob pattern."""
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".csv":
        return from_csv(path)
    if path.is_dir():
        return from_folder(path, label_from_dir=label_from_dir)
    if path.is_file():
        return from_paths([path], path.parent, label_from_dir=False)
    if globlib.has_magic(str(spec)):
        return from_glob(str(spec), label_from_dir=label_from_dir)
    raise FileNotFoundError(f"no such file, folder or glob match: {spec}")


def _glob_base(pattern: str) -> Path:
    parts: list[str] = []
    for part in Path(pattern).parts:
        if globlib.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _check_id(item_id: str, seen: set[str]) -> str | None:
    if len(item_id.encode()) > MAX_ID_BYTES:
        return f"id longer than {MAX_ID_BYTES} bytes"
    if item_id in seen:
        return f"duplicate id {item_id!r}"
    return None
