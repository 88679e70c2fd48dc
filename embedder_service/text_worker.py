"""One served text model: texts in, unit vectors in an image model's embedding space out.

Two kinds (see text_encoder.py): `concepts` maps a description to ImageNet class weights and
projects them through the target image model's classifier (concepts.py); `joint` (a CLIP-style
text tower) already outputs vectors in its paired image model's space.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ris.embedder.concepts import ConceptBank, ConceptProjector, read_classifier
from ris.embedder.config import ConfigError, EmbedderConfig
from ris.embedder.core_types import INVALID_ARGUMENT, ItemResult, ModelDescription
from ris.embedder.model_metadata import read_model_metadata
from ris.embedder.text_encoder import TextEncoder

# Share of the image model's labels that must name the bank's class at the same index.
MIN_LABEL_AGREEMENT = 0.9
# Joint models give no concept match to judge a text by: their vectors are reported as sure.
JOINT_CONFIDENCE = 1.0


class TextWorker:
    """Embeds texts with one text model; at most `concurrency` model runs at once."""

    def __init__(
        self,
        path: Path,
        config: EmbedderConfig,
        image_models: Mapping[str, tuple[Path, ModelDescription]],
        default_image: str,
        concurrency: int = 4,
    ) -> None:
        self.encoder = TextEncoder(path, config)
        meta = self.encoder.metadata
        self.name = meta.name
        self.version = meta.version
        self.kind = meta.kind
        self.max_chars = config.max_text_chars
        target = meta.target_space or default_image
        if target not in image_models:
            raise ConfigError(
                f"text model {meta.name} maps into image model {target!r}, which is not served "
                f"(served: {sorted(image_models)})"
            )
        image_path, image = image_models[target]
        self.projector: ConceptProjector | None = None
        if meta.kind == "concepts":
            assert meta.concepts is not None
            weight, _bias = read_classifier(image_path)
            bank = ConceptBank.load(meta.concepts)
            labels = read_model_metadata(image_path).labels
            if labels and bank.label_agreement(labels) < MIN_LABEL_AGREEMENT:
                raise ConfigError(
                    f"image model {target}'s labels are not the concept bank's classes in order "
                    f"({bank.label_agreement(labels):.0%} agree): text would map to wrong classes"
                )
            self.projector = ConceptProjector(bank, weight, semantic_weight=image.semantic_weight)
            dim, pooling = self.projector.dim, "concepts:fc"
            if self.projector.bank.dim != self.encoder.dim:
                raise ConfigError(f"{meta.concepts} was embedded by another text model")
        else:
            dim, pooling = self.encoder.dim, "joint"
        if dim != image.dim:
            raise ConfigError(
                f"text model {meta.name} gives {dim}-d vectors, image model {target} {image.dim}-d"
            )
        self.description = ModelDescription(
            name=meta.name,
            version=meta.version,
            dim=dim,
            execution_provider=self.encoder.execution_provider,
            providers=tuple(self.encoder.providers),
            precision="fp32",
            preprocessing=None,
            pooling=pooling,
            max_batch_size=config.max_images_per_request,
            max_images_per_request=config.max_images_per_request,
            max_image_pixels=0,
            modality="text",
            target_space=target,
            max_request_bytes=config.max_message_bytes,
        )
        self._slots = threading.BoundedSemaphore(concurrency)

    def _problem(self, text: str) -> str:
        if not text.strip():
            return "empty text: give a description of what to find"
        if len(text) > self.max_chars:
            return f"text too long: {len(text)} characters > max_text_chars {self.max_chars}"
        return ""

    def embed(self, texts: list[str]) -> list[ItemResult]:
        """One result per text, in order; bad texts get a per-item INVALID_ARGUMENT."""
        problems = [self._problem(t) for t in texts]
        good = [i for i, p in enumerate(problems) if not p]
        vectors = np.zeros((0, self.encoder.dim), dtype=np.float32)
        if good:
            with self._slots:
                vectors = self.encoder.encode([texts[i] for i in good])
        encoded = dict(zip(good, vectors, strict=True))
        results = []
        for i, text in enumerate(texts):
            if problems[i]:
                results.append(ItemResult(str(i), None, INVALID_ARGUMENT, problems[i]))
            elif self.projector is None:
                results.append(ItemResult(str(i), encoded[i], confidence=JOINT_CONFIDENCE))
            else:
                query, match = self.projector.project(text, encoded[i])
                results.append(
                    ItemResult(
                        str(i),
                        query,
                        confidence=match.confidence,
                        low_confidence=match.low_confidence,
                    )
                )
        return results
