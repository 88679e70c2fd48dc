"""The IVF default nprobe chosen over folds of nprobe sweeps, not on one collection.

Why: one sweep (1M rows, 2048-d) said nprobe 16 suffices; another (100k rows, 3048-d) needed
48. The default is ``indexing.nprobe_for``: min(nlist/8, ceil(c·√nlist)), at least 8.
Each fold (one store, size, dimension, seed and index of a ``bench_vector_store`` JSON) says
the smallest nprobe it measured that reaches its target, min(``target``, its own ceiling -
``tolerance``) (IVF_SQ8's quantisation caps it below 1); c is the smallest that meets every
fold; leave-one-fold-out says whether a c chosen without a fold would have met it, and
sweeps run after the choice check it on folds that took no part.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from ris.search.indexing import nprobe_for
from ris.tools.checkout import CHECKOUT

TARGET = 0.98
TOLERANCE = 0.01
RESULTS = CHECKOUT / "docs" / "results"
# The sweeps the service's constant was chosen on (docs/benchmarks.md, "Default IVF nprobe,
# chosen over folds").
FOLD_RESULTS = tuple(
    RESULTS / f"bench_vs_mixture_{name}.json"
    for name in (
        "10k_server",
        "100k",
        "1m_ivf_sq8",
        "1m_nprobe",
        "nprobe_folds_seed1",
        "nprobe_folds_seed2_gem",
    )
)
# Swept after the constant was chosen (new draws, the served 3048-d): it took no part in it.
HELD_OUT_RESULTS = (RESULTS / "bench_vs_mixture_nprobe_heldout_seed3.json",)


def reaches(recall: float, bar: float) -> bool:
    """Recall at or above the bar, allowing float noise in JSON means (0.98 read as 0.9799...)."""
    return recall >= bar - 1e-9


@dataclass(frozen=True)
class Fold:
    """One recall-against-nprobe curve: what a default must serve."""

    source: str
    store: str
    rows: int
    dim: int
    seed: int
    index: str
    nlist: int
    curve: tuple[tuple[int, float], ...]  # (nprobe, recall@k), nprobe ascending

    @property
    def name(self) -> str:
        return f"{self.store} {self.rows} {self.dim}-d seed {self.seed} {self.index}"

    def threshold(self, target: float = TARGET, tolerance: float = TOLERANCE) -> float:
        return min(target, max(r for _, r in self.curve) - tolerance)

    def needed(self, target: float = TARGET, tolerance: float = TOLERANCE) -> int:
        """The smallest measured nprobe reaching the threshold (its need lies at or below it)."""
        bar = self.threshold(target, tolerance)
        return next(p for p, r in self.curve if reaches(r, bar))

    def recall_at(self, nprobe: int) -> float:
        """Recall at ``nprobe``, linear between measured points, held past the ends."""
        points = self.curve
        if nprobe <= points[0][0]:
            return points[0][1]
        for (p0, r0), (p1, r1) in pairwise(points):
            if nprobe <= p1:
                return r0 + (r1 - r0) * (nprobe - p0) / (p1 - p0)
        return points[-1][1]


def folds_from(result: dict[str, Any], source: str) -> list[Fold]:
    """The IVF curves of one ``bench_vector_store`` JSON; folds of fewer than 3 points (no
    sweep to speak of) are left out."""
    curves: dict[tuple[str, int, str, int], dict[int, float]] = {}
    for row in result.get("results", []):
        nprobe = row.get("params", {}).get("nprobe")
        if not row["index"].startswith("IVF_") or row["index"] == "IVF_PQ" or nprobe is None:
            continue
        key = (row["store"], int(row["rows"]), row["index"], int(row["build_params"]["nlist"]))
        curves.setdefault(key, {})[int(nprobe)] = float(row["recall"])
    seed = int(result.get("args", {}).get("seed", 0))
    return [
        Fold(source, store, rows, int(result["dim"]), seed, index, nlist, tuple(sorted(c.items())))
        for (store, rows, index, nlist), c in curves.items()
        if len(c) >= 3
    ]


def rule(nlist: int, scale: float) -> int:
    """The service's rule at ``scale``; an infinite scale is the nlist/8 cap alone."""
    return nprobe_for(nlist, scale=scale if math.isfinite(scale) else 1e9)


