"""Backpressure, deadlines, shutdown and provider selection, each on a private real server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from embedder_fixtures import SERVED_DIM, embed_request, embedder_config, metric_sum, scrape

from ris.api import embedder_pb2, embedder_pb2_grpc
from ris.embedder.runtime import ProviderUnavailableError, gpu_providers_usable
from ris.embedder.server import start_server

ROOT = Path(__file__).resolve().parent.parent


def wait_until(condition, timeout: float = 30.0, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


@pytest.fixture(scope="module")
def slow_embedder(make_embedder):
    """One image per batch and room for 4 queued images: easy to fill and to keep busy.

    Asks for CUDA with fallback allowed: on a machine without a GPU it must run and say CPU.
    """
    with make_embedder(
        max_batch_size=1,
        max_queue_images=4,
        max_images_per_request=4,
        max_queue_delay_ms=0.0,
        provider="cuda",
        allow_fallback=True,
    ) as server:
        channel = grpc.insecure_channel(server.address)
        yield server, embedder_pb2_grpc.EmbedderStub(channel)
        channel.close()


def test_fallback_reports_the_provider_in_use(slow_embedder):
    _, stub = slow_embedder
    info = stub.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=10).default_model
    expected = "CUDAExecutionProvider" if gpu_providers_usable() else "CPUExecutionProvider"
    assert info.execution_provider == expected
    assert info.providers[0] == expected


@pytest.mark.skipif(gpu_providers_usable(), reason="a GPU is present: CUDA would start")
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_gpu_provider_without_gpu_fails_clearly(model_path, provider):
    with pytest.raises(ProviderUnavailableError, match="allow-fallback"):
        start_server(embedder_config(model_path, provider=provider, allow_fallback=False))


def test_full_queue_gives_resource_exhausted(slow_embedder, embedder_images):
    """Four images fill the queue; a fifth is refused. The four leave one by one (~50 ms each
    on two cores), so on a loaded machine the fifth can arrive after one has left and be
    admitted: then the whole round is tried again (at most 5 rounds) until it meets a full
    queue."""
    server, stub = slow_embedder
    refused: grpc.RpcError | None = None
    for _round in range(5):
        first = stub.Embed.future(embed_request(embedder_images[:4]), timeout=60)
        assert wait_until(lambda: server.core.admission.pending == 4)
        try:
            stub.Embed(embed_request(embedder_images[4:5]), timeout=30)
        except grpc.RpcError as error:
            refused = error
        assert [len(r.embedding) for r in first.result().results] == [2048] * 4
        if refused is not None:
            break
        assert wait_until(lambda: server.core.admission.pending == 0)
    assert refused is not None, "a fifth image never met the full queue in 5 rounds"
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue full" in refused.details()
    # Capacity comes back once the work is answered.
    assert wait_until(lambda: server.core.admission.pending == 0)
    assert len(stub.Embed(embed_request(embedder_images[4:5]), timeout=30).results) == 1


def test_expired_work_is_dropped_not_run(slow_embedder, embedder_images):
    server, stub = slow_embedder
    before = scrape(server.metrics_port)
    busy = stub.Embed.future(embed_request(embedder_images[:3]), timeout=60)
    assert wait_until(lambda: server.core.admission.pending == 3)
    with pytest.raises(grpc.RpcError) as info:
        stub.Embed(embed_request(embedder_images[3:4]), timeout=0.05)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    busy.result()
    assert wait_until(lambda: server.core.admission.pending == 0)
    after = scrape(server.metrics_port)
    ran = metric_sum(after, "ris_embedder_images_total") - metric_sum(
        before, "ris_embedder_images_total"
    )
    dropped = metric_sum(after, "ris_embedder_item_errors_total") - metric_sum(
        before, "ris_embedder_item_errors_total"
    )
    assert ran == 3, "the expired image reached the model"
    assert dropped == 1


def test_stop_drains_in_flight_requests(make_embedder, embedder_images):
    with make_embedder(max_batch_size=1, max_queue_delay_ms=0.0) as server:
        channel = grpc.insecure_channel(server.address)
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        in_flight = stub.Embed.future(embed_request(embedder_images[:4]), timeout=60)
        assert wait_until(lambda: server.core.admission.pending == 4)
        server.stop(grace=30.0)
        assert server.wait(0)
        response = in_flight.result()
        assert [len(r.embedding) for r in response.results] == [2048] * 4
        with pytest.raises(grpc.RpcError) as info:
            stub.Embed(embed_request(embedder_images[:1]), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        channel.close()


def test_sigterm_drains_and_exits(model_path, embedder_images):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RIS_EMBEDDER_MAX_BATCH_SIZE": "1"}
    command = [
        sys.executable,
        "-m",
        "ris.embedder",
        "--port",
        "0",
        "--provider",
        "cpu",
        "--model",
        str(model_path),
        "--intra-op-threads",
        "2",
        "--log-level",
        "WARNING",
        "--metrics-port",
        "0",
    ]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()  # "embedder listening on 127.0.0.1:PORT"
        match = re.search(r"listening on (127\.0\.0\.1:\d+) metrics 127\.0\.0\.1:(\d+)", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        channel = grpc.insecure_channel(match.group(1))
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        in_flight = stub.Embed.future(embed_request(embedder_images[:3]), timeout=60)
        metrics_port = int(match.group(2))
        assert wait_until(
            lambda: scrape(metrics_port).get("ris_embedder_pending_images") == 3, step=0.02
        )
        proc.send_signal(signal.SIGTERM)
        assert [len(r.embedding) for r in in_flight.result().results] == [SERVED_DIM] * 3
        assert proc.wait(timeout=60) == 0
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
