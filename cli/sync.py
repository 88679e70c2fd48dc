"""`ris sync COLLECTION FOLDER`: make a collection match a folder, changing only what changed.

Each image the sync writes carries two metadata keys: ``ris.sync_root`` (the folder's absolute
path) and ``ris.sha256`` (its content hash). A run scans the folder (hashing every file), lists
the collection's items of that root (ListItems, page by page), and plans:

- add: a file whose id (path relative to the folder) the root has no item for,
- update: a file whose hash differs from its item's (re-embedded),
- remove: an item of this root whose file is gone (never one whose file, or folder, exists but
  cannot be read: that file is reported as failed and its item kept),
- unchanged: everything else; items the sync did not write are never touched (an id already
  held by one of them is reported as failed, unless ``--adopt`` lets the sync take it over).

Adds and updates go first (upserts by id), deletes last. That makes it resumable: killed at
any point, the next run finds what was written with its hash (unchanged now), writes the rest
and only then deletes, so nothing is lost and nothing is stored twice. A file edited while the
sync reads it is caught by the next run (its hash no longer matches). Ids (and the root) of names
that are not UTF-8 escape their bytes the same way on every run (common/names.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ris.client.client import RisClient
from ris.client.config import ClientConfig
from ris.client.errors import NotFound
from ris.client.sources import Source, SourceProblem, from_folder
from ris.client.types import IngestItem
from ris.common.names import name_text

ROOT_KEY = "ris.sync_root"
HASH_KEY = "ris.sha256"
LOOKUP_BATCH = 1000  # ids per Get when checking who holds a new id
DELETE_BATCH = 1000


@dataclass
class SyncPlan:
    root: str
    add: list[IngestItem] = field(default_factory=list)
    update: list[IngestItem] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)  # files that cannot be synced, and why
    kept: list[str] = field(default_factory=list)  # stored ids whose files could not be read

    @property
    def changes(self) -> int:
        return len(self.add) + len(self.update) + len(self.remove)


@dataclass
class SyncSummary:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"added {self.added}, updated {self.updated}, removed {self.removed}, "
            f"unchanged {self.unchanged}, failed {self.failed}"
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan(folder: Path, root: str, show_progress: bool) -> tuple[list[IngestItem], Source]:
    """The folder's images as items stamped with the sync metadata, and the scan's outcome: its
    problems and what it could not read (a file it cannot hash is added to both)."""
    source = from_folder(folder)
    items = []
    for item in tqdm(source.items, unit="file", desc="scan", disable=not show_progress):
        assert item.path is not None
        try:
            digest = file_sha256(item.path)
        except OSError as error:
            source.problems.append(
                SourceProblem(name_text(item.path), f"cannot read: {error.strerror}")
            )
            source.unreadable.append(item.id)
            continue
        stamped = {**item.metadata, ROOT_KEY: root, HASH_KEY: digest}
        items.append(dataclasses.replace(item, metadata=stamped))
    return items, source


def _batches(values: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def plan_sync(
    ris: RisClient, collection: str, folder: Path, *, adopt: bool = False, show_progress: bool
) -> SyncPlan:
    root = name_text(Path(folder).resolve())
    files, scanned = scan(Path(folder), root, show_progress)
    plan = SyncPlan(root=root, problems=[str(p) for p in scanned.problems])
    stored: dict[str, str] = {}  # this root's items: id -> hash (one entry per synced file)
    held: dict[str, str] = {}  # new ids that items not written by this sync hold: id -> whose
    try:
        for item in ris.iter_items(collection, metadata={ROOT_KEY: root}):
            stored[item.id] = item.metadata.get(HASH_KEY, "")
        new = [f.id for f in files if f.id not in stored]
        for batch in _batches(new, LOOKUP_BATCH):
            for item in ris.get(collection, batch):
                held[item.id] = item.metadata.get(ROOT_KEY, "")
    except NotFound:  # a collection not made yet (dry run) holds nothing
        pass
    for f in files:
        if f.id in stored:
            if stored[f.id] == f.metadata[HASH_KEY]:
                plan.unchanged += 1
            else:
                plan.update.append(f)
        elif f.id in held and not adopt:
            owner = f"the sync of {held[f.id]}" if held[f.id] else "something other than a sync"
            plan.problems.append(f"{f.id}: id already stored by {owner} (--adopt takes it over)")
        elif f.id in held:
            plan.update.append(f)
        else:
            plan.add.append(f)
    present = {f.id for f in files}
    gone = sorted(i for i in stored if i not in present)
    plan.kept = [i for i in gone if scanned.was_unreadable(i)]  # exists, cannot be read: kept
    plan.remove = [i for i in gone if not scanned.was_unreadable(i)]
    return plan


def apply_plan(
    ris: RisClient,
    collection: str,
    plan: SyncPlan,
    *,
    chunk_size: int = 32,
    items_per_call: int = 512,
    show_progress: bool = False,
) -> SyncSummary:
    """Upsert adds and updates, then delete removals; failed items are counted, not raised."""
    summary = SyncSummary(unchanged=plan.unchanged, failed=len(plan.problems))
    summary.failures.extend(plan.problems)
    writes = [*plan.add, *plan.update]
    if writes:
        result = ris.ingest(
            collection,
            writes,
            chunk_size=chunk_size,
            items_per_call=items_per_call,
            show_progress=show_progress,
        )
        failed = {f.position for f in result.failures}
        summary.failed += len(failed)
        summary.failures.extend(f"{f.id}: {f.message}" for f in result.failures)
        summary.added = sum(1 for i in range(len(plan.add)) if i not in failed)
        summary.updated = sum(1 for i in range(len(plan.add), len(writes)) if i not in failed)
    with tqdm(total=len(plan.remove), unit="item", desc="remove", disable=not show_progress) as bar:
        for batch in _batches(plan.remove, DELETE_BATCH):
            summary.removed += ris.delete(collection, batch)
            bar.update(len(batch))
    return summary


def print_plan(plan: SyncPlan) -> None:
    for item in plan.add:
        print(f"add     {item.id}")
    for item in plan.update:
        print(f"update  {item.id}")
    for item_id in plan.remove:
        print(f"remove  {item_id}")
    for item_id in plan.kept:
        print(f"keep    {item_id} (its file exists but cannot be read)")
    for problem in plan.problems:
        print(f"skip    {problem}")
    print(
        f"plan: add {len(plan.add)}, update {len(plan.update)}, remove {len(plan.remove)}, "
        f"unchanged {plan.unchanged}, cannot sync {len(plan.problems)}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("collection")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--adopt", action="store_true", help="take over ids stored by other means")
    parser.add_argument(
        "--no-create", action="store_true", help="fail if the collection is missing"
    )
    parser.add_argument("--chunk-size", type=int, default=32, help="images per stream message")
    parser.add_argument("--items-per-call", type=int, default=512, help="images per Ingest call")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace, config: ClientConfig) -> int:
    """Exit 0 when the collection matches the folder, 1 when some files could not be synced."""
    if not args.folder.is_dir():
        raise FileNotFoundError(f"not a folder: {args.folder}")
    progress = not args.no_progress
    with RisClient(config) as ris:
        if not args.no_create and not args.dry_run:
            ris.create_collection(args.collection, exist_ok=True)
        plan = plan_sync(
            ris, args.collection, args.folder, adopt=args.adopt, show_progress=progress
        )
        if args.dry_run:
            print_plan(plan)
            return 0
        summary = apply_plan(
            ris,
            args.collection,
            plan,
            chunk_size=args.chunk_size,
            items_per_call=args.items_per_call,
            show_progress=progress,
        )
    for failure in summary.failures[:20]:
        print(f"  failed {failure}", file=sys.stderr)
    if len(summary.failures) > 20:
        print(f"  ... and {len(summary.failures) - 20} more", file=sys.stderr)
    changed = summary.added + summary.updated + summary.removed
    matched = not changed and not summary.failed
    note = "; nothing changed: the collection already matched the folder" if matched else ""
    if plan.kept:
        note += f"; kept {len(plan.kept)} items whose files exist but cannot be read"
    print(f"synced {name_text(args.folder)} into {args.collection}: {summary.line()}{note}")
    return 1 if summary.failed else 0
