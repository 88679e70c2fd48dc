"""`python -m ris.embedder [flags]`: run the embedder until SIGTERM/SIGINT, then drain."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence

from ris.embedder.config import ConfigError, from_args
from ris.embedder.runtime import ModelLoadError, ProviderUnavailableError
from ris.embedder.server import PortInUseError, start_server


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = from_args(argv)
    except ConfigError as exc:
        print(f"embedder: bad configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        server = start_server(config)
    except (ProviderUnavailableError, ModelLoadError, PortInUseError, ConfigError) as exc:
        logging.getLogger("ris.embedder").error("cannot start: %s", exc)
        return 1

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("ris.embedder").info("signal %d: shutting down", signum)
        threading.Thread(target=server.stop, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Printed for scripts that start the server on port 0 and need to find it.
    metrics = f" metrics {config.metrics_host}:{server.metrics_port}" if server.metrics_port else ""
    print(f"embedder listening on {server.address}{metrics}", flush=True)
    while not server.wait(timeout=1.0):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
