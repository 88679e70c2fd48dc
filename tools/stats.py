"""Latency percentiles, the one summary every benchmark, soak and load report prints."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

QUANTILES = (50, 95, 99)


def percentiles_ms(
    seconds: Sequence[float], quantiles: Sequence[int] = QUANTILES
) -> dict[str, float]:
    """n, the ``quantiles`` (keys p50, p95, ...), mean and max in milliseconds of latencies in
    seconds ({} for none)."""
    if not len(seconds):
        return {}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "n": float(ms.size),
        **{f"p{q}": float(np.percentile(ms, q)) for q in quantiles},
        "mean": float(ms.mean()),
        "max": float(ms.max()),
    }
