"""`ris serve` as a process: after cancelled idle EmbedStreams, cancelled and failed ingests, the
embedder still answers and SIGTERM stops everything within shutdown_grace_s + 5 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from embedder_fixtures import encode, synthetic_image
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ris.api import embedder_pb2, embedder_pb2_grpc, search_pb2, search_pb2_grpc
from ris.client import RisClient
from ris.tools.harness import free_port

ROOT = Path(__file__).resolve().parent.parent
GRACE_S = 2.0


def _idle_after_one(image: bytes, hold: list[bool]) -> Iterator[embedder_pb2.EmbedRequest]:
    yield embedder_pb2.EmbedRequest(images=[embedder_pb2.ImageInput(id="a", data=image)])
    deadline = time.monotonic() + 30
    while hold and time.monotonic() < deadline:
        time.sleep(0.05)


def test_sigterm_after_cancelled_streams_and_failed_ingests_exits_within_grace(
    model_path: Path, tmp_path: Path
) -> None:
    port, embedder_port = free_port(), free_port()
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        RIS_SEARCH_SHUTDOWN_GRACE_S=str(GRACE_S),
        RIS_EMBEDDER_SHUTDOWN_GRACE_S=str(GRACE_S),
        RIS_EMBEDDER_MAX_IMAGE_PIXELS="1000000",
        RIS_EMBEDDER_GRPC_WORKERS="4",  # few slots: a leaked handler would show at once
        RIS_EMBEDDER_MAX_CONCURRENT_STREAMS="4",
    )
    cmd = [sys.executable, "-m", "ris.cli", "serve", "--port", str(port)]
    cmd += ["--embedder-port", str(embedder_port), "--model", str(model_path)]
    cmd += ["--provider", "cpu", "--milvus-uri", str(tmp_path / "ris.db")]
    log = (tmp_path / "serve.log").open("w+")
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        address, embedder_address = f"127.0.0.1:{port}", f"127.0.0.1:{embedder_port}"
        small = encode(synthetic_image(1, 160, 120))
        large = encode(synthetic_image(2, 1200, 1000))  # over max_image_pixels: that item fails
        with RisClient(address=address) as ris:
            ris.wait_ready(timeout=180)
            ris.create_collection("photos")
        with grpc.insecure_channel(embedder_address) as channel:
            stub = embedder_pb2_grpc.EmbedderStub(channel)
            for _ in range(20):  # answered once, then idle, then cancelled
                hold = [True]
                call = stub.EmbedStream(_idle_after_one(small, hold), timeout=60)
                assert len(next(call).results) == 1
                call.cancel()
                hold.clear()
            time.sleep(1.0)  # each cancelled handler notices within its poll interval
            # only 4 unary and 4 stream slots: leaked handlers would refuse these
            assert (
                len(
                    stub.Embed(
                        embedder_pb2.EmbedRequest(images=[embedder_pb2.ImageInput(data=small)]),
                        timeout=30,
                    ).results
                )
                == 1
            )
            for _ in range(4):
                hold = [True]
                call = stub.EmbedStream(_idle_after_one(small, hold), timeout=60)
                assert len(next(call).results) == 1
                call.cancel()
                hold.clear()
        with grpc.insecure_channel(address) as channel:
            search = search_pb2_grpc.SearchServiceStub(channel)
            for _ in range(3):  # a failed large-photo item each time
                response = search.Ingest(
                    iter(
                        [
                            search_pb2.IngestRequest(
                                collection="photos",
                                items=[
                                    search_pb2.Item(id="ok", image=small),
                                    search_pb2.Item(id="big", image=large),
                                ],
                            )
                        ]
                    ),
                    timeout=60,
                )
                assert (response.stored, response.failed) == (1, 1)
            for _ in range(3):  # cancelled ingests, mid-stream
                hold = [True]

                def stream(hold: list[bool] = hold) -> Iterator[search_pb2.IngestRequest]:
                    yield search_pb2.IngestRequest(
                        collection="photos", items=[search_pb2.Item(id="c", image=small)]
                    )
                    deadline = time.monotonic() + 30
                    while hold and time.monotonic() < deadline:
                        time.sleep(0.05)

                future = search.Ingest.future(stream(), timeout=60)
                time.sleep(0.3)
                future.cancel()
                hold.clear()
        with grpc.insecure_channel(embedder_address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=GRACE_S + 5) == 0
        assert time.monotonic() - started < GRACE_S + 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.seek(0)
        print(log.read())
        log.close()