def load_folds(paths: Iterable[Path], stores: Collection[str] = ("server",)) -> list[Fold]:
    """The folds of ``bench_vector_store`` JSON files, those of ``stores`` only."""
    return [
        f
        for path in paths
        for f in folds_from(json.loads(path.read_text()), path.name)
        if f.store in stores
    ]


def scale_needed(fold: Fold, target: float = TARGET, tolerance: float = TOLERANCE) -> float:
    """The smallest c whose rule reaches the fold's need (inf if nlist/8 caps it below)."""
    need = fold.needed(target, tolerance)
    if rule(fold.nlist, math.inf) < need:
        return math.inf
    return need / math.sqrt(fold.nlist)


def round_up(value: float, step: float = 0.25) -> float:
    return math.ceil(value / step - 1e-9) * step if math.isfinite(value) else value


def choose_scale(
    folds: Sequence[Fold], target: float = TARGET, tolerance: float = TOLERANCE
) -> float:
    """The smallest c (in steps of 0.25) whose rule meets every fold (inf: the nlist/8 cap
    keeps one below its need whatever c)."""
    return round_up(max(scale_needed(f, target, tolerance) for f in folds))


@dataclass(frozen=True)
class FoldCheck:
    """A fold the scale was chosen without: the nprobe that scale gives it, and whether its
    recall there (interpolated between measured nprobes) reaches its bar."""

    fold: str
    nlist: int
    needed: int
    threshold: float
    scale: float
    nprobe: int
    recall: float
    met: bool


def check(
    fold: Fold, scale: float, target: float = TARGET, tolerance: float = TOLERANCE
) -> FoldCheck:
    nprobe = rule(fold.nlist, scale)
    recall = fold.recall_at(nprobe)
    bar = fold.threshold(target, tolerance)
    needed = fold.needed(target, tolerance)
    return FoldCheck(
        fold.name, fold.nlist, needed, bar, scale, nprobe, recall, reaches(recall, bar)
    )


def leave_one_out(
    folds: Sequence[Fold], target: float = TARGET, tolerance: float = TOLERANCE
) -> list[FoldCheck]:
    """Each fold checked at the scale all the others choose."""
    return [
        check(
            fold, choose_scale([*folds[:i], *folds[i + 1 :]], target, tolerance), target, tolerance
        )
        for i, fold in enumerate(folds)
    ]


def report(
    folds: Iterable[Fold],
    target: float = TARGET,
    tolerance: float = TOLERANCE,
    held_out: Iterable[Fold] = (),
    service_scale: float | None = None,
) -> dict[str, Any]:
    """Everything the script prints and writes: per fold, the choice, leave-one-out, and folds
    that took no part in the choice checked at the service's scale (or the chosen one)."""
    folds = list(folds)
    scale = choose_scale(folds, target, tolerance)
    at = scale if service_scale is None else service_scale
    chosen = [check(f, scale, target, tolerance) for f in folds]
    return {
        "target": target,
        "tolerance": tolerance,
        "chosen_scale": scale,
        "folds": [
            {
                **asdict(f),
                "threshold": c.threshold,
                "needed": c.needed,
                "scale_needed": scale_needed(f, target, tolerance),
                "nprobe_chosen": c.nprobe,
                "recall_chosen": c.recall,
            }
            for f, c in zip(folds, chosen, strict=True)
        ],
        "leave_one_out": [asdict(c) for c in leave_one_out(folds, target, tolerance)],
        "held_out": [asdict(check(f, at, target, tolerance)) for f in held_out],
    }
