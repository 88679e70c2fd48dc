"""What the benchmark scripts share: the embedder's settings as flags, the sample photos, Milvus
Lite's release, bounded waits for Milvus, the JSON writer and the verdict word.

The services as subprocesses are in ris.tools.harness, percentiles in ris.tools.stats, the
machine's description in ris.tools.machine and the load generator in ris.tools.loadtest.
The default paths are ris.tools.checkout's.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ris.tools.checkout import CALTECH_TRAIN, DEFAULT_MODEL

if TYPE_CHECKING:
    from ris.embedder.config import EmbedderConfig


def add_embedder_args(parser: argparse.ArgumentParser, model_help: str = "") -> None:
    """The embedder settings every benchmark exposes, with the same defaults everywhere."""
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=model_help or None)
    parser.add_argument("--provider", default="cpu")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--decode-mode", default="thread", choices=("thread", "process"))
    parser.add_argument("--intra-op-threads", type=int, default=0)


def embedder_config(args: argparse.Namespace, **overrides: Any) -> EmbedderConfig:
    """A validated EmbedderConfig from add_embedder_args' flags, plus a script's own settings."""
    from ris.embedder.config import EmbedderConfig

    return EmbedderConfig(
        model_paths=[args.model],
        provider=args.provider,
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        decode_workers=args.decode_workers,
        decode_mode=args.decode_mode,
        intra_op_threads=args.intra_op_threads,
        **overrides,
    ).validate()


def existing(paths: Sequence[Path]) -> list[Path]:
    """The given default folders that exist (the data sets are optional on some machines)."""
    return [p for p in paths if p.exists()]


def release_lite(uri: str) -> None:
    """Stop the in-process Milvus Lite server behind ``uri`` (a ``.db`` path), if any."""
    if uri.endswith(".db"):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def write_json(path: Path | None, result: dict[str, Any], quiet: bool = False) -> None:
    """Write atomically (a reader never sees half a file, even of a partial result)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(path)
    if not quiet:
        print(f"wrote {path}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "BELOW TARGET"


def sample_images(limit: int = 48) -> list[bytes]:
    """Real photos (an even spread of the Caltech-101 training set) when present, else
    synthetic JPEGs."""
    files = sorted(CALTECH_TRAIN.glob("*/*.jpg"))
    if files:
        step = max(1, len(files) // limit)
        return [p.read_bytes() for p in files[::step][:limit]]
    from ris.tools.loadtest import synthetic_images

    return synthetic_images(limit)


def wait_until(done: Callable[[], bool], limit_s: float, what: str, poll_s: float = 0.5) -> None:
    """Poll ``done`` until true; TimeoutError naming ``what`` after ``limit_s`` (a benchmark's
    waits for Milvus builds and loads are bounded)."""
    deadline = time.monotonic() + limit_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done within {limit_s:.0f} s")
        time.sleep(poll_s)


def wait_indexed(
    client: Any, name: str, rows: int, limit_s: float, poll_s: float = 0.5, reindex: bool = True
) -> None:
    """Wait (bounded) until Milvus reports every row of ``name``'s vector field indexed: a
    server builds sealed segments' indexes in the background, so create_index returning (or a
    flush) is not the end of it. ``client`` is a MilvusClient; ``rows`` the expected total.
    ``reindex``: also wait for the re-index of segments compaction merged
    (``pending_index_rows``), which at 1M rows a collection can take as long as the first build
    while every row already searches through an index."""

    def indexed() -> bool:
        info = client.describe_index(name, "embedding") or {}
        total = int(info.get("total_rows", rows) or rows)
        done = int(info.get("indexed_rows", total)) >= total
        return done and not (reindex and info.get("pending_index_rows"))

    wait_until(indexed, limit_s, f"index of {name}", poll_s)
