"""Plain types shared by the core, the text workers and the servicer (no logic, no cycles)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import numpy as np

from ris.common.status import status_int
from ris.embedder.preprocessing import PreprocessSpec

INVALID_ARGUMENT = status_int(grpc.StatusCode.INVALID_ARGUMENT)
INTERNAL = status_int(grpc.StatusCode.INTERNAL)


@dataclass(frozen=True)
class ItemResult:
    id: str
    vector: np.ndarray | None = None
    error_code: int = 0
    error_message: str = ""
    confidence: float = 0.0  # text only: how well the text matched a known concept, 0..1
    low_confidence: bool = False


@dataclass(frozen=True)
class ModelDescription:
    """What GetModelInfo reports for one model."""

    name: str
    version: str
    dim: int
    execution_provider: str
    providers: tuple[str, ...]
    precision: str
    preprocessing: PreprocessSpec | None  # None for text models
    pooling: str
    max_batch_size: int
    max_images_per_request: int
    max_image_pixels: int
    modality: str = "image"
    max_request_bytes: int = 0  # largest request message accepted (config.max_message_bytes)
    target_space: str = ""  # text models: the image model whose space their vectors are in
    semantic_weight: float = 0.0  # image models with gem_softmax pooling: the softmax part's w
    visual_dims: int = 0  # gem_softmax: the leading dims that are GeM (0 = all of it)
