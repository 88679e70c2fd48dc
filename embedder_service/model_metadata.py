"""Read what a served model is (name, version, preprocessing, labels) from its ONNX file.

The export script writes this into the model's metadata_props, so the embedder and
evaluation never hard-code preprocessing. Uses onnx only (no torch at serving time).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import onnx

from embedder_service.preprocessing import PreprocessSpec

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


def _last_dim(value_info: onnx.ValueInfoProto) -> int:
    dims = value_info.type.tensor_type.shape.dim
    if not dims or not dims[-1].HasField("dim_value"):
        raise ModelMetadataError(f"output {value_info.name} has no static last dimension")
    return int(dims[-1].dim_value)


def read_model_metadata(path: str | Path) -> ModelMetadata:
    """Parse the ris.* metadata of an exported model; raises ModelMetadataError."""
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelMetadataError(f"cannot read ONNX model {path}: {exc}") from exc
    props = {p.key: p.value for p in model.metadata_props}
    missing = [k for k in ("ris.model_name", "ris.preprocessing") if k not in props]
    if missing:
        raise ModelMetadataError(f"{path} lacks metadata {missing}: export it with export_onnx.py")
    outputs = {o.name: o for o in model.graph.output}
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
        input_name=model.graph.input[0].name,
    )
