"""Read what a served model is (name, version, preprocessing, labels) from its ONNX file.

The export script writes this into the model's metadata_props, so the embedder and
evaluation never hard-code preprocessing. Read through ONNX Runtime, which the embedder has
anyway: the `onnx` package belongs to the export side and is not installed with the service.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from ris.embedder.preprocessing import PreprocessSpec

EMBEDDING_OUTPUT = "embedding"


class ModelMetadataError(ValueError):
    """The file is not an ONNX model exported with the ris metadata."""


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: str  # first 16 hex digits of the file's sha256
    dim: int  # size of the `embedding` output
    precision: str  # fp32 | fp16 | int8
    preprocessing: PreprocessSpec
    labels: tuple[str, ...]
    outputs: tuple[str, ...]
    source: str = ""
    input_name: str = "images"


def file_version(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def embedding_version(weights_version: str, pooling: str, resize_mode: str) -> str:
    """Name the embedding space an image model serves: weights, pooling and image geometry.

    Vectors from the same weights but another pooling or geometry do not belong in the same
    collection, so all three are part of the version collections record (e.g.
    ``f26894f4414bef5e-gem3-squash``). The weights part is the configured (fp32) file's hash, so
    a GPU serving the fp16 sibling reports the same space as a CPU serving the fp32 file.
    """
    return f"{weights_version}-{pooling}-{resize_mode}"


def _last_dim(output: ort.NodeArg) -> int:
    dims = output.shape
    if not dims or not isinstance(dims[-1], int):
        raise ModelMetadataError(f"output {output.name} has no static last dimension")
    return int(dims[-1])


def open_for_metadata(path: Path) -> ort.InferenceSession:
    """A CPU session with every graph optimisation off: the quickest way ORT reads a model
    (about 0.2 s for ResNet50, fp16 included); it is only asked for metadata and signatures."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def read_model_metadata(path: str | Path) -> ModelMetadata:
    """Parse the ris.* metadata of an exported model; raises ModelMetadataError."""
    path = Path(path)
    try:
        session = open_for_metadata(path)
    except Exception as exc:
        raise ModelMetadataError(f"cannot read ONNX model {path}: {exc}") from exc
    props = session.get_modelmeta().custom_metadata_map
    missing = [k for k in ("ris.model_name", "ris.preprocessing") if k not in props]
    if missing:
        raise ModelMetadataError(f"{path} lacks metadata {missing}: export it with export_onnx.py")
    outputs = {o.name: o for o in session.get_outputs()}
    if EMBEDDING_OUTPUT not in outputs:
        raise ModelMetadataError(f"{path} has no '{EMBEDDING_OUTPUT}' output")
    return ModelMetadata(
        name=props["ris.model_name"],
        version=file_version(path),
        dim=_last_dim(outputs[EMBEDDING_OUTPUT]),
        precision=props.get("ris.precision", "fp32"),
        preprocessing=PreprocessSpec.from_json(props["ris.preprocessing"]),
        labels=tuple(json.loads(props.get("ris.labels", "[]"))),
        outputs=tuple(outputs),
        source=props.get("ris.source", ""),
        input_name=session.get_inputs()[0].name,
    )
