"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) of a query's top K, bounded in cost.

Two items are k-reciprocal neighbours when each is among the other's k1 nearest; an item whose
neighbourhood overlaps the query's (Jaccard over exp(-distance) weights) is likely of the same
class even when its own cosine is lower. Here the graph is local: the query and its top K only
(K small, so one (K+1)^2 similarity matrix per query), which is what a search service could do
with one Get of the K hits' vectors. Offline only: scripts/retrieval_cv.py found no held-out
gain (docs/results/retrieval_cv.md), so the service does not re-rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RerankSettings:
    top_k: int = 20  # candidates re-ranked; 0 = off
    k1: int = 6  # reciprocal-neighbour size
    lambda_: float = 0.3  # weight of the original distance in the final one

    @property
    def enabled(self) -> bool:
        return self.top_k > 1


def _reciprocal(order: np.ndarray, i: int, k: int) -> np.ndarray:
    """Nodes j among i's k nearest that have i among their k nearest (i itself included)."""
    forward = order[i, : k + 1]
    back = order[forward, : k + 1]
    return forward[np.any(back == i, axis=1)]


def rerank(
    query: np.ndarray, candidates: np.ndarray, similarities: np.ndarray, settings: RerankSettings
) -> tuple[np.ndarray, np.ndarray]:
    """New order of the candidates (indices into them) and their blended similarities.

    `candidates` are unit vectors [K, C] in the order searched, `similarities` their cosines
    with the (unit) query. Returned similarity = 1 - ((1 - lambda) * Jaccard distance +
    lambda * cosine distance), descending.
    """
    n = len(candidates)
    if n < 2:
        return np.arange(n), np.asarray(similarities, dtype=np.float64)
    nodes = np.vstack([query[None, :], candidates]).astype(np.float64)
    sim = nodes @ nodes.T
    dist = np.clip(1.0 - sim, 0.0, 2.0)
    order = np.argsort(dist, axis=1, kind="stable")
    k1 = min(settings.k1, n)
    half = max(1, round(k1 / 2))
    weights = np.zeros_like(dist)
    for i in range(n + 1):
        rec = _reciprocal(order, i, k1)
        expanded = set(rec.tolist())
        for j in rec:
            cand = _reciprocal(order, int(j), half)
            if len(np.intersect1d(cand, rec)) > 2.0 / 3.0 * len(cand):
                expanded.update(cand.tolist())
        members = np.fromiter(expanded, dtype=np.int64)
        w = np.exp(-dist[i, members])
        weights[i, members] = w / w.sum()
    overlap = np.minimum(weights[0][None, :], weights[1:]).sum(axis=1)
    union = np.maximum(weights[0][None, :], weights[1:]).sum(axis=1)
    jaccard = 1.0 - overlap / np.maximum(union, 1e-12)
    original = 1.0 - np.asarray(similarities, dtype=np.float64)
    final = (1.0 - settings.lambda_) * jaccard + settings.lambda_ * original
    new_order = np.argsort(final, kind="stable")
    return new_order, 1.0 - final[new_order]
