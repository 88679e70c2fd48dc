"""Text path units: tokenizer ids, lexical matching, classifier reading, config, projection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ris.embedder.concepts import (
    ConceptBank,
    ConceptError,
    ConceptProjector,
    MatchSettings,
    read_classifier,
    words,
)
from ris.embedder.config import ConfigError, EmbedderConfig, from_args
from ris.embedder.wordpiece import WordPieceTokenizer, basic_tokens

ROOT = Path(__file__).resolve().parent.parent
MINILM = ROOT / "models" / "minilm"

# Reference ids from the `tokenizers` library (tokenizer.json of all-MiniLM-L6-v2).
REFERENCE_IDS = {
    "a small orange fish in a bowl": [101, 1037, 2235, 4589, 3869, 1999, 1037, 4605, 102],
    "Great_White_Shark!!": [101, 2307, 1035, 2317, 1035, 11420, 999, 999, 102],
    "Café naïve résumé — “quotes”": [101, 7668, 15743, 13746, 1517, 1523, 16614, 1524, 102],
    "日本語": [101, 1864, 1876, 1950, 102],
    "xyzzy plugh": [101, 1060, 2100, 28753, 13354, 2232, 102],
    "hot-dog, bun & mustard": [101, 2980, 1011, 3899, 1010, 21122, 1004, 23187, 102],
    "Crème brûlée\tand\ncustard": [
        101,
        13675,
        21382,
        7987,
        9307,
        2063,
        1998,
        12731,
        14117,
        2094,
        102,
    ],
    "emoji 😀 test": [101, 7861, 29147, 2072, 100, 3231, 102],
    "a" * 120 + " b": [101, 100, 1038, 102],
}


@pytest.fixture(scope="module")
def minilm() -> Path:
    if not (MINILM / "model.onnx").exists():
        pytest.fail(f"{MINILM} missing: run python scripts/export_text_model.py first")
    return MINILM


@pytest.fixture(scope="module")
def tokenizer(minilm: Path) -> WordPieceTokenizer:
    return WordPieceTokenizer.from_file(minilm / "vocab.txt")


@pytest.mark.parametrize("text", list(REFERENCE_IDS))
def test_wordpiece_matches_reference_ids(tokenizer, text):
    encoded = tokenizer.encode([text], 128)
    assert encoded.input_ids[0].tolist() == REFERENCE_IDS[text]
    assert encoded.attention_mask[0].tolist() == [1] * len(REFERENCE_IDS[text])


def test_wordpiece_pads_and_truncates(tokenizer):
    encoded = tokenizer.encode(["dog", "a very long text " * 20], max_length=10)
    assert encoded.input_ids.shape == (2, 10)
    assert encoded.input_ids[0].tolist()[:3] == [101, tokenizer.vocab["dog"], 102]
    assert encoded.input_ids[0, 3:].tolist() == [0] * 7
    assert encoded.attention_mask[0].tolist() == [1, 1, 1] + [0] * 7
    assert encoded.input_ids[1, -1] == 102 and encoded.attention_mask[1].all()


def test_basic_tokens_split_punctuation_and_strip_accents():
    assert basic_tokens("Héllo, WORLD!") == ["hello", ",", "world", "!"]


def test_words_are_lowercase_and_roughly_singular():
    assert words("Two Great-White SHARKS' teeth") == ["two", "great", "white", "shark", "teeth"]
    assert words("glass") == ["glass"]


def _toy_bank() -> ConceptBank:
    phrases = ["tench", "goldfish", "great white shark", "white shark", "a fish"]
    classes = np.array([0, 1, 2, 2, 1])
    kinds = np.array(["name", "name", "name", "synonym", "description"])
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(5, 4)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return ConceptBank(classes, kinds, phrases, emb, 3)


def test_lexical_prefers_the_longest_name_found():
    bank = _toy_bank()
    found = bank.lexical("a great white shark")
    assert found[2] == pytest.approx(3 / 4)  # "great white shark" covers 3 of 4 words
    assert found[0] == 0 and found[1] == 0  # "a fish" is a description, never lexical
    assert bank.lexical("tench").tolist() == [1.0, 0.0, 0.0]


def test_match_weights_sum_to_one_and_flag_unknown_text():
    bank = _toy_bank()
    settings = MatchSettings(top_k=2, low_confidence=0.5)
    far = -bank.embedding[:3].sum(0)
    far /= np.linalg.norm(far)
    match = bank.match("zzz", far, settings)
    assert match.weights.sum() == pytest.approx(1.0) and len(match.classes) == 2
    assert match.low_confidence and match.confidence < 0.5
    exact = bank.match("goldfish", bank.embedding[1], settings)
    assert exact.classes[0] == 1 and exact.confidence == pytest.approx(1.0)
    assert not exact.low_confidence


def test_projector_rejects_a_classifier_of_another_size():
    with pytest.raises(ConceptError, match="3 classes"):
        ConceptProjector(_toy_bank(), np.zeros((5, 8), dtype=np.float32))


def test_read_classifier_reproduces_the_models_logits(model_path):
    weight, bias = read_classifier(model_path)
    assert weight.shape == (1000, 2048) and bias.shape == (1000,)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (2, 224, 224, 3), dtype=np.uint8)
    embedding, logits = session.run(["embedding", "logits"], {"images": images})
    np.testing.assert_allclose(embedding @ weight.T + bias, logits, rtol=1e-4, atol=1e-3)


def test_read_classifier_needs_logits(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ConceptError, match="no 'logits'"):
        read_classifier(path)


def test_text_model_settings(tmp_path, monkeypatch):
    assert EmbedderConfig(text_models="off").text_model_paths() == []
    assert EmbedderConfig(text_models="a/x, b/y").text_model_paths() == [Path("a/x"), Path("b/y")]
    monkeypatch.chdir(tmp_path)  # no models/minilm here: auto finds none
    assert EmbedderConfig().text_model_paths() == []
    (tmp_path / "models" / "minilm").mkdir(parents=True)
    (tmp_path / "models" / "minilm" / "model.onnx").write_bytes(b"x")
    assert EmbedderConfig().text_model_paths() == [Path("models/minilm")]
    env = {"RIS_EMBEDDER_TEXT_MODEL": "t1,t2"}
    assert from_args([], env).text_model_paths() == [Path("t1"), Path("t2")]
    assert from_args(["--text-model", "off"], env).text_model_paths() == []
    with pytest.raises(ConfigError, match="max_text_chars"):
        from_args(["--max-text-chars", "0"], {})


def test_projection_of_a_class_name_points_at_its_classifier_row(minilm, model_path):
    from ris.embedder.text_encoder import TextEncoder

    encoder = TextEncoder(minilm, EmbedderConfig(provider="cpu", intra_op_threads=2))
    weight, _ = read_classifier(model_path)
    projector = ConceptProjector(ConceptBank.load(minilm / "concepts.npz"), weight)
    for text, cls in (("tench", 0), ("great white shark", 2), ("espresso maker", 550)):
        query, match = projector.project(text, encoder.encode([text])[0])
        row = weight[cls] / np.linalg.norm(weight[cls])
        assert match.classes[0] == cls, text
        assert float(query @ row) > 0.9, text
        assert np.linalg.norm(query) == pytest.approx(1.0, abs=1e-5)


def test_label_agreement_detects_another_class_order(minilm, model_path):
    from ris.embedder.model_metadata import read_model_metadata

    bank = ConceptBank.load(minilm / "concepts.npz")
    labels = list(read_model_metadata(model_path).labels)
    assert bank.label_agreement(labels) == pytest.approx(1.0)
    assert bank.label_agreement(labels[1:] + labels[:1]) < 0.1  # shifted by one class
    assert bank.label_agreement(labels[:10]) == 0.0  # another number of classes
