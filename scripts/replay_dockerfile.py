"""Replay the final stage of the images in docker-compose.yml without a Docker engine.

For each compose service named, build its Dockerfile's last stage into a scratch folder and a
fresh virtualenv, start its CMD with the compose environment and run its HEALTHCHECK until it
passes (ris.tools.dockerfile_replay says what is replayed and what is rewritten).

Usage: python scripts/replay_dockerfile.py [--map /models=models] \\
           [--set search.RIS_MILVUS_URI=/tmp/x.db] embedder search
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from ris.tools.checkout import CHECKOUT
from ris.tools.dockerfile_replay import ReplayError, replay_services


def _parse_pairs(values: list[str], flag: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, new = value.partition("=")
        if not sep:
            raise SystemExit(f"{flag} {value!r}: expected KEY=VALUE")
        pairs.append((key, new))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("services", nargs="+", help="compose services to replay, in start order")
    parser.add_argument("--compose", type=Path, default=CHECKOUT / "docker-compose.yml")
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="CONTAINER=HOST",
        help="a container path and the host path standing for it (longest prefix wins)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SERVICE.VAR=VALUE",
        help="replace one variable of one service (for services this replay does not run)",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for the venvs")
    parser.add_argument("--keep", type=Path, help="scratch folder to keep (default: a temp dir)")
    args = parser.parse_args(argv)
    path_map = _parse_pairs(args.map, "--map")
    settings = _parse_pairs(args.set, "--set")
    started = time.monotonic()
    with ExitStack() as stack:
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            args.keep.mkdir(parents=True)
            scratch = args.keep.resolve()
        else:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ris-replay-")))
        try:
            replay_services(args.services, args.compose, path_map, settings, args.python, scratch)
        except ReplayError as exc:
            print(f"replay failed: {exc}", file=sys.stderr)
            return 1
    print(f"== replayed {', '.join(args.services)} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
