"""What travels to the GPU machine for the GPU check (scripts/gpu_check.py), and how it gets there.

One device call carries at most 64 MiB (the repository included), and the GPU check needs more:
the onnxruntime-gpu wheel alone is 256 MB, the fp16 model 55 MB. So the bundle (wheels, model,
photos, fp32 CPU references) is one uncompressed tar stream cut into parts of ``part_bytes``,
each in its own folder ``<carry>/part-NN/`` with a ``parts.json`` that names the bundle (its
sha256), the part count and the part's own sha256. Each device call carries one part folder and
stages it outside the repository (``--stage``); the last call finds every part, checks each
sha256, and extracts the tar. A missing or stale part is named, never guessed around.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

PART_GLOB = "part-*"
PART_INDEX = "parts.json"
CHUNK = 1 << 20
DEFAULT_STAGE = Path(os.environ.get("RIS_GPU_STAGE", "/tmp/ris_gpu_stage"))


class BundleError(RuntimeError):
    """The bundle's parts are missing, stale or corrupt; the message says which."""


class _PartWriter:
    """A write-only stream that spills into part files of at most ``part_bytes`` each."""

    def __init__(self, carry: Path, part_bytes: int) -> None:
        self.carry = carry
        self.part_bytes = part_bytes
        self.parts: list[dict[str, Any]] = []
        self.total = hashlib.sha256()
        self.size = 0
        self._file: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._in_part = 0

    def _open_next(self) -> None:
        self._close_part()
        index = len(self.parts)
        folder = self.carry / f"part-{index:02d}"
        folder.mkdir(parents=True)
        path = folder / f"bundle.{index:02d}"
        self.parts.append({"part": index, "file": path.name, "bytes": 0})
        self._file = path.open("wb")
        self._hash = hashlib.sha256()
        self._in_part = 0

    def _close_part(self) -> None:
        if self._file is not None:
            self._file.close()
            self.parts[-1].update(bytes=self._in_part, sha256=self._hash.hexdigest())
            self._file = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self._file is None or self._in_part >= self.part_bytes:
                self._open_next()
            assert self._file is not None
            piece = view[: self.part_bytes - self._in_part]
            self._file.write(piece)
            self._hash.update(piece)
            self.total.update(piece)
            self._in_part += len(piece)
            self.size += len(piece)
            view = view[len(piece) :]
        return len(data)

    def close(self) -> None:
        self._close_part()


def clear_parts(carry: Path) -> None:
    """Remove the part folders of an earlier bundle (and nothing else)."""
    for folder in carry.glob(PART_GLOB):
        if folder.is_dir():
            shutil.rmtree(folder)


def write_bundle(
    carry: Path, members: Sequence[tuple[Path, str]], part_bytes: int
) -> dict[str, Any]:
    """Tar ``members`` (path, name in the bundle) into parts under ``carry``; the index."""
    if part_bytes < CHUNK:
        raise ValueError(f"part_bytes must be >= {CHUNK}")
    carry.mkdir(parents=True, exist_ok=True)
    clear_parts(carry)
    writer = _PartWriter(carry, part_bytes)
    with tarfile.open(fileobj=writer, mode="w|") as tar:  # type: ignore[call-overload]
        for path, name in members:
            tar.add(str(path), arcname=name)
    writer.close()
    index = {
        "bundle": writer.total.hexdigest(),
        "bytes": writer.size,
        "parts": len(writer.parts),
        "part_bytes": part_bytes,
        "members": [name for _, name in members],
    }
    for part in writer.parts:
        folder = carry / f"part-{part['part']:02d}"
        (folder / PART_INDEX).write_text(json.dumps({**index, **part}, indent=1) + "\n")
    return index


@dataclass
class PartSet:
    """The parts of one bundle found in some folders: which are here, which are missing."""

    bundle: str
    parts: int
    found: dict[int, Path]  # part number -> its folder
    index: dict[str, Any]

    @property
    def missing(self) -> list[int]:
        return [i for i in range(self.parts) if i not in self.found]

    @property
    def complete(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        have = sorted(self.found)
        return f"bundle {self.bundle[:12]}: {len(have)} of {self.parts} parts here {have}" + (
            f", missing {self.missing}" if self.missing else ""
        )


def _part_folders(dirs: Iterable[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    for root in dirs:
        for folder in sorted(root.glob(PART_GLOB)):
            index_file = folder / PART_INDEX
            if index_file.is_file():
                yield folder, json.loads(index_file.read_text())


def find_parts(dirs: Sequence[Path]) -> PartSet | None:
    """The newest bundle's parts across ``dirs`` (the first folder's bundle wins), or None.

    "Newest" is the bundle of the first part found in the first folder that has any: the carry
    folder of the current call comes first, so a stale part staged by an earlier prepare is
    never mixed in.
    """
    found: dict[str, PartSet] = {}
    order: list[str] = []
    for folder, index in _part_folders(dirs):
        key = index["bundle"]
        if key not in found:
            found[key] = PartSet(key, int(index["parts"]), {}, index)
            order.append(key)
        found[key].found.setdefault(int(index["part"]), folder)
    return found[order[0]] if order else None


def stage(carry: Path, stage_dir: Path = DEFAULT_STAGE) -> PartSet | None:
    """Copy the part folders carried in this call to ``stage_dir`` (kept between warm calls)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    for folder, _ in _part_folders([carry]):
        target = stage_dir / folder.name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(folder, target)
    return find_parts([carry, stage_dir])


class _Concatenated:
    """Read the parts in order as one stream, checking each part's sha256 and the whole one."""

    def __init__(self, parts: PartSet) -> None:
        self._files = [parts.found[i] for i in range(parts.parts)]
        self._parts = parts
        self._total = hashlib.sha256()
        self._current: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._expected = ""
        self._next = 0

    def _advance(self) -> bool:
        if self._current is not None:
            self._current.close()
            if self._hash.hexdigest() != self._expected:
                raise BundleError(f"part {self._next - 1} is corrupt (sha256 differs)")
        if self._next >= len(self._files):
            self._current = None
            return False
        folder = self._files[self._next]
        index = json.loads((folder / PART_INDEX).read_text())
        self._expected = index["sha256"]
        self._current = (folder / index["file"]).open("rb")
        self._hash = hashlib.sha256()
        self._next += 1
        return True

    def read(self, size: int = -1) -> bytes:
        if self._current is None and not self._advance():
            return b""
        while True:
            assert self._current is not None
            data = self._current.read(size if size > 0 else CHUNK)
            if data:
                self._hash.update(data)
                self._total.update(data)
                return data
            if not self._advance():
                return b""

    def finish(self) -> None:
        while self.read():
            pass
        if self._total.hexdigest() != self._parts.bundle:
            raise BundleError("the assembled bundle's sha256 differs from its index")


def assemble(parts: PartSet, dest: Path) -> Path:
    """Extract a complete bundle into ``dest`` (emptied first); every sha256 checked."""
    if not parts.complete:
        raise BundleError(parts.describe())
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    stream = _Concatenated(parts)
    with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
        tar.extractall(dest, filter="data")
    stream.finish()
    return dest
