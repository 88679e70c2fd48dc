"""Every client method written once, without I/O, for RisClient and AsyncRisClient alike.

An operation is a generator: it yields the steps it needs done (a call to send, local work that
may block) and gets each step's answer back, then returns the method's result. It builds its
requests and reads the answers with client/convert.py, and holds all the logic between them:
argument checks, Search calls cut to the limits, ingest accounting, the limits a client keeps.
Each client only drives operations (``_drive``): the blocking one does every step in place, the
asyncio one awaits the calls and runs local work in a worker thread. A step that fails is raised
inside the operation, at its ``yield``, as a call would raise. ("Sans I/O", as in h11.)
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeAlias, TypeVar, cast

from google.protobuf.message import Message
from tqdm import tqdm

from ris.client import convert
from ris.client.config import ClientConfig
from ris.client.errors import QueryFailed, RisError
from ris.client.ingest import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_ITEMS_PER_CALL,
    DEFAULT_MAX_CHUNK_BYTES,
    CallAttempts,
    CallStream,
    plan_calls,
)
from ris.client.limits import (
    Limits,
    ServiceInfo,
    limits_from,
    oversize_result,
    search_calls,
)
from ris.client.limits import (
    service_info as read_service_info,
)
from ris.client.shrink import shrinker
from ris.client.sources import Source, from_csv, from_folder, from_glob
from ris.client.types import (
    CollectionInfo,
    IngestItem,
    IngestSummary,
    ItemPage,
    QueryLike,
    QueryResult,
    StoredItem,
)

log = logging.getLogger(__name__)
R = TypeVar("R")


@dataclass(frozen=True)
class Unary:
    """A unary call, retried within the client's timeout; its failure is raised as a RisError.
    The answer sent back is the response message."""

    method: str  # the SearchService method, e.g. "Search"
    request: Message
    what: str  # what the call does, for error messages


@dataclass(frozen=True)
class Probe:
    """One attempt at a unary call, never retried and never raised: sent back is
    ``(response, None)`` or ``(None, the grpc.RpcError)``."""

    method: str
    request: Message
    timeout: float


@dataclass(frozen=True)
class Offload:
    """Local work that may block (reading files): the asyncio client runs it in a thread."""

    work: Callable[[], Any]


# CallAttempts (client/ingest.py): one Ingest stream call, retried whole within the ingest
# timeout; sent back is the IngestResponse, or None when every item failed before sending.
Step: TypeAlias = Unary | Probe | Offload | CallAttempts
Op: TypeAlias = Generator[Step, Any, R]


class Session:
    """What a client's operations share: its settings and the limits it has learned."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.limits: Limits | None = None  # None until the service has said


class Run(Generic[R]):
    """An operation under way: the step it waits on (None once it is done), then its result."""

    def __init__(self, op: Op[R]) -> None:
        self._op = op
        self.step: Step | None = None
        self._result: R | None = None
        self._advance(functools.partial(next, op))

    def send(self, answer: Any) -> None:
        self._advance(functools.partial(self._op.send, answer))

    def throw(self, error: Exception) -> None:
        self._advance(functools.partial(self._op.throw, error))

    @property
    def result(self) -> R:
        return cast(R, self._result)

    def _advance(self, resume: Callable[[], Step]) -> None:
        try:
            self.step = resume()
        except StopIteration as done:
            self.step, self._result = None, done.value


def drive(op: Op[R], do: Callable[[Step], Any]) -> R:
    """Run ``op`` to its result, doing each step with ``do`` as it asks (RisClient's way;
    AsyncRisClient's loop is this one with ``await``)."""
    run = Run(op)
    while run.step is not None:
        try:
            answer = do(run.step)
        except Exception as error:  # raised inside the operation, where it asked
            run.throw(error)
        else:
            run.send(answer)
    return run.result


def _call(method: str, request: Message, what: str, read: Callable[[Any], R]) -> Op[R]:
    return read((yield Unary(method, request, what)))


def message_call(method: str, request: Message) -> Op[Message]:
    """One SearchService call in the API's own messages, the response as it came (no
    conversion): for a caller that speaks ris.v1 itself, like the HTTP gateway."""
    response: Message = yield Unary(method, request, method)
    return response


# -- collections -----------------------------------------------------------------------------


def create_collection(name: str, **options: Any) -> Op[CollectionInfo]:
    """``options``: RisClient.create_collection's (client/convert.py builds the request)."""
    request = convert.create_collection_request(name, **options)
    return _call("CreateCollection", request, f"create {name}", convert.collection_info)


def describe_collection(name: str) -> Op[CollectionInfo]:
    request = convert.describe_collection_request(name)
    return _call("DescribeCollection", request, f"describe {name}", convert.collection_info)


def list_collections() -> Op[list[CollectionInfo]]:
    request = convert.list_collections_request()
    return _call("ListCollections", request, "list collections", convert.collection_infos)


def drop_collection(name: str) -> Op[bool]:
    request = convert.drop_collection_request(name)
    return _call("DropCollection", request, f"drop {name}", convert.dropped)


def service_info(session: Session, collection: str = "") -> Op[ServiceInfo]:
    request = convert.service_info_request(collection)
    response = yield Unary("GetServiceInfo", request, "service info")
    info = read_service_info(response, session.config.max_message_bytes)
    if response.HasField("model"):  # else the embedder was unreachable: ask again later
        session.limits = info.limits
    return info


def limits(session: Session) -> Op[Limits]:
    """Asked once (one attempt, no retries: the call that follows has its own), then kept."""
    if session.limits is not None:
        return session.limits
    timeout = min(session.config.timeout, 10.0)
    response, error = yield Probe("GetServiceInfo", convert.service_info_request(), timeout)
    known, keep = limits_from(response, error, session.config.max_message_bytes)
    if keep:
        session.limits = known
    return known


