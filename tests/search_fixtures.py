"""Search service test fixtures: the real service on 127.0.0.1 over the real embedder and a real
Milvus (Lite in a temp dir, or the session's milvus-server for ``milvus_server`` tests).

Registered from tests/conftest.py with ``pytest_plugins`` (names: ``search_fixtures``, which needs
``embedder_fixtures`` and ``milvus_server``).
"""

from __future__ import annotations

import dataclasses
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from ris.api import search_pb2, search_pb2_grpc
from ris.client import RetryPolicy, RisClient
from ris.launcher.serve import ServeOptions, Services
from ris.search.config import SearchConfig
from ris.search.server import SearchServer, start_server
from ris.tools.harness import ServiceProcess, service_env

# A few visually distinct Caltech-101 classes; PER_CLASS candidates each plus one query.
CLASSES = ("Leopards", "Motorbikes", "airplanes", "accordion", "sunflower")
PER_CLASS = 4


@dataclass(frozen=True)
class Photo:
    id: str
    path: Path
    label: str
    data: bytes


def search_config(embedder_address: str, milvus_uri: str, **overrides: object) -> SearchConfig:
    """Test defaults: loopback, free ports, metrics on, small batches so streams span several."""
    base = SearchConfig(
        host="127.0.0.1",
        port=0,
        embedder_address=embedder_address,
        milvus_uri=milvus_uri,
        ingest_batch_size=8,
        grpc_workers=8,
        metrics_port=0,
        shutdown_grace_s=2.0,
        milvus_timeout_s=30.0,
    )
    return dataclasses.replace(base, **overrides).validate()  # type: ignore[arg-type]


@contextmanager
def running_search(config: SearchConfig) -> Iterator[SearchServer]:
    server = start_server(config)
    try:
        yield server
    finally:
        server.stop(grace=1.0)


@contextmanager
def search_client(address: str) -> Iterator[search_pb2_grpc.SearchServiceStub]:
    channel = grpc.insecure_channel(address)
    try:
        yield search_pb2_grpc.SearchServiceStub(channel)
    finally:
        channel.close()


@pytest.fixture(scope="session")
def photos(caltech: Path) -> list[Photo]:
    """PER_CLASS candidate photos of each class in CLASSES (ids ``<class>-<n>``)."""
    out = []
    for label in CLASSES:
        files = sorted((caltech / "train" / label).glob("*.jpg"))[:PER_CLASS]
        assert len(files) == PER_CLASS, label
        for n, path in enumerate(files):
            out.append(Photo(f"{label}-{n}", path, label, path.read_bytes()))
    return out


@pytest.fixture(scope="session")
def query_photos(caltech: Path) -> dict[str, bytes]:
    """One held-out query photo per class (not among the candidates)."""
    return {
        label: next(iter(sorted((caltech / "test" / label).glob("*.jpg")))).read_bytes()
        for label in CLASSES
    }


@pytest.fixture(
    scope="session",
    params=["lite", pytest.param("server", marks=pytest.mark.milvus_server)],
)
def milvus_uri(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Milvus Lite in a temp dir, or the real standalone server started for the session."""
    if request.param == "lite":
        return str(tmp_path_factory.mktemp("milvus-lite") / "ris.db")
    return str(request.getfixturevalue("milvus_server").uri)


@pytest.fixture(scope="session")
def search_server(
    milvus_uri: str, embedder_server: object, caltech: Path
) -> Iterator[SearchServer]:
    """The shared search service for one Milvus backend; server-side paths under caltech/."""
    config = search_config(
        embedder_server.address,  # type: ignore[attr-defined]
        milvus_uri,
        allowed_roots=[caltech],
    )
    with running_search(config) as server:
        yield server


@pytest.fixture(scope="session")
def search_stub(search_server: SearchServer) -> Iterator[search_pb2_grpc.SearchServiceStub]:
    with search_client(search_server.address) as stub:
        yield stub


@pytest.fixture
def collection(search_stub: search_pb2_grpc.SearchServiceStub) -> Iterator[str]:
    """A fresh, empty collection with the defaults (COSINE, AUTOINDEX); dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    search_stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
    yield name
    search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name))


