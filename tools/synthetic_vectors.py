"""Synthetic vector collections of any size, in seeded chunks, and their exact top-k.

The real embeddings come first, then either noisy copies of them or samples of a mixture fitted
to them (ris.tools.vector_mixture); chunk c is always the same rows, so every store gets the
same collection while only one chunk is in memory, and the exact cosine top-k ground truth is
computed over the same chunks. Used by scripts/bench_vector_store.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ris.tools.vector_mixture import Mixture

CHUNK_ROWS = 1000  # rows per generated chunk and per insert call: 8 MB at 2048-d


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Dataset:
    """N rows: the real base vectors first, then noisy copies; chunk c is always the same rows."""

    base: np.ndarray  # real vectors, normalised
    size: int
    noise: float  # expected norm of the noise added to a unit vector
    seed: int

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])

    def chunk(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of rows [index*CHUNK_ROWS, ...) (the last chunk may be shorter)."""
        start = index * CHUNK_ROWS
        stop = min(start + CHUNK_ROWS, self.size)
        ids = np.arange(start, stop, dtype=np.int64)
        rng = np.random.default_rng([self.seed, index])
        real = ids[ids < len(self.base)]
        rows = [self.base[real]] if len(real) else []
        synthetic = len(ids) - len(real)
        if synthetic:
            picks = rng.integers(0, len(self.base), synthetic)
            sigma = self.noise / math.sqrt(self.dim)
            noise = rng.standard_normal((synthetic, self.dim), dtype=np.float32) * sigma
            rows.append(_normalise(self.base[picks] + noise))
        return ids, np.concatenate(rows)

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for index in range(math.ceil(self.size / CHUNK_ROWS)):
            yield self.chunk(index)


@dataclass(frozen=True)
class MixtureDataset:
    """N rows: the real base vectors first, then draws from a mixture fitted to them; chunk c is
    always the same rows (seeded by (seed, c))."""

    base: np.ndarray  # real vectors, normalised
    size: int
    mixture: Mixture
    seed: int

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])

    def chunk(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        start = index * CHUNK_ROWS
        stop = min(start + CHUNK_ROWS, self.size)
        ids = np.arange(start, stop, dtype=np.int64)
        real = ids[ids < len(self.base)]
        rows = [self.base[real]] if len(real) else []
        if len(ids) > len(real):
            rng = np.random.default_rng([self.seed, index])
            rows.append(self.mixture.sample(len(ids) - len(real), rng))
        return ids, np.concatenate(rows)

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for index in range(math.ceil(self.size / CHUNK_ROWS)):
            yield self.chunk(index)


def make_queries(seeds: np.ndarray, count: int, noise: float, seed: int) -> np.ndarray:
    """``count`` queries: held-out real vectors (cycled) plus noise, normalised."""
    rng = np.random.default_rng([seed, 1_000_003])
    picks = seeds[np.arange(count) % len(seeds)]
    if noise == 0:
        return _normalise(picks)
    sigma = noise / math.sqrt(seeds.shape[1])
    return _normalise(picks + rng.standard_normal(picks.shape, dtype=np.float32) * sigma)


def exact_top_k(data: Dataset | MixtureDataset, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact cosine top-k ids per query (vectors are unit length, so inner product)."""
    best_ids = np.full((len(queries), 0), -1, dtype=np.int64)
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    for ids, vectors in data.chunks():
        scores = np.concatenate([best_scores, queries @ vectors.T], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(ids, (len(queries), len(ids)))], 1)
        keep = min(k, scores.shape[1])
        part = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        best_scores = np.take_along_axis(scores, part, 1)
        best_ids = np.take_along_axis(all_ids, part, 1)
    order = np.argsort(-best_scores, axis=1)
    return np.take_along_axis(best_ids, order, 1)
