"""The off-line neighbour search the 1M prefill uses: close to exact, itself first."""

from __future__ import annotations

import numpy as np

from ris.tools.partitioned_knn import (
    buckets,
    centres_from,
    exact_knn,
    partitioned_knn,
    recall_at_k,
)


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit rows around 30 random directions: neighbours mostly share a cluster, some straddle."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((30, dim))
    x = means[rng.integers(0, 30, n)] + 0.9 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_neighbours_match_exact_search_and_start_with_the_row_itself() -> None:
    x = _clustered(3000, 32, seed=1)
    centres = centres_from(x, 12, seed=1)
    ids, sims = partitioned_knn(x, centres, k=4, probes=2)
    exact = np.argsort(-(x @ x.T), axis=1)[:, :4]
    np.testing.assert_array_equal(exact_knn(x, np.arange(3000), 4), exact)
    assert ids.shape == sims.shape == (3000, 4)
    np.testing.assert_array_equal(ids[:, 0], np.arange(3000))
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # best first
    np.testing.assert_allclose(sims, np.take_along_axis(x @ x.T, ids, axis=1), atol=1e-5)
    two = recall_at_k(ids, exact)
    one = recall_at_k(partitioned_knn(x, centres, k=4, probes=1)[0], exact)
    everything = recall_at_k(partitioned_knn(x, centres, k=4, probes=50)[0], exact)
    assert everything == 1.0  # more probes than buckets: every bucket, exact
    assert 0.9 <= one < two <= 1.0  # a second bucket finds what straddles the boundary


def test_centres_are_unit_and_spread_rows_over_every_bucket() -> None:
    x = _clustered(2000, 16, seed=2)
    centres = centres_from(x, 10, seed=2)
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-5)
    home = buckets(x, centres, 1)[:, 0]
    sizes = np.bincount(home, minlength=10)
    assert sizes.min() > 0 and sizes.max() < 0.5 * len(x)
    np.testing.assert_array_equal(home, np.argmax(x @ centres.T, axis=1))


def test_recall_counts_shared_members_whatever_their_order() -> None:
    exact = np.array([[0, 1, 2], [3, 4, 5]])
    assert recall_at_k(np.array([[2, 1, 0], [3, 9, 8]]), exact) == 4 / 6
