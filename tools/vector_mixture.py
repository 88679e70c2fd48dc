"""Synthetic embeddings that look like real ones, for vector-store benchmarks at sizes no photo
set reaches: a Gaussian mixture fitted to real embeddings in their PCA basis.

Fit: centre the real vectors, keep the top ``dims`` principal axes, cluster the projections
with k-means (``components`` clusters, numpy Lloyd iterations) and give each cluster its weight,
mean and per-axis variance (a diagonal mixture fitted by hard EM); the variance left outside the
kept axes becomes isotropic noise. Sample: pick a cluster by weight, draw its Gaussian, map back
to 2048-d, add the residual noise, normalise (the served embeddings are unit length).

Why check it: ANN recall depends on how crowded a query's neighbourhood is, so the synthetic
set must have the real set's nearest-neighbour distances at the same size;
``nn_distance_quantiles`` gives both for the benchmark to print side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Mixture:
    """A diagonal Gaussian mixture in a PCA basis, plus isotropic residual noise."""

    mean: np.ndarray  # (D,) centre of the real vectors
    axes: np.ndarray  # (dims, D) principal axes, orthonormal rows
    weights: np.ndarray  # (C,) cluster probabilities
    centres: np.ndarray  # (C, dims) cluster means in PCA coordinates
    spreads: np.ndarray  # (C, dims) cluster standard deviations per axis
    residual: float  # standard deviation per dimension outside the kept axes

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` unit vectors drawn from the mixture (memory: count x D float32)."""
        picks = rng.choice(len(self.weights), size=count, p=self.weights)
        z = self.centres[picks] + self.spreads[picks] * rng.standard_normal(
            (count, self.axes.shape[0]), dtype=np.float32
        )
        x = z @ self.axes + self.mean
        x += rng.standard_normal((count, self.dim), dtype=np.float32) * self.residual
        return normalise(x)


def fit_mixture(
    real: np.ndarray, dims: int = 256, components: int = 350, seed: int = 0, iterations: int = 25
) -> Mixture:
    """Fit the mixture to ``real`` (n x D unit vectors; n comfortably above ``components``)."""
    x = np.asarray(real, np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    dims = min(dims, vt.shape[0])
    axes = vt[:dims]
    z = centred @ axes.T
    total = float((centred**2).sum())
    kept = float((singular[:dims] ** 2).sum())
    residual = float(np.sqrt(max(total - kept, 0.0) / len(x) / max(x.shape[1] - dims, 1)))
    labels = _kmeans(z, min(components, len(x) // 4 or 1), seed, iterations)
    clusters = np.unique(labels)
    weights = np.array([np.mean(labels == c) for c in clusters])
    centres = np.stack([z[labels == c].mean(axis=0) for c in clusters])
    floor = float(np.sqrt(z.var(axis=0)).mean()) * 0.05  # a singleton cluster still spreads
    spreads = np.stack(
        [np.maximum(z[labels == c].std(axis=0), floor) if np.sum(labels == c) > 1 else
         np.full(dims, floor) for c in clusters]
    )  # fmt: skip
    return Mixture(
        mean=mean.astype(np.float32),
        axes=axes.astype(np.float32),
        weights=weights / weights.sum(),
        centres=centres.astype(np.float32),
        spreads=spreads.astype(np.float32),
        residual=residual,
    )


def _kmeans(z: np.ndarray, k: int, seed: int, iterations: int) -> np.ndarray:
    """Cluster labels by Lloyd's algorithm from k-means++ seeds (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    centres = [z[rng.integers(len(z))]]
    nearest = ((z - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        centres.append(z[rng.choice(len(z), p=nearest / nearest.sum())])
        nearest = np.minimum(nearest, ((z - centres[-1]) ** 2).sum(axis=1))
    c = np.stack(centres)
    labels = np.zeros(len(z), dtype=np.int64)
    for _ in range(iterations):
        d = (z**2).sum(1)[:, None] - 2 * z @ c.T + (c**2).sum(1)[None, :]
        labels = d.argmin(axis=1)
        for j in range(k):
            members = z[labels == j]
            if len(members):
                c[j] = members.mean(axis=0)
    return labels


def nn_distances(vectors: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Each unit vector's Euclidean distance to its nearest other vector in the set."""
    v = np.asarray(vectors, np.float32)
    out = np.empty(len(v), dtype=np.float32)
    for start in range(0, len(v), chunk):
        sims = v[start : start + chunk] @ v.T
        rows = np.arange(start, min(start + chunk, len(v)))
        sims[rows - start, rows] = -np.inf  # not itself
        best = sims.max(axis=1)
        out[start : start + chunk] = np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0))
    return out


def nn_distance_quantiles(vectors: np.ndarray) -> dict[str, float]:
    """Quantiles (QUANTILES) of the nearest-neighbour distances within ``vectors``."""
    d = nn_distances(vectors)
    return {f"q{round(q * 100):02d}": float(np.quantile(d, q)) for q in QUANTILES}
