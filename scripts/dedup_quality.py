"""Near-duplicate threshold study: precision and recall of `ris dedup` pairs on edited copies.

A collection holds imagenet-sample originals, one edited copy of each (the copy-detection edits
of scripts/copy_detection.py, the edit types taken in turn) and Caltech photos as distractors.
The true pairs are (original, its copy). Precision is over the pairs whose truth is known (any
pair with an imagenet photo or copy); pairs of two Caltech photos are counted apart, since the
set holds real duplicates (strict precision counts them as wrong too). The pairs come from
ris.cli.dedup.duplicate_pairs through the real services, once at a low threshold; each threshold
of the sweep keeps those above it.

    python scripts/dedup_quality.py --address 127.0.0.1:50052 --json docs/results/dedup.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ris.cli.dedup import duplicate_pairs
from ris.client import IngestItem, RisClient
from ris.client.config import DEFAULT_ADDRESS
from ris.tools.checkout import DATASETS
from ris.tools.copy_edits import EDITS, load_index, make_copy


def labelled(pair: tuple[str, str]) -> bool:
    """Pairs whose truth is known: any with an imagenet original or copy. Two Caltech photos
    may well be duplicates (the set holds exact and mirrored copies, and burst shots)."""
    return not all(x.startswith("caltech_") for x in pair)


def sweep(
    found: dict[tuple[str, str], float], truth: dict[tuple[str, str], str], thresholds: list[float]
) -> list[dict[str, float]]:
    """Per threshold: strict precision (every pair not (original, copy) is wrong), precision
    over labelled pairs only, recall, F1 (labelled)."""
    rows = []
    for t in thresholds:
        predicted = {p for p, s in found.items() if s >= t}
        tp = len(predicted & truth.keys())
        known = [p for p in predicted if labelled(p)]
        precision = tp / len(predicted) if predicted else 1.0
        precision_labelled = tp / len(known) if known else 1.0
        recall = tp / len(truth)
        f1 = 2 * precision_labelled * recall / (precision_labelled + recall) if tp else 0.0
        rows.append(
            {
                "threshold": round(t, 3),
                "pairs": len(predicted),
                "true_pairs": tp,
                "distractor_pairs": len(predicted) - len(known),
                "precision_strict": round(precision, 4),
                "precision": round(precision_labelled, 4),
                "recall": round(recall, 4),
                "f1": round(f1, 4),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", default=os.environ.get("RIS_ADDRESS", DEFAULT_ADDRESS))
    ap.add_argument("--collection", default="ris_dedup_quality")
    ap.add_argument("--imagenet", type=Path, default=DATASETS / "imagenet-sample")
    ap.add_argument("--caltech", type=Path, default=DATASETS / "caltech101-ris")
    ap.add_argument("--limit", type=int, default=330, help="originals (edits taken in turn)")
    ap.add_argument("--distractors", type=int, default=660)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--floor", type=float, default=0.6, help="lowest threshold of the sweep")
    ap.add_argument(
        "--choose",
        type=float,
        default=0.9,
        help="strict precision the default threshold must keep (the lowest such threshold)",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    originals, distractors = load_index(args.imagenet, args.caltech, args.limit, args.distractors)
    edits = list(EDITS)
    truth: dict[tuple[str, str], str] = {}
    items = [IngestItem(id=c.id, path=c.path, label=c.label) for c in [*originals, *distractors]]
    for n, original in enumerate(originals):
        edit = edits[n % len(edits)]
        copy_id = f"copy_{edit}_{n:04d}"
        data = make_copy(original.path.read_bytes(), edit, args.seed, original.id)
        items.append(IngestItem(id=copy_id, data=data, label=original.label))
        a, b = sorted((original.id, copy_id))
        truth[(a, b)] = edit

    with RisClient(address=args.address, timeout=600) as ris:
        ris.drop_collection(args.collection)
        info = ris.create_collection(args.collection)
        t0 = time.perf_counter()
        summary = ris.ingest(args.collection, items)
        ingest_s = time.perf_counter() - t0
        assert summary.failed == 0, summary.failures[:3]
        t0 = time.perf_counter()
        found: dict[tuple[str, str], float] = {}
        for p in duplicate_pairs(ris, args.collection, args.floor):
            found[(p.a, p.b)] = max(found.get((p.a, p.b), p.score), p.score)
        scan_s = time.perf_counter() - t0
        ris.drop_collection(args.collection)

    thresholds = [args.floor + i * 0.01 for i in range(round((1 - args.floor) / 0.01))]
    rows = sweep(found, truth, thresholds)
    best_f1 = max(rows, key=lambda r: (r["f1"], r["threshold"]))
    precise = [r for r in rows if r["precision_strict"] >= args.choose]
    chosen = min(precise, key=lambda r: r["threshold"]) if precise else best_f1
    t = chosen["threshold"]
    per_edit = {
        f"{at:.2f}": {
            e: round(
                sum(1 for p, ed in truth.items() if ed == e and found.get(p, -1) >= at)
                / max(1, sum(1 for ed in truth.values() if ed == e)),
                3,
            )
            for e in edits
        }
        for at in sorted({0.75, 0.8, 0.85, 0.9, t})
    }
    false_pos = sorted(
        ((s, a, b) for (a, b), s in found.items() if s >= t and (a, b) not in truth),
        key=lambda x: (labelled((x[1], x[2])), x[0]),
        reverse=True,
    )
    result = {
        "collection": {
            "originals": len(originals),
            "copies": len(originals),
            "distractors": len(distractors),
            "augmentation_top_n": info.augmentation_top_n,
            "vectors": "raw embeddings (space=raw)",
        },
        "seed": args.seed,
        "ingest_seconds": round(ingest_s, 1),
        "scan_seconds": round(scan_s, 1),
        "sweep": rows,
        "best_f1": best_f1,
        "chosen": {
            **chosen,
            "rule": f"lowest threshold with strict precision >= {args.choose}",
        },
        "recall_per_edit": per_edit,
        "false_positives_at_chosen": [  # labelled ones first, then Caltech pairs
            {"a": a, "b": b, "score": round(s, 4)} for s, a, b in false_pos[:30]
        ],
        "machine": "2 vCPU Intel Xeon VM, shared with other jobs",
    }
    for r in rows[::5]:
        print(
            f"T {r['threshold']:.2f}  P {r['precision']:.3f} (strict {r['precision_strict']:.3f})"
            f"  R {r['recall']:.3f}  F1 {r['f1']:.3f}"
        )
    print(f"chosen {chosen}\nbest F1 {best_f1}\nper edit {per_edit}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