def item_of(photo: Photo, **metadata: str) -> search_pb2.Item:
    return search_pb2.Item(
        id=photo.id,
        image=photo.data,
        label=photo.label,
        display_uri=str(photo.path),
        metadata={"class": photo.label, **metadata},
    )


def ingest(
    stub: search_pb2_grpc.SearchServiceStub,
    collection: str,
    items: list[search_pb2.Item],
    per_message: int = 5,
) -> search_pb2.IngestResponse:
    """One Ingest call, ``per_message`` items per stream message (first names the collection)."""

    def messages() -> Iterator[search_pb2.IngestRequest]:
        for start in range(0, max(len(items), 1), per_message):
            yield search_pb2.IngestRequest(
                collection=collection if start == 0 else "",
                items=items[start : start + per_message],
            )

    return stub.Ingest(messages(), timeout=300)


@pytest.fixture
def filled(
    search_stub: search_pb2_grpc.SearchServiceStub, collection: str, photos: list[Photo]
) -> str:
    """``collection`` holding every photo (ids, labels, metadata class/n)."""
    items = [item_of(p, n=str(i)) for i, p in enumerate(photos)]
    summary = ingest(search_stub, collection, items)
    assert (summary.stored, summary.failed) == (len(photos), 0), summary.failures
    return collection


@pytest.fixture(scope="session")
def catalog(search_stub: search_pb2_grpc.SearchServiceStub, photos: list[Photo]) -> Iterator[str]:
    """A read-only collection holding every photo, shared by the tests that only read."""
    name = f"catalog_{uuid.uuid4().hex[:8]}"
    search_stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
    summary = ingest(search_stub, name, [item_of(p, n=str(i)) for i, p in enumerate(photos)])
    assert (summary.stored, summary.failed) == (len(photos), 0), summary.failures
    yield name
    search_stub.DropCollection(search_pb2.DropCollectionRequest(name=name))


def offline_augmented(raw: np.ndarray, top_n: int, alpha: float) -> np.ndarray:
    """Database-side augmentation computed here, exhaustively: each row becomes the
    sim^alpha-weighted sum of its top_n + 1 rows by cosine (itself included), normalised."""
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    sim = unit @ unit.T
    idx = np.argsort(-sim, axis=1, kind="stable")[:, : top_n + 1]
    weights = np.maximum(np.take_along_axis(sim, idx, axis=1), 0.0) ** alpha
    mixed = np.einsum("qn,qnc->qc", weights, unit[idx])
    return mixed / np.linalg.norm(mixed, axis=1, keepdims=True)


@contextmanager
def search_process(env: dict[str, str], cwd: Path, start_timeout_s: float = 60.0) -> Iterator[str]:
    """``python -m ris.search`` as its own process, configured by ``env`` over os.environ;
    yields its address once it prints it; after the block, SIGTERM and a clean exit (status 0)
    within 30 s, else it is killed."""
    service = ServiceProcess(
        "search service",
        [sys.executable, "-m", "ris.search"],
        env=service_env({"RIS_SEARCH_PORT": "0", **env}),
        cwd=cwd,
    )
    try:
        service.start(start_timeout_s)
        yield service.address
        assert service.stop(timeout=30) == 0, "search service did not exit cleanly on SIGTERM"
    finally:
        service.kill()


@contextmanager
def serving(
    model_path: Path, milvus_dir: Path, allowed_roots: Path | None = None
) -> Iterator[Services]:
    """Both services in this process (``ris serve``'s Services) on free ports, on the CPU, over
    Milvus Lite in ``milvus_dir``; server-side reads (item images) inside ``allowed_roots`` only,
    none when it is None."""
    options = ServeOptions(
        port=0,
        embedder_port=0,
        model=model_path,
        provider="cpu",
        milvus_uri=str(milvus_dir / "m.db"),
    )
    with pytest.MonkeyPatch.context() as env:
        if allowed_roots is not None:
            env.setenv("RIS_SEARCH_ALLOWED_ROOTS", str(allowed_roots))
        running = Services(options)
    with running:
        yield running


@contextmanager
def live_client(address: str) -> Iterator[RisClient]:
    """A RisClient with a few quick retries and a long timeout, once the service answers."""
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.1)
    with RisClient(address=address, timeout=120, retry=retry) as client:
        client.wait_ready(30)
        yield client
