"""Stored vectors by (collection, id), kept in the search service's memory on Milvus Lite.

Why: the near-duplicate guard reads the raw vectors of a query's top 100 hits and augmentation
reads neighbours' raw vectors on every write; on Milvus Lite each read of 100 3048-d vectors
costs ~25 ms of Python conversion, which doubled search latency. Lite has one owner (this
process writes every row), so a cache invalidated by this process's own writes is exact; on a
server other replicas write too, and the store does not use it.

Exactness under concurrency: every write bumps the collection's generation before it goes to
Milvus; a reader notes the generation before its read and stores what it read only if no write
happened meanwhile, so a vector read before a concurrent write never outlives it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np


class VectorCache:
    """A bounded LRU of vectors (``max_bytes`` of them at most)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._generation: dict[str, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def generation(self, name: str) -> int:
        with self._lock:
            return self._generation.get(name, 0)

    def get_many(self, name: str, ids: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str]]:
        """(the cached vectors, the ids not cached)."""
        found: dict[str, np.ndarray] = {}
        missing: list[str] = []
        with self._lock:
            for item in ids:
                vector = self._vectors.get((name, item))
                if vector is None:
                    missing.append(item)
                else:
                    self._vectors.move_to_end((name, item))
                    found[item] = vector
        return found, missing

    def put_many(self, name: str, vectors: dict[str, np.ndarray], generation: int) -> None:
        """Keep what was read at ``generation``, unless a write to ``name`` came since."""
        with self._lock:
            if self._generation.get(name, 0) != generation:
                return
            for item, vector in vectors.items():
                key = (name, item)
                self._drop(key)
                self._vectors[key] = vector
                self._bytes += vector.nbytes
            while self._bytes > self.max_bytes and self._vectors:
                self._drop(next(iter(self._vectors)))  # the least recently used

    def invalidate(self, name: str, ids: Iterable[str]) -> None:
        """Before a write of ``ids`` to ``name``: forget them, and void reads in flight."""
        with self._lock:
            self._generation[name] = self._generation.get(name, 0) + 1
            for item in ids:
                self._drop((name, item))

    def forget(self, name: str) -> None:
        """A dropped collection: every vector of it."""
        with self._lock:
            self._generation[name] = self._generation.get(name, 0) + 1
            for key in [k for k in self._vectors if k[0] == name]:
                self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        """Forget one vector, if cached, and its bytes (the caller holds the lock)."""
        old = self._vectors.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
