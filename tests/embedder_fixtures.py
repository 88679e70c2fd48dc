"""Embedder test fixtures: real servers on 127.0.0.1 with the real model, and test images.

Registered from tests/conftest.py with `pytest_plugins = ["tests.embedder_fixtures"]`.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from ris.api import embedder_pb2, embedder_pb2_grpc
from ris.embedder.config import EmbedderConfig
from ris.embedder.server import EmbedderServer, start_server

# Limits of the shared test server, small enough that tests can exceed them cheaply.
TEST_MAX_IMAGES_PER_REQUEST = 16
TEST_MAX_IMAGE_PIXELS = 2_000_000
TEST_MAX_MESSAGE_BYTES = 2 * 1024 * 1024


def encode(array: np.ndarray, fmt: str = "JPEG", **params: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt, **params)
    return out.getvalue()


def synthetic_image(seed: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A smooth, seeded RGB picture: gradients plus blobs, so images differ and JPEG stays small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy = rng.uniform(0.005, 0.05, 2).tolist()
        phase = rng.uniform(0, 6.28)
        channels.append(127 + 120 * np.sin(fx * x + fy * y + phase))
    image = np.stack(channels, axis=-1)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(10, 60)
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r**2
        image[mask] = rng.uniform(0, 255, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def embedder_images() -> list[bytes]:
    """Twelve small JPEG/PNG images of different sizes."""
    images = []
    for i in range(12):
        array = synthetic_image(i, width=200 + 20 * i, height=180 + 10 * i)
        images.append(encode(array, "PNG") if i % 4 == 3 else encode(array, "JPEG", quality=90))
    return images


# What the shipped default (pooling gem_softmax) embeds into: 2048 GeM + 1000 softmax values.
# Tests that start services with the defaults (subprocesses, the launcher) expect it.
SERVED_DIM = 3048
GEM_DIM = 2048  # what embedder_config serves (pooling gem)


def embedder_config(model_path: Path, **overrides: object) -> EmbedderConfig:
    """Test defaults: free ports, loopback, 2 ORT threads, limits small enough to exceed."""
    base = EmbedderConfig(
        host="127.0.0.1",
        port=0,
        model_paths=[model_path],
        # The service mechanics run in the GeM space (2048-d); the shipped default, gem_softmax,
        # is served by the tests that ask for it and by every test that starts a subprocess.
        pooling="gem",
        provider="cpu",
        max_batch_size=8,
        max_queue_delay_ms=20.0,
        max_queue_images=64,
        max_images_per_request=TEST_MAX_IMAGES_PER_REQUEST,
        max_image_pixels=TEST_MAX_IMAGE_PIXELS,
        max_message_bytes=TEST_MAX_MESSAGE_BYTES,
        decode_workers=2,
        intra_op_threads=2,
        grpc_workers=32,
        metrics_port=0,
        shutdown_grace_s=5.0,
    )
    return dataclasses.replace(base, **overrides).validate()  # type: ignore[arg-type]


@contextmanager
def running_embedder(config: EmbedderConfig) -> Iterator[EmbedderServer]:
    server = start_server(config)
    try:
        yield server
    finally:
        server.stop(grace=1.0)


@pytest.fixture(scope="session")
def make_embedder(model_path: Path) -> Callable[..., object]:
    """`with make_embedder(max_batch_size=1) as server:` — a private server with overrides."""

    def factory(**overrides: object) -> object:
        return running_embedder(embedder_config(model_path, **overrides))

    return factory


@pytest.fixture(scope="session")
def embedder_server(model_path: Path) -> Iterator[EmbedderServer]:
    """The shared embedder: real model, CPU, batches of up to 8, metrics on."""
    with running_embedder(embedder_config(model_path)) as server:
        yield server


@pytest.fixture(scope="session")
def embedder_channel(embedder_server: EmbedderServer) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(
        embedder_server.address,
        options=[("grpc.max_send_message_length", 16 * 1024 * 1024)],
    )
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def embedder_stub(embedder_channel: grpc.Channel) -> embedder_pb2_grpc.EmbedderStub:
    return embedder_pb2_grpc.EmbedderStub(embedder_channel)


def embed_request(images: list[bytes], ids: list[str] | None = None) -> embedder_pb2.EmbedRequest:
    ids = ids or [f"img{i}" for i in range(len(images))]
    return embedder_pb2.EmbedRequest(
        images=[embedder_pb2.ImageInput(data=d, id=i) for d, i in zip(images, ids, strict=True)]
    )


def scrape(metrics_port: int) -> dict[str, float]:
    """The server's /metrics as {'name{label="v",...}': value} (real HTTP, real parser)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def metric_sum(values: dict[str, float], prefix: str) -> float:
    """Sum of every sample whose name (before labels) is exactly prefix."""
    return sum(v for k, v in values.items() if k.split("{", 1)[0] == prefix)
