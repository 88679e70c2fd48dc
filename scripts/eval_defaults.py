"""Re-measure the retrieval defaults through the real services: database-side augmentation
and query expansion on and off in one session, so the comparison is fair.

Starts an embedder (``--resize-mode``) and, per (augmentation, expansion) setting, a search
service over one Milvus Lite directory; everything goes through RisClient. Runs ``ris eval`` on
Caltech (ingest once per
augmentation setting, then re-use the collection), and text search over imagenet-sample (class
names and the eval descriptions, through the search service's text queries). Writes one JSON per
run to --out; the run with every default is ``*_default.json``.

    python scripts/eval_defaults.py --out docs/results            # squash; DBA, QE on and off
    python scripts/eval_defaults.py --resize-mode model --qe 0 --augment 0 --tag crop --no-text
    python scripts/eval_defaults.py --model models/resnet50.int8.onnx --tag int8
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ris.client import ByText, IngestItem, RisClient
from ris.embedder.config import EmbedderConfig
from ris.embedder.server import start_server as start_embedder
from ris.search.config import SearchConfig
from ris.search.server import start_server as start_search
from ris.tools import evaluation

ROOT = Path(__file__).resolve().parent.parent

DATASETS = ROOT.parent / "shared" / "datasets"
KS = (1, 5, 10)


def run_caltech(address: str, collection: str, out: Path, keep_existing: bool) -> dict:
    data = DATASETS / "caltech101-ris"
    argv = [
        "--address",
        address,
        "--collection",
        collection,
        "--candidates",
        str(data / "reverse_image_search.csv"),
        "--queries",
        str(data / "queries.csv"),
        "--json",
        str(out),
        "--keep",
        "--no-progress",
    ]
    if keep_existing:
        argv.append("--exist-ok")
    if evaluation.main(argv) != 0:
        raise RuntimeError("ris eval failed")
    return json.loads(out.read_text())


def _text_sets() -> tuple[list[dict], dict[str, list[tuple[str, int]]]]:
    data = DATASETS / "imagenet-sample"
    with (data / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    sets = {"class names": [(r["name"].replace("_", " "), int(r["class_index"])) for r in rows]}
    with (ROOT / "scripts" / "data" / "text_queries.csv").open() as fh:
        known = {int(r["class_index"]) for r in rows}
        sets["descriptions (eval)"] = [
            (q["query"], int(q["class_index"]))
            for q in csv.DictReader(fh)
            if q["split"] == "eval" and int(q["class_index"]) in known
        ]
    return rows, sets


def ingest_text_gallery(ris: RisClient, rows: list[dict], name: str) -> None:
    """imagenet-sample (one photo per class), id = class index, unless already stored."""
    ris.create_collection(name, exist_ok=True)
    if ris.count(name) == len(rows):
        return
    data = DATASETS / "imagenet-sample"
    items = [IngestItem(id=r["class_index"], path=data / r["path"], label=r["name"]) for r in rows]
    summary = ris.ingest(name, items)
    if summary.failed:
        raise RuntimeError(f"text gallery: {summary.failed} items failed")


def run_text(ris: RisClient, gallery: str) -> dict:
    """Recall@k of each text set: the class's photo among the top k."""
    rows, sets = _text_sets()
    ingest_text_gallery(ris, rows, gallery)
    report: dict = {"images": len(rows)}
    for name, queries in sets.items():
        hits = {k: 0 for k in KS}
        low = 0
        results = ris.search_batch(gallery, [ByText(q) for q, _ in queries], top_k=max(KS))
        for (_, cls), result in zip(queries, results, strict=True):
            ranked = [h.id for h in result.hits]
            low += result.low_confidence
            for k in KS:
                hits[k] += str(cls) in ranked[:k]
        report[name] = {
            "queries": len(queries),
            **{f"R@{k}": round(hits[k] / len(queries), 4) for k in KS},
            "low_confidence": low,
        }
    return report


