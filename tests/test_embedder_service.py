"""The embedder over real gRPC on 127.0.0.1 with the real ResNet50 model."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from embedder_fixtures import (
    TEST_MAX_IMAGE_PIXELS,
    TEST_MAX_IMAGES_PER_REQUEST,
    TEST_MAX_MESSAGE_BYTES,
    embed_request,
    encode,
    metric_sum,
    scrape,
    synthetic_image,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ris.api import embedder_pb2, embedder_pb2_grpc
from ris.embedder.config import EmbedderConfig
from ris.embedder.model_metadata import embedding_version, file_version, read_model_metadata
from ris.embedder.preprocessing import PreprocessSpec, prepare, with_resize_mode

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


@pytest.fixture(scope="module")
def direct_session(model_path):
    """The ONNX model run directly, with default session options: the reference."""
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])


def served_spec(model_path, resize_mode: str = EmbedderConfig().resize_mode) -> PreprocessSpec:
    """The geometry the embedder applies: the model's spec with the configured resize_mode."""
    return with_resize_mode(read_model_metadata(model_path).preprocessing, resize_mode)


def direct_vectors(
    session,
    model_path,
    images: list[bytes],
    output: str = "gem",
    spec: PreprocessSpec | None = None,
) -> np.ndarray:
    spec = spec or served_spec(model_path)
    batch = np.stack([prepare(data, spec) for data in images])
    (raw,) = session.run([output], {"images": batch})
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


def vectors_of(response: embedder_pb2.EmbedResponse) -> np.ndarray:
    return np.array([list(r.embedding) for r in response.results], dtype=np.float32)


def test_vectors_equal_direct_onnx_run(embedder_stub, embedder_images, direct_session, model_path):
    images = embedder_images[:6]
    response = embedder_stub.Embed(embed_request(images, [f"id-{i}" for i in range(6)]), timeout=60)
    assert [r.id for r in response.results] == [f"id-{i}" for i in range(6)]
    assert all(not r.HasField("error") for r in response.results)
    got = vectors_of(response)
    assert got.shape == (6, 2048) and response.dim == 2048
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    expected = direct_vectors(direct_session, model_path, images)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Different images really give different vectors (not a constant output).
    assert float(got[0] @ got[1]) < 0.999
    served = embedding_version(file_version(model_path), "gem3", "squash")
    assert response.model_version == served


