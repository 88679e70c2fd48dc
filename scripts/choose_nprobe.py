"""Choose the IVF default nprobe's scale over folds of nprobe sweeps, and check it held out.

Why: the default (``indexing.nprobe_for``, min(nlist/8, ceil(c·√nlist))) must serve
collections nobody tuned on; one sweep alone picks a c another collection falls short with.
Reads ``bench_vector_store`` JSONs (each store x size x index a fold), prints per fold the
smallest nprobe measured reaching min(target, its ceiling - tolerance), the c that meets every
fold, the service's c beside it, and leave-one-fold-out: the c the other folds choose, and the
held-out fold's recall there (interpolated between measured nprobes).

    python scripts/choose_nprobe.py --json docs/results/choose_nprobe.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ris.search.indexing import NPROBE_SQRT_SCALE
from ris.tools.bench import write_json
from ris.tools.nprobe_folds import (
    FOLD_RESULTS,
    HELD_OUT_RESULTS,
    TARGET,
    TOLERANCE,
    load_folds,
    report,
    rule,
)


def print_checks(title: str, checks: list[dict[str, Any]]) -> None:
    if not checks:
        return
    print(f"\n{title}; recall interpolated between measured nprobes:")
    for c in checks:
        print(
            f"  {c['fold']:<42} c {c['scale']:>5.2f} nprobe {c['nprobe']:>4} "
            f"recall {c['recall']:.3f} (bar {c['threshold']:.3f}) "
            f"{'met' if c['met'] else 'MISSED'}"
        )
    print(f"  missed: {sum(not c['met'] for c in checks)} of {len(checks)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "results",
        nargs="*",
        type=Path,
        default=list(FOLD_RESULTS),
        help="bench_vector_store JSON files (default: the sweeps the service's scale rests on)",
    )
    ap.add_argument(
        "--check",
        nargs="*",
        type=Path,
        default=list(HELD_OUT_RESULTS),
        help="sweeps kept out of the choice, checked at the service's scale",
    )
    ap.add_argument("--stores", default="server", help="stores whose folds count (lite,server)")
    ap.add_argument("--target", type=float, default=TARGET, help="recall@10 each fold must reach")
    ap.add_argument(
        "--tolerance", type=float, default=TOLERANCE, help="or within this of its own ceiling"
    )
    ap.add_argument("--json", dest="json_path", type=Path, default=None)
    args = ap.parse_args(argv)

    stores = set(args.stores.split(","))
    folds = load_folds(args.results, stores)
    if not folds:
        ap.error("no IVF sweep of 3 or more nprobe values in those files")
    held_out = load_folds(args.check, stores)
    result = report(folds, args.target, args.tolerance, held_out, NPROBE_SQRT_SCALE)
    head = ("nlist", "bar", "need", "c need", "chosen", "recall")
    print(f"{'fold':<42} " + " ".join(f"{h:>6}" for h in head))
    for f in result["folds"]:
        name = f"{f['store']} {f['rows']} {f['dim']}-d s{f['seed']} {f['index']}"
        print(
            f"{name:<42} {f['nlist']:>6} {f['threshold']:>6.3f} {f['needed']:>6} "
            f"{f['scale_needed']:>6.2f} {f['nprobe_chosen']:>6} {f['recall_chosen']:>6.3f}"
        )
    chosen = result["chosen_scale"]
    print(f"\nc meeting every fold: {chosen}; the service's: {NPROBE_SQRT_SCALE}")
    print("nprobe at nlist 400 / 837 / 1020 / 4000 / 16384:", end=" ")
    print(" / ".join(str(rule(n, chosen)) for n in (400, 837, 1020, 4000, 16384)))
    print_checks("leave one fold out (c chosen by the others)", result["leave_one_out"])
    print_checks(
        f"kept out of the choice, at the service's c {NPROBE_SQRT_SCALE}", result["held_out"]
    )
    result["service_scale"] = NPROBE_SQRT_SCALE
    result["inputs"] = [str(p) for p in args.results]
    result["checked"] = [str(p) for p in args.check]
    write_json(args.json_path, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
