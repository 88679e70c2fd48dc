"""Embeddings that add what the classifier knows to the pooled visual features.

GeM features alone retrieve Caltech well but miss ImageNet photos of the same class shot
differently (recall@1 0.35 on the Towhee queries); the classifier's softmax of the same pass
gets 0.71 there and loses on Caltech. `semantic_concat` keeps both: [l2n(gem), w * softmax].
The softmax part is not normalised, so it weighs as much as the classifier is sure, and its dot
product with another image's is the probability that both show the same ImageNet class: the
cosine of two embeddings is (gem . gem' + w^2 p . p') / norms. Measured by cross-validation in
scripts/retrieval_cv.py (docs/results/retrieval_cv.md).
"""

from __future__ import annotations

import numpy as np

SEMANTIC_POOLING = "gem_softmax"  # the config value


def semantic_label(weight: float, temperature: float) -> str:
    """The pooling part of the embedding version, e.g. `gem3+softmax-t1-w0.7`: another weight
    or temperature is another embedding space."""
    return f"gem3+softmax-t{temperature:g}-w{weight:g}"


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def semantic_concat(
    gem: np.ndarray, logits: np.ndarray, weight: float, temperature: float
) -> np.ndarray:
    """Unit rows [l2n(gem), weight * softmax(logits / temperature)], renormalised ([N, C+K])."""
    parts = np.hstack([_unit(gem), weight * softmax(logits, temperature)])
    return _unit(parts).astype(np.float32)