def run_imagenet_queries(ris: RisClient, gallery: str) -> dict:
    """The Towhee protocol's ImageNet side: imagenet-queries photos against the imagenet-sample
    gallery (already ingested by run_text, id = class index), one relevant each."""
    data = DATASETS / "imagenet-queries"
    with (DATASETS / "imagenet-sample" / "labels.csv").open() as fh:
        class_of = {r["wnid"]: r["class_index"] for r in csv.DictReader(fh)}
    with (data / "queries.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    hits = {k: 0 for k in KS}
    results = ris.search_batch(gallery, [data / r["path"] for r in rows], top_k=max(KS))
    for row, result in zip(rows, results, strict=True):
        ranked = [h.id for h in result.hits]
        for k in KS:
            hits[k] += class_of[row["wnid"]] in ranked[:k]
    return {"queries": len(rows), **{f"R@{k}": round(hits[k] / len(rows), 4) for k in KS}}


def run_label(tag: str, augment: int, top_n: int) -> str:
    """File label: "default" for the service defaults (DBA3 + QE1) when untagged, else the
    settings that differ from them ("no_qe", "no_dba", "no_dba_no_qe", "qe2", ...)."""
    parts = []
    if augment != 3:
        parts.append("no_dba" if augment == 0 else f"dba{augment}")
    if top_n != 1:
        parts.append("no_qe" if top_n == 0 else f"qe{top_n}")
    setting = "_".join(parts) or "default"
    return f"{tag}_{setting}" if tag else setting


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--resize-mode", default="squash", help="embedder resize_mode")
    parser.add_argument(
        "--model", type=Path, default=None, help="image ONNX model (default: the embedder's)"
    )
    parser.add_argument(
        "--qe", default="1,0", help="query_expansion_top_n settings to compare (0 = off)"
    )
    parser.add_argument("--alpha", type=float, default=3.0)
    parser.add_argument(
        "--augment", default="3,0", help="augmentation_top_n settings to compare (0 = off)"
    )
    parser.add_argument(
        "--pooling",
        default=EmbedderConfig.pooling,
        help=f"embedder pooling (gem, gem_softmax; default {EmbedderConfig.pooling})",
    )
    parser.add_argument("--tag", default="", help="prefix of the output file names")
    parser.add_argument("--no-text", action="store_true")
    parser.add_argument("--milvus-dir", type=Path, help="re-use this Lite dir (default: temp)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    milvus_dir = args.milvus_dir or Path(tempfile.mkdtemp(prefix="ris-eval-"))
    embedder_config = EmbedderConfig(
        port=0, provider="cpu", resize_mode=args.resize_mode, pooling=args.pooling
    )
    if args.model:
        embedder_config = dataclasses.replace(embedder_config, model_paths=[args.model])
    embedder = start_embedder(embedder_config.validate())
    summary = {}
    settings = [
        (aug, top_n)
        for aug in (int(v) for v in args.augment.split(","))
        for top_n in (int(v) for v in args.qe.split(","))
    ]
    seen: set[int] = set()
    try:
        for aug, top_n in settings:
            config = SearchConfig(
                port=0,
                embedder_address=f"127.0.0.1:{embedder.port}",
                milvus_uri=str(milvus_dir / "ris.db"),
                query_expansion_top_n=top_n,
                query_expansion_alpha=args.alpha,
                augmentation_top_n=aug,
                augmentation_alpha=args.alpha,
            ).validate()
            search = start_search(config)
            label = run_label(args.tag, aug, top_n)
            try:
                address = f"127.0.0.1:{search.port}"
                started = time.perf_counter()
                report = run_caltech(
                    address,
                    f"eval_caltech_dba{aug}",
                    args.out / f"eval_caltech_{label}.json",
                    aug in seen,
                )
                seen.add(aug)
                entry = {
                    "resize_mode": args.resize_mode,
                    "pooling": args.pooling,
                    "augmentation_top_n": aug,
                    "query_expansion_top_n": top_n,
                    "alpha": args.alpha,
                    "map_at_10_towhee": report["map_at_10_towhee"],
                    "recall_at_1": report["recall_at_1"],
                    "latency_ms_p50": report["latency_ms_p50"],
                    "seconds": round(time.perf_counter() - started, 1),
                }
                if not args.no_text:
                    with RisClient(address=address, timeout=600, ingest_timeout=1800) as ris:
                        text = run_text(ris, f"eval_imagenet_dba{aug}")
                        entry["imagenet_queries"] = run_imagenet_queries(
                            ris, f"eval_imagenet_dba{aug}"
                        )
                    (args.out / f"text_search_{label}.json").write_text(
                        json.dumps({"resize_mode": args.resize_mode, **text}, indent=2) + "\n"
                    )
                    entry["text"] = text
                summary[label] = entry
                print(json.dumps({label: entry}, indent=2), flush=True)
            finally:
                search.stop(grace=1.0)
    finally:
        embedder.stop(grace=1.0)
    path = args.out / f"eval_defaults{'_' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
