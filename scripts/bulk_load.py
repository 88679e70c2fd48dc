"""Load embeddings into a search-service collection with Milvus' bulk insert.

The input is JSON Lines as `ris collections export NAME --vectors` writes them (one item per
line: id, vector, label, uri, metadata), e.g. a Milvus Lite prototype moving to a server, or an
offline embedding job. The collection must exist (created through the service, augmentation
off) and be empty; Milvus is addressed as the search service addresses it (RIS_MILVUS_* env or
the flags below). Rows become searchable when this returns.

    ris collections create photos --augmentation 0
    ris collections export proto --vectors --out items.jsonl
    python scripts/bulk_load.py items.jsonl --collection photos \\
        --milvus-uri http://127.0.0.1:19530 --staging-dir /var/lib/milvus/import

Local storage (standalone): the staging folder must be on Milvus' machine. MinIO/S3: upload it
to the bucket (e.g. `mc cp -r`) and pass `--milvus-prefix a-bucket/import` (not tested here).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ris.search.config import from_env
from ris.search.store_connection import client_kwargs
from ris.tools.bulk_load import IMPORT_TIMEOUT_S, ROWS_PER_FILE, bulk_load


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", type=Path, help="JSON Lines file ('-': standard input)")
    ap.add_argument("--collection", required=True)
    ap.add_argument("--staging-dir", type=Path, required=True, help="where row files go")
    ap.add_argument("--milvus-prefix", default="", help="object-storage prefix of staging-dir")
    ap.add_argument("--milvus-uri", default=None, help="default: env RIS_MILVUS_URI")
    ap.add_argument("--milvus-token", default=None, help="default: env RIS_MILVUS_TOKEN")
    ap.add_argument("--rows-per-file", type=int, default=ROWS_PER_FILE)
    ap.add_argument("--timeout-s", type=float, default=IMPORT_TIMEOUT_S)
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    args = ap.parse_args(argv)

    cfg = from_env()
    overrides = {"milvus_uri": args.milvus_uri, "milvus_token": args.milvus_token}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if cfg.is_milvus_lite:
        print(
            "bulk insert needs a Milvus server (--milvus-uri http://...), not Lite", file=sys.stderr
        )
        return 2
    handle = sys.stdin if str(args.input) == "-" else args.input.open(encoding="utf-8")
    with handle, tqdm(desc="staged", unit="row") as rows, tqdm(desc="imported", unit="row") as done:
        result = bulk_load(
            client_kwargs(cfg),
            args.collection,
            handle,
            args.staging_dir,
            milvus_prefix=args.milvus_prefix,
            rows_per_file=args.rows_per_file,
            timeout_s=args.timeout_s,
            on_row=lambda: rows.update(1),
            on_file=done.update,
        )
    for bad in result.rejected:
        print(f"line {bad.line}: {bad.reason}", file=sys.stderr)
    summary = dataclasses.asdict(result)
    summary["rejected"] = len(result.rejected)
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
    return 0 if result.rows_visible >= result.rows_imported else 1


if __name__ == "__main__":
    raise SystemExit(main())
