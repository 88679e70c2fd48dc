"""Offline study: which frozen-ResNet50 descriptor retrieves Caltech-101 best, and at what cost.

Why offline: each variant (pooling, input geometry, scales, whitening, query expansion) would need
a different service build; here the backbone runs once per input geometry through onnxruntime on
models/resnet50.onnx (made to also expose its last feature map, in a temporary copy), every
pooling is computed from the cached feature maps in numpy, and every post-processing is scored on
the cached descriptors. The metrics are tools/evaluation.py's, so numbers match `ris eval`.

    python scripts/retrieval_study.py --json study.json --markdown study.md \\
        --geometries crop,cc224,sq224,sq160,sq320,full224,full320 \\
        --multiscale sq160+sq224+sq320,sq224+sq320,sq224+full224 \\
        --held-out-geometries crop,full224,sq224

Features are cached under --cache-dir (keyed by model hash, geometry and image set): re-running
only re-scores. Reported ms/image is the backbone time on this machine for that geometry.
The backbone and poolings are ris.tools.pooled_features, the post-processing
ris.tools.descriptor_ops.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ris.tools.checkout import DATASETS, DEFAULT_MODEL
from ris.tools.descriptor_ops import Whitening, alpha_qe, dba, l2n, search
from ris.tools.evaluation import (
    read_candidates,
    read_queries,
    relevant_sets,
    score_rankings,
)
from ris.tools.pooled_features import (
    DEFAULT_CACHE,
    POOLINGS,
    Backbone,
    Features,
    extract,
    image_size,
    read_spec,
    relative_pixels,
)

DEFAULT_DATA = DATASETS / "caltech101-ris"

# ---------------------------------------------------------------------------------------------
# The study.
# ---------------------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    geoms: tuple[str, ...]  # one or several (multi-scale)
    pooling: str
    metric: str = "cos"  # "l2" = raw vectors, L2 distance
    whiten_dim: int = 0  # 0 = none
    whiten_power: float = 0.5
    whiten_on: str = "index"  # "index" = learned on the indexed set, "imagenet" = held-out
    qe: int = 0
    dba: int = 0
    alpha: float = 3.0


def descriptors(
    feats: dict[str, Features], split: slice, v: Variant
) -> tuple[np.ndarray, float, float]:
    """Descriptor for a variant (multi-scale: sum of L2-normalised per-scale vectors)."""
    per_scale = [feats[g].pooled[v.pooling][split].astype(np.float64) for g in v.geoms]
    ms = sum(feats[g].ms_per_image for g in v.geoms)
    cost = sum(feats[g].rel_cost for g in v.geoms)
    if v.metric == "l2":
        return np.sum(per_scale, axis=0), ms, cost
    return l2n(np.sum([l2n(x) for x in per_scale], axis=0)), ms, cost


def score_variant(
    v: Variant,
    feats: dict[str, Features],
    n_db: int,
    labels_db: list[str],
    labels_q: list[str],
    held_out: dict[str, Features] | None,
    k: int = 10,
) -> dict[str, object]:
    db, ms, cost = descriptors(feats, slice(0, n_db), v)
    q, _, _ = descriptors(feats, slice(n_db, None), v)
    if v.whiten_dim:
        if v.whiten_on == "imagenet":
            if held_out is None:
                raise RuntimeError("held-out features needed for whiten_on=imagenet")
            train, _, _ = descriptors(held_out, slice(0, None), v)
        else:
            train = db
        wh = Whitening.fit(train, v.whiten_dim, v.whiten_power)
        db, q = wh(db), wh(q)
    if v.dba:
        db = dba(db, v.dba, v.alpha)
    if v.qe:
        q = alpha_qe(db, q, v.qe, v.alpha)
    idx, _ = search(db, q, k, v.metric)
    ids = [str(i) for i in range(n_db)]
    rankings = [[ids[j] for j in row] for row in idx]
    s = score_rankings(rankings, relevant_sets(labels_q, ids, labels_db), k)
    return {
        "variant": v.name,
        "map_at_10_towhee": round(s.map_at_10_towhee, 4),
        "ap_at_10": round(s.ap_at_10, 4),
        "hit_ratio": round(s.hit_ratio, 4),
        "recall_at_1": round(s.recall_at_1, 4),
        "rel_cost": round(cost, 2),
        "ms_per_image": round(ms, 1),
        "dim": int(db.shape[1]),
        "config": {
            "geometries": list(v.geoms),
            "pooling": v.pooling,
            "metric": v.metric,
            "whiten_dim": v.whiten_dim,
            "whiten_power": v.whiten_power if v.whiten_dim else None,
            "whiten_on": v.whiten_on if v.whiten_dim else None,
            "qe": v.qe,
            "dba": v.dba,
            "alpha": v.alpha if (v.qe or v.dba) else None,
        },
    }


def build_variants(geoms: Sequence[str], ms_sets: Sequence[tuple[str, ...]]) -> list[Variant]:
    """The grid: baselines, each pooling x geometry, multi-scale, then whitening/QE/DBA combos."""
    vs: list[Variant] = [
        Variant("crop gap raw L2 (reference)", ("crop",), "gap", metric="l2"),
        Variant("crop gap cosine (reference)", ("crop",), "gap"),
    ]
    for g in geoms:
        for p in POOLINGS:
            if (g, p) != ("crop", "gap"):
                vs.append(Variant(f"{g} {p} cosine", (g,), p))
    for ms in ms_sets:
        for p in ("gap", "gem"):
            vs.append(Variant(f"ms[{'+'.join(ms)}] {p} cosine", ms, p))
    bases = [(("crop",), "gem"), *((ms, "gem") for ms in ms_sets)]
    bases += [((g,), "gem") for g in geoms if g != "crop"]
    for geo, p in bases:
        tag = "+".join(geo)
        for dim in (128, 256, 512):
            for power in (0.0, 0.25, 0.5):
                name = f"{tag} {p} + PCA{dim}" + (f" whiten^{power}" if power else "")
                vs.append(Variant(name, geo, p, whiten_dim=dim, whiten_power=power))
        for dim, power in ((256, 0.0), (256, 0.25)):
            name = f"{tag} {p} + PCA{dim}" + (f" whiten^{power}" if power else "")
            vs.append(
                Variant(
                    name + " (fit on imagenet)",
                    geo,
                    p,
                    whiten_dim=dim,
                    whiten_power=power,
                    whiten_on="imagenet",
                )
            )
        for n in (1, 2, 3):
            vs.append(Variant(f"{tag} {p} + αQE{n}", geo, p, qe=n))
        for n in (2, 3, 5):
            vs.append(Variant(f"{tag} {p} + DBA{n}", geo, p, dba=n))
        for n in (1, 3):
            vs.append(Variant(f"{tag} {p} + DBA3 + αQE{n}", geo, p, dba=3, qe=n))
        vs.append(
            Variant(f"{tag} {p} + PCA256 + αQE1", geo, p, whiten_dim=256, whiten_power=0.0, qe=1)
        )
        vs.append(
            Variant(
                f"{tag} {p} + PCA256 + DBA3 + αQE1",
                geo,
                p,
                whiten_dim=256,
                whiten_power=0.0,
                dba=3,
                qe=1,
            )
        )
    return vs


def markdown_table(rows: Sequence[dict[str, object]]) -> str:
    head = (
        "| variant | mAP@10 (Towhee) | AP@10 | hit ratio | R@1 | dim | cost (224² = 1) "
        "| backbone ms/img |"
    )
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|"
    lines = [head, sep]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['map_at_10_towhee']:.3f} | {r['ap_at_10']:.3f} | "
            f"{r['hit_ratio']:.3f} | {r['recall_at_1']:.2f} | {r['dim']} | {r['rel_cost']} | "
            f"{r['ms_per_image']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="caltech101-ris folder")
    ap.add_argument(
        "--held-out",
        type=Path,
        default=DEFAULT_DATA.parent / "imagenet-sample",
        help="imagenet-sample folder: a whitening learned off the indexed set",
    )
    ap.add_argument(
        "--held-out-geometries",
        default="crop,sq224",
        help="geometries to extract on the held-out set (whitening learned off the index)",
    )
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument(
        "--geometries",
        default="crop,sq224,sq320",
        help="comma list: crop, sqN (squash to NxN), fullN (shorter side N)",
    )
    ap.add_argument(
        "--multiscale",
        default="sq160+sq224+sq320",
        help="comma list of '+'-joined geometry sets, each one multi-scale variant",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit-classes", type=int, default=0, help="smoke test: first N classes")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)

    cands = read_candidates(args.data / "reverse_image_search.csv")
    queries = read_queries(args.data / "queries.csv")
    if args.limit_classes:
        keep = sorted({c.label for c in cands})[: args.limit_classes]
        cands = [c for c in cands if c.label in keep]
        queries = [q for q in queries if q.label in keep]
    paths = [c.path for c in cands] + [q.path for q in queries]
    spec = read_spec(args.model)
    backbone = Backbone(args.model, args.cache_dir, args.threads)

    geoms = [g for g in args.geometries.split(",") if g]
    ms_sets = [tuple(s.split("+")) for s in args.multiscale.split(",") if s]
    needed = sorted({*geoms, *(g for s in ms_sets for g in s)}, key=lambda g: (g != "crop", g))
    tag = f"caltech{len(cands)}"
    feats = {g: extract(backbone, paths, g, spec, args.cache_dir, tag) for g in needed}
    sizes = [image_size(p) for p in paths]
    for g, f in feats.items():
        f.rel_cost = relative_pixels(g, sizes, spec)

    held_out: dict[str, Features] | None = None
    labels_csv = args.held_out / "labels.csv"
    if labels_csv.exists():
        import csv

        with labels_csv.open(newline="") as fh:
            ho_paths = [args.held_out / row["path"] for row in csv.DictReader(fh)]
        if args.limit_classes:
            ho_paths = ho_paths[: 4 * args.limit_classes]
        ho_geoms = [g for g in args.held_out_geometries.split(",") if g in needed]
        held_out = {
            g: extract(backbone, ho_paths, g, spec, args.cache_dir, f"imagenet{len(ho_paths)}")
            for g in ho_geoms
        }

    variants = build_variants(geoms, ms_sets)
    variants = [
        v
        for v in variants
        if v.whiten_on != "imagenet" or (held_out and all(g in held_out for g in v.geoms))
    ]
    if args.limit_classes:  # few images: cap the whitening dimension
        for v in variants:
            v.whiten_dim = min(v.whiten_dim, len(cands) - 1) if v.whiten_dim else 0
    labels_db = [c.label for c in cands]
    labels_q = [q.label for q in queries]
    rows = [score_variant(v, feats, len(cands), labels_db, labels_q, held_out) for v in variants]
    table = markdown_table(rows)
    print(table)
    best = max(rows, key=lambda r: float(r["map_at_10_towhee"]))  # type: ignore[arg-type]
    print(f"\nbest: {best['variant']} mAP@10 {best['map_at_10_towhee']}")
    result = {
        "data": str(args.data),
        "model": str(args.model),
        "model_version": backbone.version,
        "preprocessing": spec.__dict__ if hasattr(spec, "__dict__") else str(spec),
        "n_candidates": len(cands),
        "n_queries": len(queries),
        "geometries": {
            g: {"ms_per_image": round(f.ms_per_image, 1), "rel_cost": round(f.rel_cost, 2)}
            for g, f in feats.items()
        },
        "variants": rows,
        "best": best,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
