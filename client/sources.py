"""Where images to ingest come from: a folder, a glob pattern or a CSV (`id,path,label`).

Scanning only lists files (no image is read here), so a large source costs little until it is
sent. Rows that cannot be used are collected as problems, never silently dropped.
"""

from __future__ import annotations

import csv
import glob as globlib
from dataclasses import dataclass, field
from pathlib import Path

from ris.client.types import IngestItem

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
MAX_ID_BYTES = 512


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


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def from_paths(paths: list[Path], base: Path, *, label_from_dir: bool = True) -> Source:
    """Items for files under base: id = path relative to base, label = parent folder's name."""
    source = Source()
    seen: set[str] = set()
    for path in sorted(paths):
        rel = path.relative_to(base) if path.is_relative_to(base) else Path(path.name)
        item_id = rel.as_posix()
        label = rel.parent.name if label_from_dir and rel.parent != Path(".") else ""
        problem = _check_id(item_id, seen)
        if problem:
            source.problems.append(SourceProblem(str(path), problem))
            continue
        seen.add(item_id)
        source.items.append(IngestItem(id=item_id, path=path.resolve(), label=label))
    return source


def from_folder(root: Path, *, recursive: bool = True, label_from_dir: bool = True) -> Source:
    """Every image file in a folder (and its subfolders unless recursive=False)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    candidates = root.rglob("*") if recursive else root.iterdir()
    images = [p for p in candidates if is_image_file(p)]
    return from_paths(images, root, label_from_dir=label_from_dir)


def from_glob(pattern: str, *, label_from_dir: bool = True) -> Source:
    """Image files matching a glob (`**` allowed); ids relative to the pattern's fixed prefix."""
    matches = [Path(p) for p in globlib.glob(pattern, recursive=True)]
    base = _glob_base(pattern)
    return from_paths([p for p in matches if is_image_file(p)], base, label_from_dir=label_from_dir)


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


def _check_id(item_id: str, seen: set[str]) -> str | None:
    if len(item_id.encode()) > MAX_ID_BYTES:
        return f"id longer than {MAX_ID_BYTES} bytes"
    if item_id in seen:
        return f"duplicate id {item_id!r}"
    return None
