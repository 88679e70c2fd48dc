"""`ris demo`: the main job in one command, on a sample collection.

Starts both services (unless --use-running), creates the collection, ingests the sample (skipped
when the collection already holds every id; --reingest forces it), searches it with a few query
images and writes the results page. Ingest upserts by id, so re-running never duplicates.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
from collections.abc import Iterator
from pathlib import Path

from ris.cli.output import print_results, print_summary
from ris.cli.results_page import ShownQuery, write_results_page
from ris.client.client import RisClient
from ris.client.connection_args import config_from_args
from ris.client.errors import FailedPrecondition
from ris.client.sources import Source, load_source
from ris.client.types import QueryResult
from ris.launcher import serve

REPO = Path(__file__).resolve().parent.parent
CALTECH_CANDIDATES = (
    REPO.parent / "shared" / "datasets" / "caltech101-ris",
    Path.cwd().parent / "shared" / "datasets" / "caltech101-ris",
)
DEFAULT_QUERIES = 3
MAX_GET_LIMIT = 16384  # the most items one Get returns


def default_sample() -> Path | None:
    """The Caltech-101 sample (seed's reverse_image_search.csv) when this checkout has it."""
    for folder in CALTECH_CANDIDATES:
        if (folder / "reverse_image_search.csv").is_file():
            return folder / "reverse_image_search.csv"
    return None


def pick_queries(data: Path, source: Source, count: int = DEFAULT_QUERIES) -> list[Path]:
    """queries.csv beside the data when there is one (the seed's layout), else the first image."""
    listing = data.parent / "queries.csv" if data.is_file() else data / "queries.csv"
    if listing.is_file():
        with listing.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        step = max(1, len(rows) // count)
        return [listing.parent / row["path"] for row in rows[::step][:count]]
    return [item.path for item in source.items[:1] if item.path is not None]


def holds_all(ris: RisClient, collection: str, source: Source) -> bool:
    """Whether every id of the source is stored already (so a re-run can skip the ingest)."""
    ids = [item.id for item in source.items]
    if not ids or len(ids) > MAX_GET_LIMIT:
        return False
    return len(ris.get(collection, ids, limit=len(ids))) == len(ids)


@contextlib.contextmanager
def services_for(args: argparse.Namespace) -> Iterator[str | None]:
    """Start both services on free ports unless told to use running ones; yields the address."""
    if args.use_running:
        yield args.address
        return
    options = serve.options_from_args(args)
    options = dataclasses.replace(
        options,
        port=0 if options.port is None else options.port,
        embedder_port=0 if options.embedder_port is None else options.embedder_port,
    )
    print("starting the embedder and the search service ...", flush=True)
    with serve.Services(options) as services:
        print(f"search service on {services.address}, Milvus at {services.milvus_uri}")
        yield services.address


def fill_and_search(
    ris: RisClient,
    args: argparse.Namespace,
    source: Source,
    queries: list[Path],
    reingest: bool,
) -> list[QueryResult] | None:
    """Ingest unless every id is stored already, then search; None when nothing was stored."""
    if not reingest and holds_all(ris, args.collection, source):
        print(f"{args.collection} already holds all {len(source.items)} images: not re-ingesting")
    else:
        print(f"ingesting {len(source.items)} images into {args.collection}")
        summary = ris.ingest_source(args.collection, source, show_progress=True)
        print_summary(summary, args.collection, ris.count(args.collection))
        if summary.stored == 0:
            return None
    return ris.search_batch(args.collection, queries, top_k=args.top_k)


def run_demo(args: argparse.Namespace) -> int:
    data = args.data or default_sample()
    if data is None:
        raise FileNotFoundError(
            "no sample found: pass --data FOLDER_OR_CSV (scripts/quickstart.sh fetches one)"
        )
    source = load_source(data)
    if not source.items:
        raise FileNotFoundError(f"no images in {data}")
    queries = args.query or pick_queries(Path(data), source)
    with services_for(args) as address:
        config = config_from_args(args)
        if address:
            config = dataclasses.replace(config, address=address)
        with RisClient(config) as ris:
            ris.wait_ready(timeout=60)
            ris.create_collection(args.collection, exist_ok=True)
            try:
                results = fill_and_search(ris, args, source, queries, reingest=args.reingest)
            except FailedPrecondition as exc:
                # The demo's own collection, filled by another model or model setting: rebuild.
                print(f"{exc}\nrebuilding the demo collection {args.collection!r} for this model")
                ris.drop_collection(args.collection)
                ris.create_collection(args.collection)
                results = fill_and_search(ris, args, source, queries, reingest=True)
            if results is None:
                return 1
    shown = [ShownQuery(str(q), q, r) for q, r in zip(queries, results, strict=True)]
    print_results(shown)
    page = write_results_page(args.out, shown, title=f"ris demo: {args.collection}")
    print(f"\nresults page: {page.html_path.resolve()}\ncontact sheet: {page.png_path.resolve()}")
    return 0 if all(s.result.ok for s in shown) else 1
