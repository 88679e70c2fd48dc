"""Database-side augmentation (DBA): each stored item becomes a blend of itself and its top-n
nearest items, so an item's vector leans towards its own cluster (Arandjelovic & Zisserman 2012;
the alpha-weighted form of Radenovic et al. 2018). Queries stay raw embeddings.

On Caltech-101 it lifted mAP@10 from 0.847 to 0.875 with alpha query expansion
(docs/results/quality.md). The raw embeddings live in the companion collection ``<name>__raw``;
every stored item keeps the ids and similarities of the neighbours it was blended from.

Kept current incrementally. After a write (new or replaced items) or a delete, an existing item
is re-blended when a changed item was one of its neighbours (searched again), or a new item is
more similar to it than its weakest neighbour (merged into its list, no search). Those items are
found among the top ``REVERSE_K`` raw neighbours of each changed vector (old and new): an item
whose top-n holds x is almost always among x's top-16 too (the usual reverse-neighbour
approximation; tests compare with a full offline recompute).

Replicas. The write lock is per process, so two search services writing one collection on a
Milvus server can each compute blends without the other's newest items, or overwrite a blend the
other just made better. So on a server every write ends with a check (``settle``): each row it
upserted is read back, its neighbourhood searched again in the raw twin (Strong reads), and any
row whose stored neighbour list differs is re-blended, then checked again (bounded rounds).
Why that suffices: raw rows are written before anything reads them and every read is Strong, so
the last writer to upsert a row checks it afterwards against a raw state holding every write
acknowledged before the check; a write landing after that check reads the row's final version
in its own refresh (and re-blends it if it must, then checks it itself). A blend whose raw row
is gone (deleted while this writer re-blended it) is deleted: deletes remove the raw row first.
Lite is one process (its file has a single owner), so it skips the check.

Reads that miss rows. On Milvus 2.3.5 a Strong read by ids that overlaps another client's upsert
can leave out rows that exist (seen: 3 of 14 asked for, with the other replica's upsert in
flight), and a row missed by refresh or settle is a blend nobody re-checks. So on a server the
ids such a read leaves out are read again (``REREAD_TRIES``) before their absence is believed:
an item whose blend is still absent then is being written by its own writer, who checks it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from ris.search.store import MilvusStore
from ris.search.store_schema import CollectionMeta, Record, Row

REVERSE_K = 16  # raw neighbours of a changed vector checked for holding it as a neighbour
BLEND_CHUNK = 1024  # staged items per blend (memory: 8 KiB each at 2048-d)
SETTLE_ROUNDS = 5  # re-check rounds after a write on a server (each one is rarely needed)
SIM_TOLERANCE = 1e-5  # stored similarities are rounded to 7 decimals
REREAD_TRIES = 3  # reads again of ids a server read left out (a concurrent upsert hides rows)
REREAD_DELAY_S = 0.05  # an upsert is in flight for ~10 ms

log = logging.getLogger(__name__)
V = TypeVar("V")
K = TypeVar("K")


def blend(
    own: np.ndarray, neighbours: Sequence[np.ndarray], sims: Sequence[float], alpha: float
) -> np.ndarray:
    """normalise(sum max(sim, 0)^alpha * unit(v)) over the neighbourhood (the item itself
    included, sim 1), scaled to the item's own norm (IP scores keep their scale)."""
    v = np.asarray(neighbours, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    weights = np.maximum(np.asarray(sims, dtype=np.float64), 0.0) ** alpha
    mixed = weights @ v
    norm = float(np.linalg.norm(mixed))
    if norm == 0.0:
        return np.asarray(own, dtype=np.float32)
    return (mixed / norm * float(np.linalg.norm(own))).astype(np.float32)


def with_self(item_id: K, hits: Sequence[tuple[K, float]], size: int) -> list[tuple[K, float]]:
    """The neighbourhood: the item itself first (sim 1) and its best ``size - 1`` others."""
    others = [(i, s) for i, s in hits if i != item_id]
    return [(item_id, 1.0), *others[: size - 1]]


class Augmenter:
    """Computes augmented rows; one per service, holding a write lock per collection (two
    writers re-blending the same neighbourhood at once would each miss the other's items)."""

    def __init__(self, store: MilvusStore) -> None:
        self.store = store
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def blend(self, meta: CollectionMeta, records: Sequence[Record]) -> int:
        """Write records (raw embeddings) to the raw twin, then to the collection blended with
        their neighbours, with the existing items they change re-blended; one neighbour search
        for all of them. Returns rows written to the collection."""
        with self.lock(meta.name):
            previous = self.store.raw_vectors(meta, [r.id for r in records])  # replaced ones
            self.store.upsert(meta.raw(), records)
            if self.store.is_lite:
                self.store.flush(meta.raw_name)  # Lite searches unflushed rows ~100 ms slower
            rows = self.refresh(meta, records, previous)
            written = self.store.upsert(meta, rows)
            self.settle(meta, [r.id for r in rows])
            return written

    def delete(self, meta: CollectionMeta, ids: Sequence[str] = (), expr: str = "") -> int:
        """Delete matching rows from both collections and re-blend the items that held them."""
        deleted = 0
        with self.lock(meta.name):
            for keys in self.store.matching_batches(meta.name, ids, expr):
                gone = self._raw(meta, keys)
                self.store.delete_keys(meta.raw_name, keys)  # raw first: see settle
                self.store.delete_keys(meta.name, keys)
                rows = self.refresh(meta, [], gone)
                self.store.upsert(meta, rows)
                self.settle(meta, [r.id for r in rows])
                deleted += len(keys)
        return deleted

    def refresh(
        self,
        meta: CollectionMeta,
        written: Sequence[Record],
        removed: Mapping[str, np.ndarray],
    ) -> list[Record]:
        """Rows to upsert after ``written`` (raw, already in the raw copy) arrived and the
        ``removed`` vectors (deleted items, or the old vectors of replaced ones) left: the written
        records blended, plus every existing item whose neighbourhood changed.

        An existing item that only gained newcomers merges them into its stored neighbour list
        (no search); one that lost a neighbour is searched again."""
        size = meta.augment_top_n + 1
        new_ids = {r.id for r in written}
        changed = new_ids | set(removed)
        probes = [np.asarray(r.vector, np.float32) for r in written] + list(removed.values())
        found = self._neighbours(meta, probes, max(size, REVERSE_K))
        newcomers: dict[str, dict[str, float]] = {}  # existing item -> {new item: similarity}
        for record, hits in zip(written, found, strict=False):
            for item_id, sim in hits:
                if item_id not in new_ids:
                    newcomers.setdefault(item_id, {})[record.id] = sim
        candidates = {i for hits in found for i, _ in hits} - new_ids
        hoods = {r.id: with_self(r.id, hits, size) for r, hits in zip(written, found, strict=False)}
        stale: list[Row] = []
        lost: list[Row] = []  # a neighbour left or moved: search again
        for row in self._rows(meta, sorted(candidates)):
            kept = _stored_hood(row)
            gained = newcomers.get(row.id, {})
            if kept is None or changed.intersection(i for i, _ in kept):
                stale.append(row)
                lost.append(row)
            elif gained and (len(kept) < size - 1 or max(gained.values()) > kept[-1][1]):
                stale.append(row)
                merged = sorted([*kept, *gained.items()], key=lambda p: p[1], reverse=True)
                hoods[row.id] = with_self(row.id, merged, size)
        raw = {r.id: np.asarray(r.vector, np.float32) for r in written}
        raw.update(self._raw(meta, [row.id for row in lost]))
        lost = [row for row in lost if row.id in raw]  # deleted meanwhile: nothing to blend
        again = self._neighbours(meta, [raw[row.id] for row in lost], size)
        hoods.update(
            {row.id: with_self(row.id, hits, size) for row, hits in zip(lost, again, strict=True)}
        )
        raw.update(self._raw(meta, _missing(hoods.values(), raw)))
        out = [Record(r.id, r.vector, r.label, r.uri, dict(r.metadata)) for r in written] + [
            Record(row.id, [], row.label, row.uri, dict(row.metadata))
            for row in stale
            if row.id in raw
        ]
        return self._blended(meta, out, hoods, raw)

    def settle(self, meta: CollectionMeta, ids: Sequence[str]) -> int:
        """On a server, check the rows just upserted against a fresh Strong search of their
        neighbourhoods and re-blend (or delete) the ones a concurrent writer made stale, until
        none is (at most SETTLE_ROUNDS rounds). Returns rows repaired."""
        if self.store.is_lite or not ids:
            return 0
        pending, repaired = sorted(set(ids)), 0
        for _ in range(SETTLE_ROUNDS):
            pending = self._repair(meta, pending)
            if not pending:
                return repaired
            repaired += len(pending)
            log.info(
                "collection %s: re-blended %d rows a concurrent writer left stale",
                meta.name,
                len(pending),
            )
        log.warning(
            "collection %s: %d blends still changing after %d checks (heavy concurrent "
            "writes); the next write near them re-checks them",
            meta.name,
            len(pending),
            SETTLE_ROUNDS,
        )
        return repaired

    def _repair(self, meta: CollectionMeta, ids: Sequence[str]) -> list[str]:
        """One check: ids of the rows re-blended or deleted because their stored neighbourhood
        no longer matches the raw twin's, and of those it could not read."""
        size = meta.augment_top_n + 1
        rows = self._rows(meta, ids)
        raw = self._raw(meta, ids)
        orphans = [r.id for r in rows if r.id not in raw]  # deleted while it was re-blended
        if orphans:
            self.store.delete_keys(meta.name, orphans)
        read = {r.id for r in rows}
        unseen = sorted(i for i in raw if i not in read)  # blend unread, raw there: next round
        rows = [r for r in rows if r.id in raw]
        found = self._neighbours(meta, [raw[r.id] for r in rows], size)
        hoods, stale = {}, []
        for row, hits in zip(rows, found, strict=True):
            hood = with_self(row.id, hits, size)
            if not _same_hood(_stored_hood(row), hood[1:]):
                hoods[row.id] = hood
                stale.append(Record(row.id, [], row.label, row.uri, dict(row.metadata)))
        self.store.upsert(meta, self._blended(meta, stale, hoods, raw))
        return orphans + unseen + [r.id for r in stale]

    def _rows(self, meta: CollectionMeta, ids: Sequence[str]) -> list[Row]:
        """Stored rows (with their neighbour lists) by id, ids left out read again."""
        read = self.store.get_all
        got = self._reread(
            ids, lambda some: {r.id: r for r in read(meta.name, some, include_augmentation=True)}
        )
        return list(got.values())

    def _raw(self, meta: CollectionMeta, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Raw embeddings by id, ids left out read again."""
        return self._reread(ids, lambda some: self.store.raw_vectors(meta, some))

    def _reread(
        self, ids: Sequence[str], read: Callable[[list[str]], Mapping[str, V]]
    ) -> dict[str, V]:
        """``read(ids)``; on a server, ``read`` again of the ids it left out, up to
        REREAD_TRIES times (see the module docstring: a concurrent upsert hides rows)."""
        found = dict(read(list(ids)))
        for _ in range(0 if self.store.is_lite else REREAD_TRIES):
            missing = sorted(set(ids) - found.keys())
            if not missing:
                break
            time.sleep(REREAD_DELAY_S)
            found.update(read(missing))
        return found

    def _blended(
        self,
        meta: CollectionMeta,
        out: list[Record],
        hoods: Mapping[str, list[tuple[str, float]]],
        raw: dict[str, np.ndarray],
    ) -> list[Record]:
        """``out`` with vectors blended from their neighbourhoods (raw vectors fetched as
        needed) and their augmentation fields set."""
        raw.update(self._raw(meta, _missing((hoods[r.id] for r in out), raw)))
        for record in out:
            hood = [(i, s) for i, s in hoods[record.id] if i in raw]
            record.vector = blend(
                raw[record.id], [raw[i] for i, _ in hood], [s for _, s in hood], meta.augment_alpha
            )
            record.augmentation = {
                "neighbours": [i for i, _ in hood[1:]],
                "sims": [round(s, 7) for _, s in hood[1:]],
            }
        return out

    def _neighbours(
        self, meta: CollectionMeta, vectors: Sequence[np.ndarray], top_k: int
    ) -> list[list[tuple[str, float]]]:
        """(id, similarity) of the top-k raw embeddings per vector, best first."""
        hits = self.store.search(meta.raw(), vectors, top_k, output_fields=["id"])
        return [[(h.id, h.score) for h in row] for row in hits]


def _stored_hood(row: Row) -> list[tuple[str, float]] | None:
    """The neighbours (without the item) and similarities a row was blended from; None when it
    was never blended (or the field was written by something else)."""
    info = row.augmentation if isinstance(row.augmentation, dict) else {}
    ids, sims = info.get("neighbours"), info.get("sims")
    if not isinstance(ids, list) or not isinstance(sims, list) or len(ids) != len(sims):
        return None
    try:
        return [(str(i), float(s)) for i, s in zip(ids, sims, strict=True)]
    except (TypeError, ValueError):
        return None


def _same_hood(stored: list[tuple[str, float]] | None, fresh: Sequence[tuple[str, float]]) -> bool:
    """The same neighbours with the same similarities (order among ties aside)."""
    if stored is None or len(stored) != len(fresh):
        return False
    want = dict(fresh)
    return all(i in want and abs(want[i] - s) <= SIM_TOLERANCE for i, s in stored)


def _missing(
    hoods: Iterable[list[tuple[str, float]]], known: Mapping[str, np.ndarray]
) -> list[str]:
    return sorted({i for hood in hoods for i, _ in hood if i not in known})
