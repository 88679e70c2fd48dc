"""Embeddings of real photos by the served model, in this process, cached by content + model.

What synthetic vectors are fitted to and queries are drawn from (scripts/bench_vector_store.py,
scripts/bench_service_scale.py): the same model, preprocessing and L2 normalisation the embedder
serves, without starting it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np


def real_embeddings(
    images: list[bytes], model: Path, provider: str, cache_dir: Path, pooling: str = ""
) -> tuple[np.ndarray, str]:
    """L2-normalised embeddings of the photos by the served model (``pooling``: the embedder's,
    empty for its default); cached by content, model and pooling."""
    from ris.embedder.model_metadata import read_model_metadata

    version = read_model_metadata(model).version
    digest = hashlib.sha256()
    for data in images:
        digest.update(hashlib.sha256(data).digest())
    tag = f"{version}-{pooling}" if pooling else version
    path = cache_dir / f"embeddings-{tag}-{digest.hexdigest()[:16]}-{len(images)}.npy"
    if path.exists():
        return np.load(path), str(path)
    from ris.embedder.config import EmbedderConfig
    from ris.embedder.preprocessing import prepare
    from ris.embedder.runtime import ModelRuntime

    config = EmbedderConfig(model_paths=[model], provider=provider)
    if pooling:
        config = dataclasses.replace(config, pooling=pooling).validate()
    runtime = ModelRuntime(model, config)
    spec = runtime.metadata.preprocessing
    out = []
    for start in range(0, len(images), 16):
        batch = np.stack([prepare(d, spec) for d in images[start : start + 16]])
        out.append(runtime.infer(batch))
    vectors = np.concatenate(out).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors, str(path)
