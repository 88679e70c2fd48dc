"""Retrieval-quality evaluation (`ris eval`): ingest a labelled candidate set, query it, score it.

Two halves with one job each:
- pure metric functions over ranked id lists (unit-tested by hand, shared with the offline
  scripts/retrieval_study.py and scripts/copy_detection.py so every number means the same);
- a runner that goes through RisClient (its TLS, tokens, limits and retries) against the real
  SearchService (create, ingest, one Search per query), so the score measures what users get.

Only the client library plus numpy/tqdm are used: it installs without server deps.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ris.client.client import RisClient
from ris.client.connection_args import add_connection_arguments, config_from_args
from ris.client.errors import NotFound, RisError
from ris.client.types import CollectionInfo, IngestItem
from ris.tools.stats import percentiles_ms

DEFAULT_COLLECTION = "ris_eval"

# ---------------------------------------------------------------------------------------------
# Metrics: pure functions over one ranked list (ids, best first) and the set of relevant ids.
# ---------------------------------------------------------------------------------------------


def _hit_precisions(ranked: Sequence[str], relevant: set[str], k: int) -> list[float]:
    """Precision at each rank (1-based) of the top k where a relevant id sits."""
    precisions: list[float] = []
    hits = 0
    seen: set[str] = set()
    for rank, item in enumerate(ranked[:k], start=1):
        if item in relevant and item not in seen:
            hits += 1
            precisions.append(hits / rank)
        seen.add(item)
    return precisions


def towhee_ap(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    """AP as the Towhee/Milvus notebook computes it: mean precision over the hits in the top k.

    Divides by the number of hits, not by the number of relevant items, so a list with a single
    relevant item at rank 1 scores 1.0 however many relevant items were missed. 0 with no hits.
    """
    precisions = _hit_precisions(ranked, relevant, k)
    return sum(precisions) / len(precisions) if precisions else 0.0


def average_precision_at_k(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    """Standard AP@k: summed precision at the hits, divided by min(k, number relevant)."""
    if not relevant:
        return 0.0
    return sum(_hit_precisions(ranked, relevant, k)) / min(k, len(relevant))


def hit_ratio(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    """Relevant items found in the top k, over all relevant items (Towhee's "mean hit ratio")."""
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & relevant) / len(relevant)


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """1.0 when at least one relevant item is in the top k (success@k), else 0.0."""
    return 1.0 if set(ranked[:k]) & relevant else 0.0


@dataclass(frozen=True)
class Scores:
    """Metrics averaged over queries; the field names are the JSON keys of `ris eval`."""

    map_at_10_towhee: float
    ap_at_10: float
    hit_ratio: float
    recall_at_1: float
    recall_at_10: float
    n_scored: int


def score_rankings(
    rankings: Sequence[Sequence[str]], relevants: Sequence[set[str]], k: int = 10
) -> Scores:
    """Average every metric over the queries. Queries with no relevant item are not scored."""
    if len(rankings) != len(relevants):
        raise ValueError(f"{len(rankings)} rankings for {len(relevants)} relevant sets")
    pairs = [(r, rel) for r, rel in zip(rankings, relevants, strict=True) if rel]

    def mean(values: Iterable[float]) -> float:
        vals = list(values)
        return float(sum(vals) / len(vals)) if vals else 0.0

    return Scores(
        map_at_10_towhee=mean(towhee_ap(r, rel, k) for r, rel in pairs),
        ap_at_10=mean(average_precision_at_k(r, rel, k) for r, rel in pairs),
        hit_ratio=mean(hit_ratio(r, rel, k) for r, rel in pairs),
        recall_at_1=mean(recall_at_k(r, rel, 1) for r, rel in pairs),
        recall_at_10=mean(recall_at_k(r, rel, k) for r, rel in pairs),
        n_scored=len(pairs),
    )


def relevant_sets(
    query_labels: Sequence[str], candidate_ids: Sequence[str], candidate_labels: Sequence[str]
) -> list[set[str]]:
    """For each query, the ids of the candidates sharing its label."""
    by_label: dict[str, set[str]] = {}
    for cid, label in zip(candidate_ids, candidate_labels, strict=True):
        by_label.setdefault(label, set()).add(cid)
    return [by_label.get(label, set()) for label in query_labels]


# ---------------------------------------------------------------------------------------------
# Data sets: CSV files whose paths are relative to the CSV's own folder.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    id: str
    path: Path
    label: str


@dataclass(frozen=True)
class QueryImage:
    path: Path
    label: str


def _rows(csv_path: Path, required: Sequence[str]) -> Iterator[dict[str, str]]:
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {', '.join(missing)}")
        for row in reader:
            if any((v or "").strip() for v in row.values()):
                yield row


