"""`ris`: one command for serving, ingesting, searching, managing collections, eval and bench.

    ris serve                                   # embedder + search service on Milvus Lite
    ris collections create photos
    ris ingest photos path/to/folder            # or a .csv (id,path,label) or a 'glob/**/*.jpg'
    ris search photos query.jpg --top-k 5       # prints hits, writes ris_results/index.html
    ris demo                                    # all of the above in one go, on a sample

Client flags (--address, --token, TLS, --timeout, --retries) fall back to RIS_* variables.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from ris.cli import dedup, reindex, sync
from ris.cli.output import describe_line, print_results, print_summary
from ris.cli.results_page import ShownQuery, write_results_page
from ris.client.client import RisClient
from ris.client.connection_args import client_options, config_from_args
from ris.client.errors import RisError
from ris.client.sources import load_source
from ris.client.types import ById, ByText, IngestItem, QueryLike
from ris.gateway import app as http_gateway
from ris.launcher import serve

DEFAULT_OUT = Path("ris_results")
# What `serve` and `demo` import; missing ones mean the server extra is not installed.
SERVER_MODULES = {
    "onnxruntime",
    "pymilvus",
    "milvus_lite",
    "grpc_health",
    "grpc_reflection",
    "prometheus_client",
}
LAZY_COMMANDS = {
    "eval": ("ris.tools.evaluation", "retrieval quality (mAP, recall@k) on a labelled set"),
    "bench": ("ris.tools.loadtest", "load test: throughput and latency of embed and search"),
    "model": ("ris.embedder.export.command", "fetch + export the model into the user cache"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ris",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    conn = client_options()

    p = sub.add_parser(
        "serve",
        help="run the embedder and the search service",
        description=(
            "Run both services in this process until Ctrl-C. Other settings: RIS_EMBEDDER_*, "
            "RIS_SEARCH_*, RIS_MILVUS_* (see the README)."
        ),
    )
    serve.add_arguments(p)
    p.add_argument(
        "--http-port",
        type=int,
        help="also serve the HTTP/JSON API and the search page on this port (see ris gateway)",
    )

    p = sub.add_parser("ingest", parents=[conn], help="add images to a collection")
    p.add_argument("collection")
    p.add_argument("source", help="folder, CSV (id,path,label) or quoted glob ('imgs/**/*.jpg')")
    p.add_argument("--no-create", action="store_true", help="fail if the collection is missing")
    p.add_argument("--metric", default="", help="for a new collection: COSINE (default), IP, L2")
    p.add_argument("--index-type", default="", help="for a new collection: AUTOINDEX, HNSW, ...")
    p.add_argument("--chunk-size", type=int, default=32, help="images per stream message")
    p.add_argument("--items-per-call", type=int, default=512, help="images per Ingest call")
    p.add_argument("--no-label-from-dir", action="store_true", help="folders: leave label empty")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--strict", action="store_true", help="exit 1 if any item failed")
    p.add_argument(
        "--shrink",
        action="store_true",
        help="send large photos as small JPEGs at what the served model needs (slow links)",
    )
    p.add_argument(
        "--duplicates",
        choices=["skip", "flag"],
        help="check each image against the collection first: skip near-duplicates of stored "
        "items, or store them flagged (metadata ris.duplicate_of); one more embedding each",
    )
    p.add_argument(
        "--duplicate-threshold",
        type=float,
        default=dedup.DEFAULT_THRESHOLD,
        help=f"score from which an image is a near-duplicate (default {dedup.DEFAULT_THRESHOLD})",
    )

    p = sub.add_parser("search", parents=[conn], help="top-k for query images, ids or text")
    p.add_argument("collection")
    p.add_argument("queries", nargs="+", metavar="QUERY", help="image files (or ids / text)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--by-id", action="store_true", help="queries are ids of stored items")
    kind.add_argument("--text", action="store_true", help="queries are text descriptions")
    p.add_argument("-k", "--top-k", type=int, default=10)
    p.add_argument("--label", action="append", default=[], help="only hits with this label")
    p.add_argument("--exclude-self", action="store_true", help="id queries: skip the item")
    p.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="only hits scoring at least this (COSINE: similarity, e.g. 0.8; L2: -distance²)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the results page")
    p.add_argument("--no-page", action="store_true", help="do not write the HTML/PNG page")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--image-root", type=Path, help="resolve relative hit uris against this")

    p = sub.add_parser(
        "sync",
        parents=[conn],
        help="make a collection match a folder (add new, re-embed changed, remove deleted)",
        description=sync.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sync.add_arguments(p)

    p = sub.add_parser(
        "dedup",
        parents=[conn],
        help="groups of exact and near-duplicate items of a collection, with their scores",
        description=dedup.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dedup.add_arguments(p)

    p = sub.add_parser(
        "gateway",
        parents=[conn],
        help="HTTP/JSON API in front of a running search service",
        description=http_gateway.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    http_gateway.add_arguments(p)

    p = sub.add_parser(
        "collections", parents=[conn], help="list, describe, create, drop, export, reindex"
    )
    p.add_argument(
        "action", choices=["list", "describe", "create", "drop", "count", "export", "reindex"]
    )
    p.add_argument("name", nargs="?")
    p.add_argument("--out", default="-", help="export: JSON Lines file (default: stdout)")
    p.add_argument("--vectors", action="store_true", help="export: include raw embeddings")
    p.add_argument("--metric", default="")
    p.add_argument("--index-type", default="")
    p.add_argument("--description", default="")
    p.add_argument(
        "--augmentation",
        type=int,
        default=None,
        help="for a new collection: neighbours blended into each item (0 = off; "
        "default: the server's, 3)",
    )
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument("--json", action="store_true")
    reindex.add_arguments(p)

    p = sub.add_parser(
        "demo",
        parents=[conn],
        help="the whole job on a sample: serve, ingest, search, write the results page",
        description=DEMO_HELP,
    )
    serve.add_arguments(p)
    p.add_argument(
        "--data",
        type=Path,
        help="folder or CSV to ingest (default: the Caltech sample in ../shared when present)",
    )
    p.add_argument("--query", type=Path, action="append", default=[], help="query image(s)")
    p.add_argument("--collection", default="demo")
    p.add_argument("-k", "--top-k", type=int, default=5)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument(
        "--reingest",
        action="store_true",
        help="ingest even when the collection already holds every id",
    )
    p.add_argument(
        "--use-running",
        action="store_true",
        help="use services already running at --address instead of starting them",
    )

    for name, (_, help_text) in LAZY_COMMANDS.items():
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


DEMO_HELP = (
    "Start both services (unless --use-running), ingest a sample collection, search it with "
    "query images and write the results page. Re-running skips the ingest when the collection "
    "already holds every id (--reingest forces it); ingest upserts, so nothing is duplicated."
)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LAZY_COMMANDS:  # their flags are theirs, --help included
        logging.basicConfig(level=logging.WARNING)
        return run_lazy(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command in LAZY_COMMANDS:
            return run_lazy(args.command, args.rest)
        if args.command == "serve":
            return serve.run(args)
        handler = {
            "ingest": cmd_ingest,
            "search": cmd_search,
            "collections": cmd_collections,
            "demo": cmd_demo,
            "sync": lambda a: sync.run(a, config_from_args(a)),
            "dedup": lambda a: dedup.run(a, config_from_args(a)),
            "gateway": lambda a: http_gateway.run(a, config_from_args(a)),
        }[args.command]
        return handler(args)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in SERVER_MODULES:
            raise
        print(
            f"ris {args.command}: {error}: starting the services needs the server extra "
            "(pip install 'ris[server]')",
            file=sys.stderr,
        )
        return 2
    except (RisError, ValueError, FileNotFoundError) as error:
        print(f"ris {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run_lazy(command: str, argv: list[str]) -> int:
    """eval/bench live in their own modules, imported only when asked for."""
    module_name = LAZY_COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        print(f"ris {command}: unavailable ({error})", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"ris {command}")
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)))


def cmd_ingest(args: argparse.Namespace) -> int:
    source = load_source(args.source, label_from_dir=not args.no_label_from_dir)
    for problem in source.problems:
        print(f"skipped {problem}", file=sys.stderr)
    with RisClient(config_from_args(args)) as ris:
        if not args.no_create:
            ris.create_collection(
                args.collection, metric=args.metric, index_type=args.index_type, exist_ok=True
            )
        screen = None
        items: Iterable[IngestItem] = source.items
        if args.duplicates:
            screen = dedup.DuplicateScreen(
                ris, args.collection, args.duplicate_threshold, flag=args.duplicates == "flag"
            )
            items = screen.filter(source.items)
        summary = ris.ingest(
            args.collection,
            items,
            chunk_size=args.chunk_size,
            items_per_call=args.items_per_call,
            show_progress=not args.no_progress,
            shrink=args.shrink,
            total=len(source.items),
        )
        summary.skipped.extend(str(p) for p in source.problems)
        total = ris.count(args.collection)
    print_summary(summary, args.collection, total)
    for dup in screen.found if screen else []:
        verb = "flagged" if args.duplicates == "flag" else "skipped"
        print(f"{verb} {dup.id}: near-duplicate of {dup.duplicate_of} ({dup.score:.4f})")
    if args.strict and not summary.ok:
        return 1
    return 1 if summary.stored == 0 and summary.received > 0 else 0


def cmd_search(args: argparse.Namespace) -> int:
    queries: list[QueryLike]
    if args.by_id:
        queries = [ById(q) for q in args.queries]
    elif args.text:
        queries = [ByText(q) for q in args.queries]
    else:
        queries = [Path(q) for q in args.queries]
    with RisClient(config_from_args(args)) as ris:
        results = ris.search_batch(
            args.collection,
            queries,
            top_k=args.top_k,
            labels=args.label,
            exclude_self=args.exclude_self,
            min_score=args.min_score,
        )
    shown = [
        ShownQuery(name, Path(name) if not (args.by_id or args.text) else None, result)
        for name, result in zip(args.queries, results, strict=True)
    ]
    if args.json:
        print(json.dumps([{"query": s.name, **asdict(s.result)} for s in shown], indent=2))
    else:
        print_results(shown)
    if not args.no_page:
        page = write_results_page(args.out, shown, image_root=args.image_root)
        print(f"results page: {page.html_path}\ncontact sheet: {page.png_path}")
    return 0 if all(s.result.ok for s in shown) else 1


def cmd_collections(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.name:
        raise ValueError(f"collections {args.action} needs a collection name")
    if args.action == "reindex":
        return reindex.run(args, config_from_args(args))
    with RisClient(config_from_args(args)) as ris:
        if args.action == "list":
            infos = ris.list_collections()
            if args.json:
                print(json.dumps([asdict(i) for i in infos], indent=2))
            for info in [] if args.json else infos:
                print(describe_line(info))
            return 0
        if args.action == "drop":
            dropped = ris.drop_collection(args.name)
            print(f"dropped {args.name}" if dropped else f"{args.name} did not exist")
            return 0
        if args.action == "count":
            print(ris.count(args.name))
            return 0
        if args.action == "export":
            from ris.cli.export import export_to

            n = export_to(ris, args.name, args.out, include_vectors=args.vectors)
            if args.out != "-":
                print(f"exported {n} items of {args.name} to {args.out}")
            return 0
        if args.action == "create":
            info = ris.create_collection(
                args.name,
                metric=args.metric,
                index_type=args.index_type,
                description=args.description,
                exist_ok=args.exist_ok,
                augmentation_top_n=args.augmentation,
            )
        else:
            info = ris.describe_collection(args.name)
    print(json.dumps(asdict(info), indent=2) if args.json else describe_line(info))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ris.cli.demo import run_demo  # keeps the sample-finding logic out of the CLI wiring

    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())
