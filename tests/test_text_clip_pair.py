"""A CLIP-style image/text pair plugged in by configuration, proven with tiny models built here.

The image half follows the image contract (uint8 NHWC `images` in, `embedding` out, ris
metadata); the text half is a `joint` text model whose ris.target_space names the image half.
Both are random linear maps, so the expected vectors are computed here with numpy.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from embedder_fixtures import encode, synthetic_image
from onnx import TensorProto, helper, numpy_helper

from ris.api import embedder_pb2, embedder_pb2_grpc
from ris.embedder.config import ConfigError, EmbedderConfig
from ris.embedder.preprocessing import PreprocessSpec, prepare, with_resize_mode
from ris.embedder.wordpiece import WordPieceTokenizer

DIM = 8
IMAGE_NAME = "tiny-clip-image"
TEXT_NAME = "tiny-clip-text"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "dog", "car", "blue", "sky"]
SPEC = PreprocessSpec(
    color_order="RGB",
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    resize_shorter=64,
    crop_size=56,
    interpolation="bilinear",
)
MINILM = Path(__file__).resolve().parent.parent / "models" / "minilm"


def _save(graph: onnx.GraphProto, path: Path, props: dict[str, str]) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_image_model(path: Path, proj: np.ndarray) -> None:
    """uint8 [N,H,W,3] -> mean colour [N,3] -> @ proj [3,DIM] -> embedding."""
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["m", "proj"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_image",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["n", 56, 56, 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", DIM])],
        [numpy_helper.from_array(proj, "proj")],
    )
    _save(
        graph,
        path,
        {
            "ris.model_name": IMAGE_NAME,
            "ris.preprocessing": SPEC.to_json(),
            "ris.precision": "fp32",
        },
    )


def build_text_model(directory: Path, table: np.ndarray, target: str) -> None:
    """Sum of token vectors over the mask: a bag of words in the image space."""
    directory.mkdir(parents=True, exist_ok=True)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tokens"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis"], ["mask3"]),
        helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["text_embedding"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_text",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["n", "l"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["n", "l"]),
        ],
        [helper.make_tensor_value_info("text_embedding", TensorProto.FLOAT, ["n", DIM])],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    _save(
        graph,
        directory / "model.onnx",
        {
            "ris.model_name": TEXT_NAME,
            "ris.modality": "text",
            "ris.text_kind": "joint",
            "ris.target_space": target,
            "ris.vocab": "vocab.txt",
            "ris.max_length": "16",
        },
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("clip_pair")
    rng = np.random.default_rng(7)
    proj = rng.normal(size=(3, DIM)).astype(np.float32)
    table = rng.normal(size=(len(VOCAB), DIM)).astype(np.float32)
    build_image_model(root / "image.onnx", proj)
    build_text_model(root / "text", table, IMAGE_NAME)
    return {"root": root, "proj": proj, "table": table}


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def served(make_embedder, model_path, pair):
    """ResNet50 + MiniLM (the default pair) beside the tiny CLIP pair, in one embedder."""
    text_models = [str(pair["root"] / "text")]
    if (MINILM / "model.onnx").exists():
        text_models.insert(0, str(MINILM))
    with make_embedder(
        model_paths=[model_path, pair["root"] / "image.onnx"], text_models=",".join(text_models)
    ) as server:
        channel = grpc.insecure_channel(server.address)
        yield embedder_pb2_grpc.EmbedderStub(channel)
        channel.close()


def test_model_info_lists_both_halves_of_the_pair(served, pair):
    info = served.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=10)
    by_name = {m.name: m for m in info.models}
    assert info.default_model.name != IMAGE_NAME  # the first --model stays the default
    image, text = by_name[IMAGE_NAME], by_name[TEXT_NAME]
    assert (image.modality, image.dim, image.pooling) == ("image", DIM, "model")
    assert (text.modality, text.dim, text.target_space) == ("text", DIM, IMAGE_NAME)
    assert text.pooling == "joint"


def test_embed_text_with_the_pair_gives_its_vectors(served, pair):
    texts = ["a red dog", "Blue sky!"]
    reply = served.EmbedText(
        embedder_pb2.EmbedTextRequest(texts=texts, model=TEXT_NAME), timeout=30
    )
    assert (reply.model, reply.dim) == (TEXT_NAME, DIM)
    tok = WordPieceTokenizer(VOCAB)
    enc = tok.encode(texts, 16)
    expected = unit((pair["table"][enc.input_ids] * enc.attention_mask[..., None]).sum(1))
    got = np.array([r.embedding for r in reply.results], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert all(r.confidence == 1.0 and not r.low_confidence for r in reply.results)


def test_embed_images_with_the_pair_gives_its_vectors(served, pair):
    data = encode(synthetic_image(3, 120, 90))
    reply = served.Embed(
        embedder_pb2.EmbedRequest(images=[embedder_pb2.ImageInput(data=data)], model=IMAGE_NAME),
        timeout=30,
    )
    spec = with_resize_mode(SPEC, EmbedderConfig().resize_mode)  # the served geometry
    expected = unit(prepare(data, spec).astype(np.float32).mean((0, 1)) @ pair["proj"])
    np.testing.assert_allclose(reply.results[0].embedding, expected, atol=1e-5)
    assert (reply.model, reply.dim) == (IMAGE_NAME, DIM)


@pytest.mark.skipif(not (MINILM / "model.onnx").exists(), reason="needs the exported MiniLM")
def test_default_text_model_still_maps_into_the_default_image_model(served):
    reply = served.EmbedText(embedder_pb2.EmbedTextRequest(texts=["tench"]), timeout=30)
    assert (reply.model, reply.dim) == ("minilm-l6-v2", 2048)


def test_text_model_for_an_unserved_image_model_is_refused(make_embedder, model_path, tmp_path):
    rng = np.random.default_rng(0)
    build_text_model(
        tmp_path / "orphan",
        rng.normal(size=(len(VOCAB), DIM)).astype(np.float32),
        "some-other-image-model",
    )
    with (
        pytest.raises(ConfigError, match="not served"),
        make_embedder(text_models=str(tmp_path / "orphan")),
    ):
        pass


def test_text_model_of_another_dimension_is_refused(make_embedder, model_path, pair, tmp_path):
    rng = np.random.default_rng(0)
    build_text_model(
        tmp_path / "t",
        rng.normal(size=(len(VOCAB), DIM)).astype(np.float32),
        read_default_name(model_path),
    )
    with (
        pytest.raises(ConfigError, match="8-d vectors"),
        make_embedder(text_models=str(tmp_path / "t")),
    ):
        pass


def read_default_name(model_path: Path) -> str:
    from ris.embedder.model_metadata import read_model_metadata

    return read_model_metadata(model_path).name
