"""EmbedText through a real embedder on 127.0.0.1 with the real ResNet50 and MiniLM models."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from embedder_fixtures import TEST_MAX_IMAGES_PER_REQUEST, metric_sum, scrape

from ris.api import embedder_pb2, embedder_pb2_grpc
from ris.embedder.concepts import ConceptBank, ConceptProjector, read_classifier
from ris.embedder.config import EmbedderConfig
from ris.embedder.model_metadata import file_version, read_model_metadata
from ris.embedder.runtime import ModelLoadError
from ris.embedder.text_encoder import TextEncoder

ROOT = Path(__file__).resolve().parent.parent
MINILM = ROOT / "models" / "minilm"
OFF_TOPIC = ["quarterly tax report deadline", "the meaning of life", "lorem ipsum dolor sit amet"]


@pytest.fixture(scope="module")
def minilm() -> Path:
    if not (MINILM / "model.onnx").exists():
        pytest.fail(f"{MINILM} missing: run python scripts/export_text_model.py first")
    return MINILM


@pytest.fixture(scope="module")
def text_server(make_embedder, minilm):
    with make_embedder(text_models=str(minilm)) as server:
        yield server


@pytest.fixture(scope="module")
def stub(text_server):
    channel = grpc.insecure_channel(text_server.address)
    yield embedder_pb2_grpc.EmbedderStub(channel)
    channel.close()


def embed_text(stub, texts, model="", timeout=30):
    return stub.EmbedText(embedder_pb2.EmbedTextRequest(texts=texts, model=model), timeout=timeout)


def test_model_info_lists_the_text_model(stub, model_path, minilm):
    info = stub.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=10)
    image = read_model_metadata(model_path)
    assert info.default_model.name == image.name and info.default_model.modality == "image"
    text = [m for m in info.models if m.modality == "text"]
    assert len(text) == 1
    assert text[0].name == "minilm-l6-v2"
    assert text[0].target_space == image.name
    assert text[0].dim == info.default_model.dim == 2048
    assert text[0].version == file_version(minilm / "model.onnx")
    assert text[0].execution_provider == "CPUExecutionProvider"


def test_class_names_embed_like_the_direct_projection(stub, model_path, minilm):
    texts = ["tench", "great white shark", "a red sports car on a race track"]
    reply = embed_text(stub, texts)
    assert (reply.model, reply.dim) == ("minilm-l6-v2", 2048)
    got = np.array([r.embedding for r in reply.results], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    encoder = TextEncoder(minilm, EmbedderConfig(provider="cpu", intra_op_threads=1))
    projector = ConceptProjector(
        ConceptBank.load(minilm / "concepts.npz"), read_classifier(model_path)[0]
    )
    for text, vector, result in zip(texts, encoder.encode(texts), reply.results, strict=True):
        expected, match = projector.project(text, vector)
        np.testing.assert_allclose(result.embedding, expected, atol=1e-5)
        assert result.confidence == pytest.approx(match.confidence, abs=1e-6)
        assert not result.low_confidence
    assert reply.results[0].confidence == pytest.approx(1.0)  # exact class name


def test_empty_text_fails_that_item_only(stub):
    reply = embed_text(stub, ["", "goldfish", "   \t"])
    codes = [r.error.code for r in reply.results]
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT.value[0], 0, 3]
    assert "empty text" in reply.results[0].error.message
    assert len(reply.results[0].embedding) == 0
    assert len(reply.results[1].embedding) == 2048


def test_unknown_concept_is_answered_and_flagged(stub):
    reply = embed_text(stub, [*OFF_TOPIC, "a tabby cat"])
    for result in reply.results[:-1]:
        assert result.error.code == 0
        assert len(result.embedding) == 2048
        assert result.low_confidence and result.confidence < 0.5
    assert not reply.results[-1].low_confidence


def test_too_long_text_fails_that_item(stub):
    reply = embed_text(stub, ["x" * 2001, "dog"])
    assert reply.results[0].error.code == 3 and "too long" in reply.results[0].error.message
    assert reply.results[1].error.code == 0


def test_whole_call_errors(stub):
    with pytest.raises(grpc.RpcError) as err:
        embed_text(stub, ["dog"] * (TEST_MAX_IMAGES_PER_REQUEST + 1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "too many texts" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        embed_text(stub, ["dog"], model="no-such-model")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "minilm-l6-v2" in err.value.details()
    assert len(embed_text(stub, []).results) == 0


def test_text_model_is_chosen_by_name_or_version(stub, minilm):
    by_name = embed_text(stub, ["pelican"], model="minilm-l6-v2")
    by_version = embed_text(stub, ["pelican"], model=file_version(minilm / "model.onnx"))
    assert list(by_name.results[0].embedding) == list(by_version.results[0].embedding)


def test_text_metrics(text_server, stub):
    before = scrape(text_server.metrics_port)
    embed_text(stub, ["goldfish", "", "xyzzy plugh quux"])
    after = scrape(text_server.metrics_port)

    def delta(name: str) -> float:
        return metric_sum(after, name) - metric_sum(before, name)

    assert delta("ris_embedder_texts_total") == 2
    assert delta("ris_embedder_low_confidence_texts_total") == 1
    key = 'ris_embedder_requests_total{code="OK",method="EmbedText"}'
    assert after[key] - before.get(key, 0) == 1


def test_without_text_models_embed_text_is_refused(make_embedder):
    with make_embedder(text_models="off") as server:
        channel = grpc.insecure_channel(server.address)
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        info = stub.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=10)
        assert [m.modality for m in info.models] == ["image"]
        with pytest.raises(grpc.RpcError) as err:
            embed_text(stub, ["dog"])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "no text model" in err.value.details()
        channel.close()


def test_missing_text_model_fails_at_start(make_embedder, tmp_path):
    with (
        pytest.raises(ModelLoadError, match="does not exist"),
        make_embedder(text_models=str(tmp_path / "nothing")),
    ):
        pass
