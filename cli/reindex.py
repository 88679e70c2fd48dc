"""`ris collections reindex NAME [--into NEW]`: re-embed a collection from its stored sources.

A changed model or default is a new embedding space: the service refuses to mix its vectors
with a collection made in another one. Reindexing reads every stored item (ListItems, one page
at a time), ingests it again from its source under the same id, label and metadata into a new
collection made by today's model, and leaves the old collection untouched: a failed or killed
run loses nothing, and pointing readers at the new name is the switch.

Sources: an item's uri is what it was ingested from (a path, for `ris ingest`). By default this
client reads that path, but only inside the folders the user names with ``--source-root``
(default: the collection's sync root, metadata ``ris.sync_root`` stamped by ``ris sync``, when its
items name exactly one). Any writer can store any uri, so a uri outside those folders, once
links are resolved (``/proc/self/environ``, ``../../.ssh/id_rsa``, a link out of the folder), is
refused per item, never read. ``--server-side`` has the search service read the sources instead,
inside its allowed roots. An item whose source cannot be read is reported and stays in the old
collection.

Resumable: ids the target already holds are skipped; ingest upserts by id, so ``--restart``
(send everything again) is safe too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ris.cli.sync import ROOT_KEY
from ris.client.client import RisClient
from ris.client.config import ClientConfig
from ris.client.errors import NotFound
from ris.client.types import CollectionInfo, IngestFailure, IngestItem, StoredItem
from ris.common.names import name_path, name_text


@dataclass
class ReindexSummary:
    source: str
    target: str
    listed: int = 0  # items of the source
    already: int = 0  # held by the target before this run (skipped)
    stored: int = 0
    missing: list[str] = field(default_factory=list)  # "id: why", source not readable
    failures: list[IngestFailure] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.failures


def default_target(name: str) -> str:
    return f"{name}_reindexed"


def ensure_target(
    ris: RisClient, source: CollectionInfo, target: str, augmentation_top_n: int | None
) -> CollectionInfo:
    """The target collection: today's model, the source's metric and augmentation unless told."""
    top_n = source.augmentation_top_n if augmentation_top_n is None else augmentation_top_n
    return ris.create_collection(
        target,
        metric=source.metric,
        description=source.description or f"reindexed from {source.name}",
        exist_ok=True,
        augmentation_top_n=top_n,
        augmentation_alpha=source.augmentation_alpha if top_n else 0.0,
    )


def held_ids(ris: RisClient, collection: str) -> set[str]:
    try:
        return {item.id for item in ris.iter_items(collection)}
    except NotFound:
        return set()


def source_roots(ris: RisClient, collection: str, named: list[Path]) -> list[Path]:
    """The folders client-side reads stay in (links resolved): those named, else the one sync
    root the collection's items name; ValueError when there is none to go by."""
    if named:
        missing = [str(root) for root in named if not Path(root).is_dir()]
        if missing:
            raise ValueError(f"--source-root must name folders: {', '.join(missing)}")
        return [Path(os.path.realpath(root)) for root in named]
    roots = sorted({i.metadata.get(ROOT_KEY, "") for i in ris.iter_items(collection)} - {""})
    if len(roots) != 1:
        found = (
            f"names {len(roots)} sync roots ({', '.join(roots)})" if roots else "has no sync root"
        )
        raise ValueError(
            f"{collection} {found}: name the folders its sources may be read from with "
            "--source-root (or let the service read them: --server-side)"
        )
    return [Path(os.path.realpath(name_path(roots[0])))]


def to_ingest(item: StoredItem, server_side: bool, roots: list[Path]) -> IngestItem | str:
    """The item as it is ingested again, or why its source is not read."""
    if not item.uri:
        return "no stored source (uri)"
    meta = dict(item.metadata)
    if server_side:
        return IngestItem(
            id=item.id, server_uri=item.uri, label=item.label, metadata=meta, display_uri=item.uri
        )
    real = Path(os.path.realpath(name_path(item.uri)))  # every link resolved before the check
    if not any(real.is_relative_to(root) for root in roots):
        shown = ", ".join(name_text(root) for root in roots)
        return f"source {item.uri} is outside the source roots ({shown}): not read"
    if not real.is_file():
        return f"source {item.uri} is not a readable file here (try --server-side)"
    return IngestItem(id=item.id, path=real, label=item.label, metadata=meta, display_uri=item.uri)


def plan(
    ris: RisClient,
    source: str,
    skip: set[str],
    server_side: bool,
    roots: list[Path],
    summary: ReindexSummary,
) -> Iterator[IngestItem]:
    """The source's items still to send, one listing page in memory at a time."""
    for item in ris.iter_items(source):
        summary.listed += 1
        if item.id in skip:
            summary.already += 1
            continue
        made = to_ingest(item, server_side, roots)
        if isinstance(made, str):
            summary.missing.append(f"{item.id}: {made}")
        else:
            yield made


def reindex(
    ris: RisClient,
    source: str,
    target: str,
    *,
    server_side: bool = False,
    restart: bool = False,
    augmentation_top_n: int | None = None,
    show_progress: bool = False,
    source_root: list[Path] | None = None,
) -> ReindexSummary:
    """``source_root``: the folders client-side reads stay in (default: the sync root)."""
    if source == target:
        raise ValueError("reindex needs a target other than the source (--into)")
    info = ris.describe_collection(source)
    roots = [] if server_side else source_roots(ris, source, list(source_root or []))
    skip = set() if restart else held_ids(ris, target)
    ensure_target(ris, info, target, augmentation_top_n)
    summary = ReindexSummary(source, target)
    result = ris.ingest(
        target,
        plan(ris, source, skip, server_side, roots, summary),
        total=max(0, info.count - len(skip)),
        show_progress=show_progress,
    )
    summary.stored = result.stored
    summary.failures = list(result.failures)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--into", default="", help="reindex: the new collection (NAME_reindexed)")
    parser.add_argument(
        "--server-side",
        action="store_true",
        help="reindex: the service reads each source inside its allowed roots",
    )
    parser.add_argument("--restart", action="store_true", help="reindex: send every item again")
    parser.add_argument(
        "--source-root",
        action="append",
        type=Path,
        default=[],
        metavar="FOLDER",
        help="reindex: read sources only inside this folder (repeatable; default: the "
        "collection's sync root); other uris are refused per item",
    )


def run(args: argparse.Namespace, config: ClientConfig) -> int:
    """0 when every item of the source is in the target, 1 when some could not be re-embedded."""
    target = args.into or default_target(args.name)
    with RisClient(config) as ris:
        summary = reindex(
            ris,
            args.name,
            target,
            server_side=args.server_side,
            restart=args.restart,
            augmentation_top_n=args.augmentation,
            show_progress=True,
            source_root=args.source_root,
        )
        count = ris.count(target)
    print(
        f"reindexed {summary.source} into {summary.target}: {summary.stored} stored, "
        f"{summary.already} already there, {len(summary.missing)} not read (no readable source "
        f"or outside the source roots), {len(summary.failures)} failed; {target} holds {count} "
        f"of {summary.listed}"
    )
    for line in summary.missing[:20]:
        print(f"  missing {line}", file=sys.stderr)
    for failure in summary.failures[:20]:
        print(f"  failed {failure.id}: {failure.message}", file=sys.stderr)
    if not summary.complete:
        print(f"{summary.source} is unchanged; fix the sources and run again", file=sys.stderr)
    return 0 if summary.complete else 1