def test_stream_answers_each_message_in_order(
    embedder_stub, embedder_images, direct_session, model_path
):
    messages = [embedder_images[i : i + 2] for i in range(0, 8, 2)]

    def requests():
        for n, pair in enumerate(messages):
            yield embed_request(pair, [f"m{n}a", f"m{n}b"])

    responses = list(embedder_stub.EmbedStream(requests(), timeout=60))
    assert [[r.id for r in resp.results] for resp in responses] == [
        [f"m{n}a", f"m{n}b"] for n in range(len(messages))
    ]
    got = np.concatenate([vectors_of(resp) for resp in responses])
    expected = direct_vectors(direct_session, model_path, embedder_images[:8])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_bad_items_fail_alone_with_reasons(embedder_stub, embedder_images):
    good = embedder_images[0]
    jpeg = encode(synthetic_image(99), "JPEG")
    too_big = encode(np.zeros((1500, 1500, 3), dtype=np.uint8), "PNG")  # 2.25 Mpx > limit
    assert TEST_MAX_IMAGE_PIXELS < 1500 * 1500
    cases = {
        "good": good,
        "not_image": b"this is plain text, not a picture at all",
        "truncated": jpeg[: len(jpeg) // 2],
        "empty": b"",
        "too_many_pixels": too_big,
        "wrong_type_pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF",
        "good_again": good,
    }
    response = embedder_stub.Embed(embed_request(list(cases.values()), list(cases)), timeout=60)
    results = {r.id: r for r in response.results}
    assert [r.id for r in response.results] == list(cases)
    for name in ("good", "good_again"):
        assert not results[name].HasField("error") and len(results[name].embedding) == 2048
    np.testing.assert_allclose(
        results["good"].embedding, results["good_again"].embedding, atol=1e-6
    )
    alone = embedder_stub.Embed(embed_request([good]), timeout=60).results[0]
    np.testing.assert_allclose(results["good"].embedding, alone.embedding, atol=1e-5)
    reasons = {
        "not_image": "not an image",
        "truncated": "truncated",
        "empty": "empty",
        "too_many_pixels": "too many pixels",
        "wrong_type_pdf": "not an image",
    }
    for name, reason in reasons.items():
        result = results[name]
        assert result.error.code == INVALID_ARGUMENT, name
        assert reason in result.error.message.lower(), (name, result.error.message)
        assert len(result.embedding) == 0


def test_too_many_images_in_one_request(embedder_stub, embedder_images):
    images = [embedder_images[0]] * (TEST_MAX_IMAGES_PER_REQUEST + 1)
    with pytest.raises(grpc.RpcError) as info:
        embedder_stub.Embed(embed_request(images), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_images_per_request" in info.value.details()


def test_oversize_message_is_refused(embedder_stub):
    blob = bytes(TEST_MAX_MESSAGE_BYTES + 1024)
    with pytest.raises(grpc.RpcError) as info:
        embedder_stub.Embed(embed_request([blob]), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unknown_model_is_invalid_argument(embedder_stub, embedder_images):
    request = embed_request(embedder_images[:1])
    request.model = "no-such-model"
    with pytest.raises(grpc.RpcError) as info:
        embedder_stub.Embed(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no-such-model" in info.value.details()


def test_model_can_be_named_explicitly(embedder_stub, embedder_images, model_path):
    meta = read_model_metadata(model_path)
    for name in (meta.name, embedding_version(meta.version, "gem3", "squash")):
        request = embed_request(embedder_images[:1])
        request.model = name
        response = embedder_stub.Embed(request, timeout=30)
        assert response.model == meta.name and len(response.results[0].embedding) == 2048


def test_concurrent_requests_are_batched(embedder_server, embedder_stub, embedder_images):
    before = scrape(embedder_server.metrics_port)
    n = 16
    barrier = threading.Barrier(n, timeout=30)

    def one(i: int) -> int:
        barrier.wait()
        response = embedder_stub.Embed(embed_request([embedder_images[i % 12]]), timeout=60)
        return len(response.results[0].embedding)

    with ThreadPoolExecutor(n) as pool:
        assert list(pool.map(one, range(n))) == [2048] * n
    after = scrape(embedder_server.metrics_port)
    batches = metric_sum(after, "ris_embedder_batches_total") - metric_sum(
        before, "ris_embedder_batches_total"
    )
    images = metric_sum(after, "ris_embedder_images_total") - metric_sum(
        before, "ris_embedder_images_total"
    )
    assert images == n
    assert batches < n / 2, f"{n} concurrent requests ran as {batches} batches"
    singles = (
        f'ris_embedder_batch_size_bucket{{le="1.0",model="{embedder_server.core.default.name}"}}'
    )
    multi = batches - (after[singles] - before.get(singles, 0))
    assert multi >= 1, "no batch held more than one image"


def test_health_serving_and_reflection(embedder_channel):
    health = health_pb2_grpc.HealthStub(embedder_channel)
    for service in ("", "ris.v1.Embedder"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(embedder_channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(reflect.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in reply.list_services_response.service}
    assert {"ris.v1.Embedder", "grpc.health.v1.Health"} <= names


def test_model_info(embedder_stub, model_path):
    info = embedder_stub.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=10)
    meta = read_model_metadata(model_path)
    model = info.default_model
    served = embedding_version(meta.version, "gem3", "squash")
    assert (model.name, model.version, model.dim) == (meta.name, served, 2048)
    assert model.execution_provider == "CPUExecutionProvider"
    assert list(model.providers) == ["CPUExecutionProvider"]
    assert model.precision == "fp32"
    assert model.pooling == "gem3"
    assert model.modality == "image"
    assert model.visual_dims == 0  # GeM alone: the whole embedding is visual
    assert model.max_batch_size == 8
    assert model.max_images_per_request == TEST_MAX_IMAGES_PER_REQUEST
    assert model.max_image_pixels == TEST_MAX_IMAGE_PIXELS
    p = model.preprocessing
    spec = meta.preprocessing
    assert (p.resize_shorter, p.crop_size, p.color_order) == (
        spec.resize_shorter,
        spec.crop_size,
        spec.color_order,
    )
    # The retrieval default (whole image squashed), not the model's ImageNet centre crop.
    assert (spec.resize_mode, p.resize_mode) == ("shorter_crop", "squash")
    np.testing.assert_allclose(list(p.mean), spec.mean, rtol=1e-6)
    assert [m.name for m in info.models if m.modality == "image"] == [meta.name]


def test_metrics_endpoint_counts_requests(embedder_server, embedder_stub, embedder_images):
    before = scrape(embedder_server.metrics_port)
    embedder_stub.Embed(embed_request([embedder_images[0], b"junk"]), timeout=30)
    time.sleep(0.05)
    after = scrape(embedder_server.metrics_port)
    key = 'ris_embedder_requests_total{code="OK",method="Embed"}'
    assert after[key] == before.get(key, 0) + 1
    bad = 'ris_embedder_item_errors_total{reason="invalid_image"}'
    assert after[bad] == before.get(bad, 0) + 1
    for name in (
        "ris_embedder_inference_seconds_count",
        "ris_embedder_queue_seconds_count",
        "ris_embedder_decode_seconds_count",
        "ris_embedder_request_seconds_count",
    ):
        assert metric_sum(after, name) > metric_sum(before, name), name
    assert "ris_embedder_pending_images" in after
    assert after["ris_embedder_images_per_second"] > 0


def test_stream_error_ends_stream_after_earlier_answers(embedder_stub, embedder_images):
    too_many = [embedder_images[0]] * (TEST_MAX_IMAGES_PER_REQUEST + 1)

    def requests():
        yield embed_request(embedder_images[:2])
        yield embed_request(too_many)
        yield embed_request(embedder_images[2:3])

    answers = []
    with pytest.raises(grpc.RpcError) as info:
        for response in embedder_stub.EmbedStream(requests(), timeout=60):
            answers.append(len(response.results))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert answers == [2]


def test_core_without_network_avg_pooling(model_path, embedder_images, direct_session):
    """The plain-function layer, configured for average pooling (the `embedding` output)."""
    from embedder_fixtures import embedder_config

    from ris.embedder.core import EmbedderCore

    core = EmbedderCore(embedder_config(model_path, pooling="avg", metrics_port=None))
    try:
        results = core.embed([("a", embedder_images[0]), ("b", b"")], timeout=60)
        assert core.default.description.pooling == "avg"
    finally:
        core.close()
    assert results[1].vector is None and results[1].error_code == INVALID_ARGUMENT
    expected = direct_vectors(direct_session, model_path, embedder_images[:1], output="embedding")
    assert results[0].vector is not None
    np.testing.assert_allclose(results[0].vector, expected[0], atol=1e-5)


def test_gem_softmax_pooling_appends_the_classifier_softmax(
    model_path, embedder_images, direct_session
):
    """pooling=gem_softmax: [l2n(gem), w * softmax(logits / T)] renormalised, from one pass; a
    version of its own (collections filled with GeM alone refuse it); text queries in the same
    3048-d space, their class part holding the matched class."""
    from embedder_fixtures import embedder_config

    from ris.embedder.core import EmbedderCore

    minilm = model_path.parent / "minilm"
    if not (minilm / "model.onnx").exists():
        pytest.skip(f"{minilm} not exported")
    config = embedder_config(
        model_path,
        pooling="gem_softmax",
        semantic_weight=0.5,
        semantic_temperature=2.0,
        text_models=str(minilm),
        metrics_port=None,
    )
    core = EmbedderCore(config)
    try:
        results = core.embed([(str(i), im) for i, im in enumerate(embedder_images[:3])], timeout=60)
        description = core.default.description
        _, texts = core.embed_text(["goldfish"])
    finally:
        core.close()
    batch = np.stack([prepare(data, served_spec(model_path)) for data in embedder_images[:3]])
    gem, logits = direct_session.run(["gem", "logits"], {"images": batch})
    z = np.exp((logits - logits.max(axis=1, keepdims=True)) / 2.0)
    parts = np.hstack(
        [gem / np.linalg.norm(gem, axis=1, keepdims=True), 0.5 * z / z.sum(1)[:, None]]
    )
    expected = parts / np.linalg.norm(parts, axis=1, keepdims=True)
    assert all(r.vector is not None for r in results)
    got = np.stack([np.asarray(r.vector) for r in results])
    assert got.shape == (3, 2048 + 1000) and description.dim == 3048
    assert description.visual_dims == 2048  # the GeM part: what near duplicates compare
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert description.pooling == "gem3+softmax-t2-w0.5"
    assert description.version.endswith("-gem3+softmax-t2-w0.5-squash")
    text = texts[0].vector
    assert text is not None and text.shape == (3048,)
    assert abs(float(np.linalg.norm(text)) - 1.0) < 1e-5
    assert int(np.argmax(text[2048:])) == 1  # ImageNet class 1 is goldfish


def test_resize_mode_model_serves_the_metadata_geometry(
    make_embedder, embedder_images, direct_session, model_path
):
    """resize_mode=model: the ONNX metadata's centre crop, reported and applied; it differs
    from the squash default's vectors for non-square images."""
    images = embedder_images[:3]
    with make_embedder(resize_mode="model") as server:
        channel = grpc.insecure_channel(server.address)
        try:
            stub = embedder_pb2_grpc.EmbedderStub(channel)
            info = stub.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=10)
            got = vectors_of(stub.Embed(embed_request(images), timeout=60))
        finally:
            channel.close()
    assert info.default_model.preprocessing.resize_mode == "shorter_crop"
    # Another embedding space, so another version: a collection filled by the squash default
    # refuses this embedder (the search service compares name and version).
    weights = read_model_metadata(model_path).version
    assert info.default_model.version == embedding_version(weights, "gem3", "shorter_crop")
    assert info.default_model.version != embedding_version(weights, "gem3", "squash")
    crop = read_model_metadata(model_path).preprocessing
    np.testing.assert_allclose(
        got, direct_vectors(direct_session, model_path, images, spec=crop), atol=1e-5
    )
    squashed = direct_vectors(direct_session, model_path, images)
    assert float(np.max(np.abs(got - squashed))) > 1e-3
