"""Exact and near duplicates: over a whole collection (`ris dedup`), or screened at ingest.

A collection is scanned page by page with its raw embeddings (ListItems); each page's vectors
are searched against the collection's raw embeddings (query expansion off, ``min_score`` =
the threshold), and every hit of another item is a duplicate pair. Pairs are joined into groups
with union-find. Memory: one page plus the pairs found, never the whole collection.

Raw embeddings, not an augmented collection's stored blends: a blend leans towards its item's
neighbours, so two different photos of one cluster score closer than they look, and a copy's
score is pulled down by whatever else sits near the original.

Scores are the collection metric's (COSINE: cosine similarity, the default collections'), and in a
space with a semantic part (the default gem_softmax) the hits' visual score, the cosine of the GeM
parts (``Hit.similarity``): there the full score also counts the class, which would pair different
photos of one kind of thing. The default threshold, 0.91, was chosen on the copy-detection edits of
imagenet-sample among Caltech photos (docs/results/quality.md, "Near duplicates"): the lowest
threshold at which 90 % of all pairs found are (original, copy) pairs, every other pair counted
wrong; recall 0.47 there, higher for mild edits (flip, brightness, colour, JPEG), low for rotations
and crops. Copy detection among unrelated photos can go down to 0.80 (precision 0.996, recall 0.85
on labelled pairs), at the cost of pairing different photos of one kind of thing. Pairs at >=
0.9999 (the same pixels, or nearly) are reported as exact.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tqdm import tqdm

from ris.client.client import RisClient
from ris.client.config import ClientConfig
from ris.client.types import IngestItem, QueryLike

DEFAULT_THRESHOLD = 0.91
EXACT_SCORE = 0.9999
DEFAULT_NEIGHBOURS = 10  # hits per item searched: the largest group size found from one item
PAGE_SIZE = 64  # items per listing page = vector queries per Search call
DUPLICATE_OF_KEY = "ris.duplicate_of"
DUPLICATE_SCORE_KEY = "ris.duplicate_score"


@dataclass(frozen=True)
class DuplicatePair:
    a: str  # a < b
    b: str
    score: float


@dataclass
class DuplicateGroup:
    ids: list[str]
    pairs: list[DuplicatePair] = field(default_factory=list)  # best first

    @property
    def exact(self) -> bool:
        return all(p.score >= EXACT_SCORE for p in self.pairs)

    def as_dict(self) -> dict[str, object]:
        return {
            "ids": self.ids,
            "kind": "exact" if self.exact else "near",
            "pairs": [dataclasses.asdict(p) for p in self.pairs],
        }


def duplicate_pairs(
    ris: RisClient,
    collection: str,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    neighbours: int = DEFAULT_NEIGHBOURS,
    page_size: int = PAGE_SIZE,
    show_progress: bool = False,
) -> Iterator[DuplicatePair]:
    """Every pair scoring >= threshold, found from either side (so a pair may come twice)."""
    total = ris.count(collection) if show_progress else None
    token = ""
    with tqdm(total=total, unit="item", desc="dedup", disable=not show_progress) as bar:
        while True:
            page = ris.list_items_page(
                collection, page_size=page_size, page_token=token, include_vectors=True
            )
            items = [i for i in page.items if i.vector]
            queries: list[QueryLike] = [i.vector for i in items if i.vector]
            results = (
                ris.search_batch(
                    collection,
                    queries,
                    top_k=neighbours + 1,  # + the item itself
                    expansion=False,
                    space="raw",
                )
                if queries
                else []
            )
            for item, result in zip(items, results, strict=True):
                for hit in result.hits:
                    if hit.id != item.id and hit.similarity >= threshold:
                        a, b = sorted((item.id, hit.id))
                        yield DuplicatePair(a, b, round(hit.similarity, 6))
            bar.update(len(page.items))
            if not page.next_page_token:
                return
            token = page.next_page_token


def group_pairs(pairs: Iterable[DuplicatePair]) -> list[DuplicateGroup]:
    """Connected components of the pairs (union-find), largest first, each pair once."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    best: dict[tuple[str, str], float] = {}
    for p in pairs:
        key = (p.a, p.b)
        best[key] = max(best.get(key, p.score), p.score)
        ra, rb = find(p.a), find(p.b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, DuplicateGroup] = {}
    for (a, b), score in best.items():
        group = groups.setdefault(find(a), DuplicateGroup(ids=[]))
        group.pairs.append(DuplicatePair(a, b, score))
    for group in groups.values():
        group.ids = sorted({x for p in group.pairs for x in (p.a, p.b)})
        group.pairs.sort(key=lambda p: (-p.score, p.a, p.b))
    return sorted(groups.values(), key=lambda g: (-len(g.ids), g.ids))