def _resolve(csv_path: Path, rel: str) -> Path:
    p = Path(rel.strip())
    return p if p.is_absolute() else csv_path.parent / p


def read_candidates(csv_path: str | Path) -> list[Candidate]:
    """Read an `id,path,label` CSV; ids must be unique (they are the collection's keys)."""
    csv_path = Path(csv_path)
    out = [
        Candidate(row["id"].strip(), _resolve(csv_path, row["path"]), row["label"].strip())
        for row in _rows(csv_path, ("id", "path", "label"))
    ]
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{csv_path}: duplicate id {dup!r}")
    if any(not c.id for c in out):
        raise ValueError(f"{csv_path}: empty id")
    return out


def read_queries(csv_path: str | Path) -> list[QueryImage]:
    """Read a `path,label` CSV of query images."""
    csv_path = Path(csv_path)
    return [
        QueryImage(_resolve(csv_path, row["path"]), row["label"].strip())
        for row in _rows(csv_path, ("path", "label"))
    ]


# ---------------------------------------------------------------------------------------------
# The service path.
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalReport:
    """Everything `ris eval` writes as JSON."""

    map_at_10_towhee: float
    ap_at_10: float
    hit_ratio: float
    recall_at_1: float
    recall_at_10: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_mean: float
    top_k: int
    n_candidates: int
    n_queries: int
    n_scored: int
    n_query_errors: int
    ingest: dict[str, Any] = field(default_factory=dict)
    collection: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def ensure_collection(
    ris: RisClient, name: str, *, metric: str, exist_ok: bool
) -> tuple[CollectionInfo, bool]:
    """Create the collection; with exist_ok an existing one is re-used. Returns (info, created)."""
    try:
        existing = ris.describe_collection(name)
    except NotFound:
        pass
    else:
        if not exist_ok:
            raise RuntimeError(f"collection {name!r} already exists (pass --exist-ok to re-use it)")
        return existing, False
    info = ris.create_collection(
        name, metric=metric, description="ris eval: retrieval-quality benchmark"
    )
    return info, True


