"""Post-processing of retrieval descriptors: normalisation, PCA whitening, exhaustive search,
alpha query expansion and database-side augmentation (numpy, offline).

Used by scripts/retrieval_study.py and scripts/retrieval_cv.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------------------------
# Post-processing: normalisation, whitening, query expansion, database-side augmentation.
# ---------------------------------------------------------------------------------------------


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


_PCA_CACHE: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, eigenvalues descending, eigenvectors as columns) of the L2-normalised rows.

    Through the n x n Gram matrix (n < C here: cheaper than the C x C covariance), memoised:
    the grid fits the same data many times.
    """
    key = hashlib.sha1(x.tobytes()).digest()
    if key not in _PCA_CACHE:
        x = l2n(x)
        mean = x.mean(axis=0)
        xc = x - mean
        gram_val, gram_vec = np.linalg.eigh(xc @ xc.T)
        order = np.argsort(gram_val)[::-1]
        gram_val = np.maximum(gram_val[order], 0.0)
        keep = gram_val > gram_val[0] * 1e-12
        sing = np.sqrt(gram_val[keep])
        vecs = (xc.T @ gram_vec[:, order][:, keep]) / sing
        _PCA_CACHE[key] = (mean, sing**2 / max(1, len(x) - 1), vecs)
    return _PCA_CACHE[key]


@dataclass(frozen=True)
class Whitening:
    """PCA-whitening (Jégou & Chum 2012): centre, rotate, scale by eigval^-power, keep `dim`."""

    mean: np.ndarray
    proj: np.ndarray  # [dim, C]

    @classmethod
    def fit(cls, x: np.ndarray, dim: int, power: float = 0.5) -> Whitening:
        mean, eigval, eigvec = _pca(np.ascontiguousarray(x, dtype=np.float64))
        eigval, eigvec = np.maximum(eigval[:dim], 1e-9), eigvec[:, :dim]
        return cls(mean, (eigvec / eigval**power).T)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return l2n((l2n(x) - self.mean) @ self.proj.T)


def search(db: np.ndarray, q: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive top-k: indices and similarities (negative squared distance for L2)."""
    if metric == "l2":
        sim = -((q**2).sum(1)[:, None] - 2.0 * q @ db.T + (db**2).sum(1)[None, :])
    else:
        sim = q @ db.T
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sim, idx, axis=1)


def alpha_qe(db: np.ndarray, q: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """α-query expansion (Radenović et al.): q + Σ sim^α · top-n neighbours, renormalised."""
    idx, sim = search(db, q, n, "cos")
    w = np.maximum(sim, 0.0) ** alpha
    return l2n(q + np.einsum("qn,qnc->qc", w, db[idx]))


def dba(db: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Database-side augmentation: every item becomes its α-weighted top-n neighbourhood."""
    idx, sim = search(db, db, n + 1, "cos")  # includes itself with weight 1
    w = np.maximum(sim, 0.0) ** alpha
    return l2n(np.einsum("qn,qnc->qc", w, db[idx]))