def find_duplicates(
    ris: RisClient,
    collection: str,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    neighbours: int = DEFAULT_NEIGHBOURS,
    show_progress: bool = False,
) -> list[DuplicateGroup]:
    """Groups of items that score >= threshold with another member, largest first."""
    pairs = duplicate_pairs(
        ris, collection, threshold, neighbours=neighbours, show_progress=show_progress
    )
    return group_pairs(pairs)


# -- at ingest -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScreenedDuplicate:
    id: str
    duplicate_of: str
    score: float


class DuplicateScreen:
    """Screens items before ingest against what the collection already holds: a near-duplicate
    is left out (``flag=False``) or stored with ``ris.duplicate_of`` / ``ris.duplicate_score``
    metadata. Costs one more embedding per image (the query). Items are compared with what is
    stored when they are screened, so copies inside one ingest call are not compared with each
    other: ``ris dedup`` finds those afterwards."""

    def __init__(
        self,
        ris: RisClient,
        collection: str,
        threshold: float = DEFAULT_THRESHOLD,
        *,
        flag: bool = False,
        chunk_size: int = 32,
    ) -> None:
        self.ris = ris
        self.collection = collection
        self.threshold = threshold
        self.flag = flag
        self.chunk_size = chunk_size
        self.found: list[ScreenedDuplicate] = []

    def filter(self, items: Iterable[IngestItem]) -> Iterator[IngestItem]:
        chunk: list[IngestItem] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= self.chunk_size:
                yield from self._screen(chunk)
                chunk = []
        yield from self._screen(chunk)

    def _screen(self, chunk: list[IngestItem]) -> Iterator[IngestItem]:
        queries: list[QueryLike] = []
        searchable: list[IngestItem] = []
        for item in chunk:
            data = _image_bytes(item)
            if data is not None:
                queries.append(data)
                searchable.append(item)
        results = (
            self.ris.search_batch(
                self.collection,
                queries,
                top_k=2,  # the item itself when it is re-sent under its own id
                expansion=False,
                space="raw",
            )
            if queries
            else []
        )
        match: dict[int, ScreenedDuplicate] = {}
        for item, result in zip(searchable, results, strict=True):
            others = [h for h in result.hits if h.id != item.id and h.similarity >= self.threshold]
            if others:
                match[id(item)] = ScreenedDuplicate(item.id, others[0].id, others[0].similarity)
        for item in chunk:
            dup = match.get(id(item))
            if dup is None:
                yield item
                continue
            self.found.append(dup)
            if self.flag:
                metadata = {
                    **item.metadata,
                    DUPLICATE_OF_KEY: dup.duplicate_of,
                    DUPLICATE_SCORE_KEY: f"{dup.score:.4f}",
                }
                yield dataclasses.replace(item, metadata=metadata)


def _image_bytes(item: IngestItem) -> bytes | None:
    """The item's image, or None for a server-side path (not screened) or an unreadable file
    (which ingest then reports)."""
    if item.data is not None:
        return item.data
    if item.path is None:
        return None
    try:
        return item.path.read_bytes()
    except OSError:
        return None


# -- `ris dedup` -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("collection")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"lowest score of a duplicate pair (COSINE similarity; default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--neighbours",
        type=int,
        default=DEFAULT_NEIGHBOURS,
        help="hits searched per item (bounds the group size seen from one item)",
    )
    parser.add_argument("--json", action="store_true", help="print the groups as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace, config: ClientConfig) -> int:
    with RisClient(config) as ris:
        groups = find_duplicates(
            ris,
            args.collection,
            args.threshold,
            neighbours=args.neighbours,
            show_progress=not args.no_progress,
        )
    if args.json:
        print(json.dumps([g.as_dict() for g in groups], indent=2))
        return 0
    for n, group in enumerate(groups, start=1):
        kind = "exact" if group.exact else "near"
        print(f"group {n}: {len(group.ids)} items, {kind} duplicates")
        for pair in group.pairs:
            print(f"  {pair.score:.4f}  {pair.a}  {pair.b}")
    items = sum(len(g.ids) for g in groups)
    print(f"{len(groups)} groups, {items} items (threshold {args.threshold})")
    return 0