def ingest(
    ris: RisClient,
    collection: str,
    candidates: Sequence[Candidate],
    *,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Ingest every candidate through RisClient (its chunking, limits and retries); the summary."""
    items = [
        IngestItem(id=c.id, path=c.path, label=c.label, display_uri=str(c.path)) for c in candidates
    ]
    summary = ris.ingest(collection, items, show_progress=show_progress)
    seconds = summary.elapsed_seconds
    return {
        "received": summary.received,
        "stored": summary.stored,
        "failed": summary.failed,
        "failures": [
            {"id": f.id, "position": f.position, "code": f.code, "message": f.message}
            for f in summary.failures[:20]
        ],
        "seconds": round(seconds, 3),
        "images_per_s": round(len(candidates) / seconds, 2) if seconds > 0 else None,
        "embed_seconds": round(summary.embed_seconds, 3),
        "milvus_seconds": round(summary.milvus_seconds, 3),
    }


def search_each(
    ris: RisClient,
    collection: str,
    queries: Sequence[QueryImage],
    *,
    top_k: int,
    show_progress: bool = True,
) -> tuple[list[list[str] | None], list[float]]:
    """One Search call per query image, timed end to end. None marks a query that failed."""
    rankings: list[list[str] | None] = []
    latencies: list[float] = []
    for q in tqdm(queries, desc="search", unit="q", disable=not show_progress, file=sys.stderr):
        data = q.path.read_bytes()
        started = time.perf_counter()
        [result] = ris.search_batch(collection, [data], top_k=top_k)
        latencies.append((time.perf_counter() - started) * 1000.0)
        rankings.append([h.id for h in result.hits] if result.ok else None)
    return rankings, latencies


def evaluate(
    ris: RisClient,
    candidates: Sequence[Candidate],
    queries: Sequence[QueryImage],
    *,
    collection: str = DEFAULT_COLLECTION,
    top_k: int = 10,
    metric: str = "",
    exist_ok: bool = False,
    keep: bool | None = None,
    show_progress: bool = True,
) -> EvalReport:
    """Run the whole benchmark through the SearchService behind `ris`.

    keep=None drops the collection only when this run created it (a re-used one is left alone).
    """
    info, created = ensure_collection(ris, collection, metric=metric, exist_ok=exist_ok)
    try:
        if created or info.count != len(candidates):
            ingest_summary = ingest(ris, collection, candidates, show_progress=show_progress)
        else:
            ingest_summary = {"skipped": True, "reason": "re-used collection of the same size"}
        rankings, latencies = search_each(
            ris, collection, queries, top_k=top_k, show_progress=show_progress
        )
        info = ris.describe_collection(collection)
    finally:
        drop = created if keep is None else not keep
        if drop:
            ris.drop_collection(collection)

    ok = [(r, q) for r, q in zip(rankings, queries, strict=True) if r is not None]
    relevant = relevant_sets(
        [q.label for _, q in ok], [c.id for c in candidates], [c.label for c in candidates]
    )
    scores = score_rankings([r for r, _ in ok], relevant, k=top_k)
    latency = percentiles_ms([ms / 1000.0 for ms in latencies], (50, 90))
    return EvalReport(
        map_at_10_towhee=scores.map_at_10_towhee,
        ap_at_10=scores.ap_at_10,
        hit_ratio=scores.hit_ratio,
        recall_at_1=scores.recall_at_1,
        recall_at_10=scores.recall_at_10,
        latency_ms_p50=latency.get("p50", 0.0),
        latency_ms_p90=latency.get("p90", 0.0),
        latency_ms_mean=latency.get("mean", 0.0),
        top_k=top_k,
        n_candidates=len(candidates),
        n_queries=len(queries),
        n_scored=scores.n_scored,
        n_query_errors=len(queries) - len(ok),
        ingest=ingest_summary,
        collection=_collection_dict(info),
        config={
            "collection": collection,
            "metric_requested": metric or "METRIC_UNSPECIFIED",
            "created": created,
            "dropped": drop,
        },
    )


def _collection_dict(info: CollectionInfo) -> dict[str, Any]:
    keys = ("name", "count", "dim", "model_name", "model_version", "metric", "index_type")
    return {**{k: getattr(info, k) for k in keys}, "index_params": dict(info.index_params)}


def format_report(report: EvalReport) -> str:
    """A short human-readable table of the headline numbers."""
    coll = report.collection
    rows = [
        ("mAP@10 (Towhee)", f"{report.map_at_10_towhee:.4f}"),
        ("AP@10 (standard)", f"{report.ap_at_10:.4f}"),
        ("hit ratio @10", f"{report.hit_ratio:.4f}"),
        ("recall@1", f"{report.recall_at_1:.4f}"),
        (f"recall@{report.top_k}", f"{report.recall_at_10:.4f}"),
        ("latency p50 (ms)", f"{report.latency_ms_p50:.1f}"),
        ("latency p90 (ms)", f"{report.latency_ms_p90:.1f}"),
        ("candidates / queries", f"{report.n_candidates} / {report.n_queries}"),
        ("model", f"{coll.get('model_name')} {coll.get('model_version')}"),
        ("metric / index", f"{coll.get('metric')} / {coll.get('index_type')}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


# ---------------------------------------------------------------------------------------------
# CLI glue: `ris eval` mounts these two.
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ris eval`."""
    parser.add_argument("--collection", default=DEFAULT_COLLECTION)
    parser.add_argument("--candidates", required=True, type=Path, help="CSV id,path,label")
    parser.add_argument("--queries", required=True, type=Path, help="CSV path,label")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument(
        "--metric",
        choices=["METRIC_UNSPECIFIED", "COSINE", "IP", "L2"],
        default="METRIC_UNSPECIFIED",
        help="collection metric (default: the server's)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--keep", dest="keep", action="store_true", help="keep the collection")
    keep.add_argument(
        "--drop",
        dest="keep",
        action="store_false",
        help="drop it afterwards (default: drop it only if this run created it)",
    )
    parser.set_defaults(keep=None)
    parser.add_argument(
        "--exist-ok",
        action="store_true",
        help="re-use an existing collection (ingest is skipped when its count matches)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per RPC")
    parser.add_argument("--no-progress", action="store_true")
    add_connection_arguments(parser, timeout=False)  # --address, TLS, token, retries


def run(args: argparse.Namespace) -> int:
    """Entry point of `ris eval`; returns the process exit code."""
    try:
        candidates = read_candidates(args.candidates)
        queries = read_queries(args.queries)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        # --timeout is this command's own: every call, the ingest streams included.
        config = config_from_args(args, timeout=args.timeout, ingest_timeout=args.timeout)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        with RisClient(config) as ris:
            report = evaluate(
                ris,
                candidates,
                queries,
                collection=args.collection,
                top_k=args.top_k,
                metric="" if args.metric == "METRIC_UNSPECIFIED" else args.metric,
                exist_ok=args.exist_ok,
                keep=args.keep,
                show_progress=not args.no_progress,
            )
    except RisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone use: python -m ris.tools.evaluation ..."""
    parser = argparse.ArgumentParser(prog="ris eval", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
