"""What the commands print: ingest summaries, search hits and collection lines, in one place."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ris.cli.results_page import ShownQuery
from ris.client.types import CollectionInfo, IngestSummary


def print_summary(summary: IngestSummary, collection: str, total: int) -> None:
    print(
        f"ingested into {collection}: {summary.stored} stored, {summary.failed} failed, "
        f"{len(summary.skipped)} skipped of {summary.received + len(summary.skipped)} "
        f"in {summary.elapsed_seconds:.1f}s (embed {summary.embed_seconds:.1f}s, "
        f"milvus {summary.milvus_seconds:.1f}s); collection now holds {total}"
    )
    for failure in summary.failures[:20]:
        print(f"  failed #{failure.position} {failure.id}: {failure.message}", file=sys.stderr)
    if len(summary.failures) > 20:
        print(f"  ... and {len(summary.failures) - 20} more", file=sys.stderr)


def print_results(shown: Sequence[ShownQuery]) -> None:
    for query in shown:
        print(f"query {query.name}")
        if query.result.error is not None:
            print(f"  failed: {query.result.error.message}")
        for rank, hit in enumerate(query.result.hits, start=1):
            mark = "  (near duplicate)" if hit.near_duplicate else ""
            print(
                f"  {rank:>3}  {hit.score:8.4f}  {hit.label or '-':<20} {hit.id}  {hit.uri}{mark}"
            )


def describe_line(info: CollectionInfo) -> str:
    return (
        f"{info.name}: {info.count} items, dim {info.dim}, {info.metric}, {info.index_type}, "
        f"model {info.model_name} {info.model_version}, "
        + (f"augmented (top {info.augmentation_top_n})" if info.augmentation_top_n else "raw")
        + "".join(f"\nwarning: {w}" for w in info.warnings)
    )
