"""Bad input through the live embedder: every item answered (a vector or code 3 with the reason),
good neighbours unaffected, the service healthy afterwards."""

from __future__ import annotations

import re

import numpy as np
import pytest
from embedder_fixtures import TEST_MAX_IMAGE_PIXELS, embed_request
from fuzz_inputs import any_image_bytes, catalogue, encode, exif_rotated_jpeg, photo
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

INVALID_ARGUMENT = 3
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def assert_healthy(channel, stub, good: bytes) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    result = stub.Embed(embed_request([good]), timeout=60).results[0]
    assert len(result.embedding) == 2048


def test_named_bad_inputs_each_answered_with_reason(embedder_channel, embedder_stub):
    cases = catalogue()
    too_big = encode(Image.new("RGB", (1500, 1500)), "PNG")  # over the test server's 2 MP
    cases.append(("over pixel limit", too_big, "too many pixels"))
    assert TEST_MAX_IMAGE_PIXELS < 1500 * 1500
    good = cases[[name for name, _, _ in cases].index("jpeg")][1]
    solo = np.asarray(embedder_stub.Embed(embed_request([good]), timeout=60).results[0].embedding)
    # Each bad item sits between two copies of the good image, all in one request.
    images, ids = [], []
    for name, data, _ in cases:
        images += [good, data]
        ids += [f"good-before-{name}", name]
    images.append(good)
    ids.append("good-last")
    reasons = {name: reason for name, _, reason in cases}
    for start in range(0, len(images), 16):  # the test server takes 16 images per request
        response = embedder_stub.Embed(
            embed_request(images[start : start + 16], ids[start : start + 16]), timeout=120
        )
        assert len(response.results) == len(images[start : start + 16])
        for item_id, result in zip(ids[start : start + 16], response.results, strict=True):
            expected = reasons.get(item_id)
            if item_id.startswith("good") or expected is None:
                assert not result.error.code, (item_id, result.error.message)
                vector = np.asarray(result.embedding)
                assert vector.shape == (2048,) and np.isfinite(vector).all(), item_id
                assert abs(np.linalg.norm(vector) - 1) < 1e-3, item_id
                if item_id.startswith("good"):
                    assert np.allclose(vector, solo, atol=1e-4), item_id
            else:
                assert result.error.code == INVALID_ARGUMENT, (item_id, result.error)
                assert not result.embedding, item_id
                assert re.search(expected, result.error.message), (item_id, result.error.message)
    assert_healthy(embedder_channel, embedder_stub, good)


def test_exif_rotation_matches_physically_rotated(embedder_stub):
    upright = photo(3).transpose(Image.Transpose.ROTATE_270)  # what orientation 6 displays
    pair = [exif_rotated_jpeg(6), encode(upright, "JPEG", quality=90)]
    results = embedder_stub.Embed(embed_request(pair), timeout=60).results
    a, b = (np.asarray(r.embedding) for r in results)
    unrotated = np.asarray(
        embedder_stub.Embed(embed_request([encode(photo(3), "JPEG", quality=90)]), timeout=60)
        .results[0]
        .embedding
    )
    assert float(a @ b) > 0.97  # same pixels, two JPEG encodings
    assert float(a @ b) > float(a @ unrotated) + 0.01  # the rotation was applied


@settings(
    max_examples=25,
    deadline=None,  # each call has a 60 s gRPC deadline instead
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(st.lists(any_image_bytes, min_size=1, max_size=6))
def test_fuzzed_bytes_through_embed(embedder_stub, embedder_channel, images):
    response = embedder_stub.Embed(embed_request(images), timeout=60)
    assert len(response.results) == len(images)
    for result in response.results:
        if result.error.code:
            assert result.error.code == INVALID_ARGUMENT and result.error.message
        else:
            assert len(result.embedding) == 2048
            assert np.isfinite(np.asarray(result.embedding)).all()


def test_healthy_after_fuzzing(embedder_channel, embedder_stub):
    assert_healthy(embedder_channel, embedder_stub, encode(photo(9), "JPEG"))
