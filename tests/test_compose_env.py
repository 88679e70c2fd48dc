"""Both services, as separate processes, configured by exactly the compose file's environment.

The only rewrites are the ones Docker's network does for us: service names become loopback
addresses, `0.0.0.0` binds become 127.0.0.1 (tests never listen beyond loopback), and the
container's /models paths become this checkout's models/. Milvus is a real standalone server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import pytest
from embedder_fixtures import SERVED_DIM
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_compose import load, service_env

from ris.api import search_pb2, search_pb2_grpc
from ris.tools.harness import free_port, stop_process
from ris.tools.milvus_standalone import MilvusServerHandle

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0

pytestmark = pytest.mark.milvus_server


def _rewrite(env: dict[str, str], names: dict[str, str]) -> dict[str, str]:
    """Apply the container network's name resolution and the test's loopback-only rule."""
    out = {}
    for key, value in env.items():
        for old, new in names.items():
            value = value.replace(old, new)
        out[key] = "127.0.0.1" if value == "0.0.0.0" else value
    return out


def _wait_serving(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"{address} exited {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    pytest.fail(f"{address} not serving after {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


@contextmanager
def _start(
    module: str, env: dict[str, str], address: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RIS_")} | env
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env=full_env, stdout=out, stderr=out
        )
    try:
        _wait_serving(address, process, log)
        yield process
    finally:
        stop_process(process, timeout=30)


@pytest.fixture(scope="module")
def compose_stack(
    milvus_server: MilvusServerHandle, model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Embedder + search service from the compose env; yields the search service address."""
    compose = load("docker-compose.yml")
    tmp = tmp_path_factory.mktemp("compose")
    embedder_port, search_port = free_port(), free_port()
    embedder_env = _rewrite(
        service_env(compose, "embedder"),
        {"/models/resnet50.onnx": str(model_path), "/models/trt_cache": str(tmp / "trt")},
    )
    # The compose file publishes fixed ports; each process here gets a free loopback one.
    embedder_env |= {"RIS_EMBEDDER_PORT": str(embedder_port), "RIS_EMBEDDER_METRICS_PORT": "0"}
    search_env = _rewrite(
        service_env(compose, "search"),
        {
            "embedder:50051": f"127.0.0.1:{embedder_port}",
            "http://standalone:19530": milvus_server.uri,
        },
    )
    search_env |= {"RIS_SEARCH_PORT": str(search_port), "RIS_SEARCH_METRICS_PORT": "0"}
    assert set(embedder_env) == set(service_env(compose, "embedder")) | {"RIS_EMBEDDER_PORT"}
    assert set(search_env) == set(service_env(compose, "search"))
    embedder_address, search_address = f"127.0.0.1:{embedder_port}", f"127.0.0.1:{search_port}"
    with ExitStack() as stack:
        stack.enter_context(
            _start("ris.embedder", embedder_env, embedder_address, tmp / "embedder.log")
        )
        stack.enter_context(_start("ris.search", search_env, search_address, tmp / "search.log"))
        yield search_address


def test_compose_env_serves_ingest_and_search_on_real_milvus(
    compose_stack: str, caltech: Path
) -> None:
    photos = (
        sorted((caltech / "train" / "Leopards").glob("*.jpg"))[:3]
        + sorted((caltech / "train" / "Faces").glob("*.jpg"))[:3]
    )
    items = [
        search_pb2.Item(id=f"{p.parent.name}/{p.name}", image=p.read_bytes(), label=p.parent.name)
        for p in photos
    ]
    with grpc.insecure_channel(compose_stack) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        stub.CreateCollection(search_pb2.CreateCollectionRequest(name="compose_env"))
        try:
            summary = stub.Ingest(
                iter([search_pb2.IngestRequest(collection="compose_env", items=items)]),
                timeout=300,
            )
            assert (summary.stored, summary.failed) == (len(items), 0)
            query = (caltech / "test" / "Leopards").glob("*.jpg")
            reply = stub.Search(
                search_pb2.SearchRequest(
                    collection="compose_env",
                    queries=[search_pb2.Query(image=next(iter(sorted(query))).read_bytes())],
                    top_k=3,
                ),
                timeout=60,
            )
            assert [hit.label for hit in reply.results[0].hits] == ["Leopards"] * 3
            info = stub.DescribeCollection(search_pb2.DescribeCollectionRequest(name="compose_env"))
            assert info.count == len(items) and info.dim == SERVED_DIM
        finally:
            stub.DropCollection(search_pb2.DropCollectionRequest(name="compose_env"))