# -- ingest ----------------------------------------------------------------------------------


def ingest(
    session: Session,
    collection: str,
    items: Iterable[IngestItem],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    items_per_call: int = DEFAULT_ITEMS_PER_CALL,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    show_progress: bool = False,
    total: int | None = None,
    shrink: bool = False,
) -> Op[IngestSummary]:
    if total is None and isinstance(items, Sequence):
        total = len(items)
    known, transform = yield from _ingest_setup(session, collection, shrink)
    summary = IngestSummary()
    started = time.perf_counter()
    with tqdm(
        total=total, unit="img", desc=f"ingest {collection}", disable=not show_progress
    ) as bar:
        for call in plan_calls(items, items_per_call):
            stream = functools.partial(
                CallStream, collection, call, chunk_size, max_chunk_bytes, known, transform
            )
            attempts = CallAttempts(stream, bar, f"ingest into {collection}")
            response = yield attempts
            outcome = None if response is None else convert.ingest_outcome(response)
            attempts.stream.record(outcome, summary)
    summary.elapsed_seconds = time.perf_counter() - started
    return summary


def _ingest_setup(
    session: Session, collection: str, shrink: bool
) -> Op[tuple[Limits, Callable[[bytes], bytes] | None]]:
    if not shrink:
        return (yield from limits(session)), None
    try:
        info = yield from service_info(session, collection)
    except RisError as error:  # a missing collection is reported by the ingest call itself
        log.warning("not shrinking: %s", error)
        return (yield from limits(session)), None
    return info.limits, shrinker(info.geometry)


def ingest_source(
    session: Session, collection: str, source: Source, **kwargs: Any
) -> Op[IngestSummary]:
    summary = yield from ingest(session, collection, source.items, **kwargs)
    summary.skipped.extend(str(p) for p in source.problems)
    return summary


def _ingest_scanned(
    session: Session, collection: str, scan: Callable[[], Source], **kwargs: Any
) -> Op[IngestSummary]:
    source = yield Offload(scan)
    return (yield from ingest_source(session, collection, source, **kwargs))


def ingest_folder(
    session: Session, collection: str, folder: str | Path, recursive: bool, **kwargs: Any
) -> Op[IngestSummary]:
    scan = functools.partial(from_folder, Path(folder), recursive=recursive)
    return _ingest_scanned(session, collection, scan, **kwargs)


def ingest_glob(
    session: Session, collection: str, pattern: str, **kwargs: Any
) -> Op[IngestSummary]:
    return _ingest_scanned(session, collection, functools.partial(from_glob, pattern), **kwargs)


def ingest_csv(
    session: Session, collection: str, csv_path: str | Path, **kwargs: Any
) -> Op[IngestSummary]:
    scan = functools.partial(from_csv, Path(csv_path))
    return _ingest_scanned(session, collection, scan, **kwargs)


# -- search and items ------------------------------------------------------------------------


def search(session: Session, collection: str, query: QueryLike, **options: Any) -> Op[QueryResult]:
    """search_batch's options; QueryFailed when the query's result carries an error."""
    result = (yield from search_batch(session, collection, [query], **options))[0]
    if result.error is not None:
        raise QueryFailed(f"query failed: {result.error.message}")
    return result


def search_batch(
    session: Session, collection: str, queries: Sequence[QueryLike], **options: Any
) -> Op[list[QueryResult]]:
    """One result per query, in order, in as many Search calls as the limits need.
    ``options``: RisClient.search_batch's (client/convert.py builds the request)."""
    build = functools.partial(convert.search_request, collection, queries, **options)
    request = yield Offload(build)  # reads the query images
    calls, oversize = search_calls(request.queries, (yield from limits(session)))
    answers = {i: oversize_result(reason) for i, reason in oversize.items()}
    for positions in calls:
        part = convert.search_part(request, positions)
        response = yield Unary("Search", part, f"search {collection}")
        answers.update(zip(positions, convert.query_results(response), strict=True))
    return [answers[i] for i in range(len(request.queries))]


def get(
    collection: str, ids: Iterable[str] | None, *, include_vectors: bool, **options: Any
) -> Op[list[StoredItem]]:
    request = convert.get_request(collection, ids, include_vectors=include_vectors, **options)
    read = functools.partial(convert.stored_items, with_vectors=include_vectors)
    return _call("Get", request, f"get from {collection}", read)


def delete(collection: str, ids: Iterable[str] | None, **filters: Any) -> Op[int]:
    request = convert.delete_request(collection, ids, **filters)
    return _call("Delete", request, f"delete from {collection}", convert.deleted)


def count(collection: str, **filters: Any) -> Op[int]:
    request = convert.count_request(collection, **filters)
    return _call("Count", request, f"count {collection}", convert.counted)


def list_items_page(collection: str, *, include_vectors: bool, **options: Any) -> Op[ItemPage]:
    request = convert.list_items_request(collection, include_vectors=include_vectors, **options)
    read = functools.partial(convert.item_page, with_vectors=include_vectors)
    return _call("ListItems", request, f"list items of {collection}", read)


class ItemPages:
    """iter_items' cursor: the operation reading each next page (a retried call of its own, so a
    long listing survives a restart of the service), None once the last page is read."""

    def __init__(self, collection: str, **options: Any) -> None:
        """``options``: list_items_page's but the token."""
        self._page = functools.partial(list_items_page, collection, **options)
        self._token: str | None = ""  # None: no page left

    def next_page(self) -> Op[list[StoredItem]] | None:
        return None if self._token is None else self._read(self._token)

    def _read(self, token: str) -> Op[list[StoredItem]]:
        page = yield from self._page(page_token=token)
        self._token = page.next_page_token or None
        return page.items
