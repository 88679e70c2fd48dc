"""A text ONNX model and its tokenizer: texts in, unit vectors out. No torch, no HF libraries.

Contract for a text model file (scripts/export_text_model.py writes one; a CLIP-style text
tower exported by a user follows the same): inputs `input_ids` and `attention_mask` (int64
[N, L]), one float32 [N, D] output, and metadata_props:
`ris.model_name`, `ris.modality`=text, `ris.vocab` (WordPiece vocab.txt beside the model),
`ris.lowercase`, `ris.max_length`, and `ris.text_kind`: `concepts` (a sentence encoder whose
vectors are matched against `ris.concepts`, a concept bank, and projected into an image
model's space) or `joint` (its output already is in `ris.target_space`, the image model's
space, as with CLIP).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ris.embedder.config import EmbedderConfig
from ris.embedder.model_metadata import file_version, open_for_metadata
from ris.embedder.runtime import (
    CPU,
    ModelLoadError,
    l2_normalise,
    plan_providers,
    session_options,
)
from ris.embedder.wordpiece import WordPieceTokenizer

log = logging.getLogger(__name__)

TEXT_KINDS = ("concepts", "joint")
MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class TextModelMetadata:
    name: str
    version: str
    kind: str  # concepts | joint
    vocab: Path
    lowercase: bool
    max_length: int
    concepts: Path | None  # concept bank (kind=concepts)
    target_space: str  # image model name (kind=joint; concepts: set by the server)
    source: str


def resolve_text_model(path: Path) -> Path:
    """A directory means its model.onnx."""
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


def read_text_metadata(path: Path) -> TextModelMetadata:
    path = resolve_text_model(path)
    if not path.exists():
        raise ModelLoadError(f"text model {path} does not exist")
    try:
        props = open_for_metadata(path).get_modelmeta().custom_metadata_map
    except Exception as exc:
        raise ModelLoadError(f"cannot read ONNX model {path}: {exc}") from exc
    if props.get("ris.modality") != "text" or "ris.model_name" not in props:
        raise ModelLoadError(
            f"{path} is not a text model (needs ris.modality=text, ris.model_name)"
        )
    kind = props.get("ris.text_kind", "joint")
    if kind not in TEXT_KINDS:
        raise ModelLoadError(f"{path}: ris.text_kind must be one of {TEXT_KINDS}, not {kind!r}")
    vocab = path.parent / props.get("ris.vocab", "vocab.txt")
    if not vocab.exists():
        raise ModelLoadError(f"{path}: tokenizer vocabulary {vocab} does not exist")
    concepts = path.parent / props["ris.concepts"] if "ris.concepts" in props else None
    if kind == "concepts" and (concepts is None or not concepts.exists()):
        raise ModelLoadError(f"{path}: concept bank {concepts} does not exist")
    if kind == "joint" and not props.get("ris.target_space"):
        raise ModelLoadError(f"{path}: a joint text model needs ris.target_space (image model)")
    return TextModelMetadata(
        name=props["ris.model_name"],
        version=file_version(path),
        kind=kind,
        vocab=vocab,
        lowercase=props.get("ris.lowercase", "true").lower() == "true",
        max_length=int(props.get("ris.max_length", "77")),
        concepts=concepts,
        target_space=props.get("ris.target_space", ""),
        source=props.get("ris.source", ""),
    )


class TextEncoder:
    """`encode(texts) -> float32 [N, D]`, L2-normalised; thread-safe (ORT sessions are)."""

    def __init__(self, path: Path, config: EmbedderConfig) -> None:
        self.path = resolve_text_model(path)
        self.metadata = read_text_metadata(self.path)
        self.tokenizer = WordPieceTokenizer.from_file(self.metadata.vocab, self.metadata.lowercase)
        plan = plan_providers(self.path, dataclasses.replace(config, precision="fp32"))
        # Text models are small and their batches tiny: the fp32 file on the chosen provider;
        # TensorRT engines are not worth building for them.
        providers = [
            p
            for p in plan.providers
            if (p[0] if isinstance(p, tuple) else p) != ("TensorrtExecutionProvider")
        ]
        options = session_options(config)
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        self.providers = list(self.session.get_providers())
        self.execution_provider = self.providers[0] if self.providers else CPU
        inputs = {i.name for i in self.session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= inputs:
            raise ModelLoadError(
                f"{self.path} needs inputs input_ids and attention_mask, has {inputs}"
            )
        outputs = self.session.get_outputs()
        self.output_name = outputs[0].name
        dim = outputs[0].shape[-1]
        self.dim = int(dim) if isinstance(dim, int) else int(self.encode(["probe"]).shape[1])
        log.info(
            "text model %s (%s) version %s loaded from %s on %s",
            self.metadata.name,
            self.metadata.kind,
            self.metadata.version,
            self.path,
            self.execution_provider,
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer.encode(texts, self.metadata.max_length)
        (out,) = self.session.run(
            [self.output_name],
            {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask},
        )
        return l2_normalise(np.asarray(out, dtype=np.float32))
