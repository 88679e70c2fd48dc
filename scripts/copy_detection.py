"""Copy-detection benchmark: find the original of an edited copy among originals + distractors.

The 500 imagenet-sample photos are indexed with the 1000 Caltech candidates as distractors; every
photo is then edited once per edit type (crop, resize, JPEG, rotation, flip, colour, brightness,
greyscale, borders, overlaid text, and a combination), deterministically from --seed, and used as
a query. Reported per edit type: recall@1 and recall@10 (the original is in the top 1 / top 10).

Two paths:
- through the real services (default): --address of the search service; the index is a
  collection filled by client-streaming Ingest, copies are sent as image bytes in Search calls;
- --direct: onnxruntime on --model with the embedder's preprocessing, exhaustive cosine search in
  numpy (the offline study path; no services needed).

    python scripts/copy_detection.py --address 127.0.0.1:50052 --json copy_detection.json
    python scripts/copy_detection.py --direct --limit 20 --distractors 50   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ris.client.config import DEFAULT_ADDRESS
from ris.tools.checkout import DATASETS, DEFAULT_MODEL
from ris.tools.copy_edits import EDITS, load_index, make_copy
from ris.tools.evaluation import Candidate, recall_at_k

# ---------------------------------------------------------------------------------------------
# The two search paths: both map (index, list of query bytes) -> ranked id lists.
# ---------------------------------------------------------------------------------------------


class DirectSearcher:
    """onnxruntime + exhaustive cosine search: the offline path."""

    def __init__(self, model: Path, output: str, threads: int) -> None:
        import onnxruntime as ort

        from ris.embedder.model_metadata import read_model_metadata

        metadata = read_model_metadata(model)  # the embedder's own reader: spec, input name
        self.spec = metadata.preprocessing
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # A session of its own: --output may name any output, the embedder serves `embedding`.
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.input = metadata.input_name
        self.output = output
        self.ids: list[str] = []
        self.db = np.zeros((0, 0), dtype=np.float32)

    def embed(self, blobs: Sequence[bytes], batch: int = 16) -> np.ndarray:
        from ris.embedder.preprocessing import prepare

        out = []
        for start in range(0, len(blobs), batch):
            x = np.stack([prepare(b, self.spec) for b in blobs[start : start + batch]])
            (y,) = self.session.run([self.output], {self.input: x})
            out.append(y / (np.linalg.norm(y, axis=1, keepdims=True) + 1e-12))
        return np.concatenate(out).astype(np.float32)

    def index(self, items: Sequence[Candidate]) -> dict[str, object]:
        t0 = time.perf_counter()
        self.ids = [c.id for c in items]
        self.db = self.embed([c.path.read_bytes() for c in items])
        return {"stored": len(items), "seconds": round(time.perf_counter() - t0, 2)}

    def search(self, blobs: Sequence[bytes], k: int) -> list[list[str]]:
        sim = self.embed(blobs) @ self.db.T
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        return [[self.ids[j] for j in row] for row in top]

    def close(self) -> None:
        pass


class ServiceSearcher:
    """The real SearchService through RisClient: a collection filled by ingest, queried with
    image bytes."""

    def __init__(self, address: str, collection: str, keep: bool) -> None:
        from ris.client import ClientConfig, RisClient

        self.ris = RisClient(ClientConfig.from_env(address=address, timeout=600.0))
        self.collection = collection
        self.keep = keep
        self.created = False

    def index(self, items: Sequence[Candidate]) -> dict[str, object]:
        from ris.tools.evaluation import ensure_collection, ingest

        _, self.created = ensure_collection(self.ris, self.collection, metric="", exist_ok=False)
        return ingest(self.ris, self.collection, items, show_progress=False)

    def search(self, blobs: Sequence[bytes], k: int) -> list[list[str]]:
        results = self.ris.search_batch(self.collection, list(blobs), top_k=k)
        return [[h.id for h in r.hits] for r in results]

    def close(self) -> None:
        if self.created and not self.keep:
            self.ris.drop_collection(self.collection)
        self.ris.close()


def run_benchmark(
    searcher: DirectSearcher | ServiceSearcher,
    originals: Sequence[Candidate],
    distractors: Sequence[Candidate],
    edits: Sequence[str],
    seed: int,
    k: int = 10,
    batch: int = 16,
) -> dict[str, object]:
    """Index, query every edit of every original, and score recall@1 / recall@k per edit."""
    index_summary = searcher.index([*originals, *distractors])
    per_edit: dict[str, dict[str, float]] = {}
    raw = [(o, o.path.read_bytes()) for o in originals]
    for edit in edits:
        t0 = time.perf_counter()
        r1 = rk = 0.0
        for start in range(0, len(raw), batch):
            part = raw[start : start + batch]
            copies = [make_copy(data, edit, seed, o.id) for o, data in part]
            rankings = searcher.search(copies, k)
            for (o, _), ranked in zip(part, rankings, strict=True):
                r1 += recall_at_k(ranked, {o.id}, 1)
                rk += recall_at_k(ranked, {o.id}, k)
        n = max(1, len(raw))
        per_edit[edit] = {
            "recall_at_1": round(r1 / n, 4),
            f"recall_at_{k}": round(rk / n, 4),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        print(
            f"{edit:<11} R@1 {r1 / n:.3f}  R@{k} {rk / n:.3f}  ({per_edit[edit]['seconds']} s)",
            file=sys.stderr,
        )
    mean1 = float(np.mean([v["recall_at_1"] for v in per_edit.values()])) if per_edit else 0.0
    meank = float(np.mean([v[f"recall_at_{k}"] for v in per_edit.values()])) if per_edit else 0.0
    return {
        "n_originals": len(originals),
        "n_distractors": len(distractors),
        "seed": seed,
        "top_k": k,
        "index": index_summary,
        "per_edit": per_edit,
        "mean_recall_at_1": round(mean1, 4),
        f"mean_recall_at_{k}": round(meank, 4),
    }


def format_table(result: dict[str, object]) -> str:
    k = result["top_k"]
    lines = [f"| edit | R@1 | R@{k} |", "|---|---:|---:|"]
    for edit, v in result["per_edit"].items():  # type: ignore[attr-defined]
        lines.append(f"| {edit} | {v['recall_at_1']:.3f} | {v[f'recall_at_{k}']:.3f} |")
    lines.append(
        f"| **mean** | {result['mean_recall_at_1']:.3f} | {result[f'mean_recall_at_{k}']:.3f} |"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--address",
        default=os.environ.get("RIS_ADDRESS", DEFAULT_ADDRESS),
        help="search service host:port (env RIS_ADDRESS)",
    )
    ap.add_argument("--collection", default="ris_copy_detection")
    ap.add_argument("--keep", action="store_true", help="keep the collection afterwards")
    ap.add_argument("--direct", action="store_true", help="onnxruntime + numpy, no services")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--output", default="gem", help="--direct: ONNX output used as embedding")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--imagenet", type=Path, default=DATASETS / "imagenet-sample")
    ap.add_argument("--caltech", type=Path, default=DATASETS / "caltech101-ris")
    ap.add_argument("--limit", type=int, default=0, help="first N originals only (0 = all)")
    ap.add_argument("--distractors", type=int, default=-1, help="first N Caltech (-1 = all)")
    ap.add_argument("--edits", default=",".join(EDITS), help="comma list of edit types")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    edits = [e for e in args.edits.split(",") if e]
    unknown = [e for e in edits if e not in EDITS]
    if unknown:
        ap.error(f"unknown edit(s): {', '.join(unknown)}; known: {', '.join(EDITS)}")
    originals, distractors = load_index(args.imagenet, args.caltech, args.limit, args.distractors)
    searcher: DirectSearcher | ServiceSearcher = (
        DirectSearcher(args.model, args.output, args.threads)
        if args.direct
        else ServiceSearcher(args.address, args.collection, args.keep)
    )
    try:
        result = run_benchmark(searcher, originals, distractors, edits, args.seed, args.top_k)
    finally:
        searcher.close()
    result["path"] = f"direct:{args.model.name}:{args.output}" if args.direct else args.address
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
