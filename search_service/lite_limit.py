"""Milvus Lite's size limit, told to the user: Lite searches by brute force in one process, so
past a few tens of thousands of rows every query and every augmented write slows linearly
(docs/benchmarks.md: FLAT p50 85 ms at 10k, 1.04 s at 100k on 2 cores). A collection that grows
past ``lite_warn_rows`` is logged once (per collection and process) and described with a
warning that says what to run instead."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

CHECK_EVERY = 1000  # rows written between two counts of a collection still under the limit


def lite_warning(name: str, count: int, limit: int) -> str:
    return (
        f"collection {name} holds {count} rows on Milvus Lite, past {limit} "
        "(RIS_SEARCH_LITE_WARN_ROWS): Lite searches by brute force in one process, about 1 s "
        "per query at 100k rows on 2 cores (docs/benchmarks.md). Run a Milvus server instead "
        "(docker compose up, or Milvus standalone) with an IVF or HNSW index, point "
        "RIS_MILVUS_URI at it, and re-ingest (`ris collections export NAME` lists every item)"
    )


class LiteSizeWatch:
    """Counts rows written per collection and checks the size every CHECK_EVERY rows (at most
    every tenth of the limit), so the warning costs one count per thousand rows, none once
    given."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._written: dict[str, int] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def written(self, name: str, rows: int, count: Callable[[], int]) -> None:
        """Note ``rows`` written to ``name``; count it (``count()``) when enough piled up."""
        if not self.limit:
            return
        with self._lock:
            if name in self._warned:
                return
            pending = self._written.get(name, 0) + rows
            due = pending >= min(CHECK_EVERY, max(self.limit // 10, 1))
            self._written[name] = 0 if due else pending
        if due:
            self.warnings(name, count())

    def warnings(self, name: str, count: int) -> list[str]:
        """The warning for a collection of ``count`` rows (logged the first time), or none."""
        if not self.limit or count <= self.limit:
            return []
        message = lite_warning(name, count, self.limit)
        with self._lock:
            first = name not in self._warned
            self._warned.add(name)
        if first:
            log.warning("%s", message)
        return [message]

    def forget(self, name: str) -> None:
        """A dropped collection starts again (a new one of the same name is warned anew)."""
        with self._lock:
            self._warned.discard(name)
            self._written.pop(name, None)
