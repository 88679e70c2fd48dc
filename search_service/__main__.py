"""``python -m ris.search [flags]``: run until SIGINT/SIGTERM, then drain and exit."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence

from ris.search.config import ConfigError, from_args
from ris.search.server import PortInUseError, start_server


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = from_args(argv)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        server = start_server(config)
    except PortInUseError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop())
    print(f"search service listening on {server.address}", flush=True)
    while not server.wait(timeout=1.0):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
