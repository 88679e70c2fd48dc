"""Read the float32 weights of a TF.js layers model (model.json + binary shards).

TF.js stores one weight group as shards that concatenate into a flat buffer; each
tensor is a slice of it in manifest order. Any mismatch (missing shard, wrong size,
NaN, checksum) raises WeightFileError so a broken download never becomes a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ris.embedder.export.fetch_weights import CHECKSUMS_NAME, FetchError, verify_package

_DTYPES = {"float32": np.dtype("<f4")}


class WeightFileError(ValueError):
    """The weight files are missing, truncated, corrupted or do not match the manifest."""


def _read_model_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightFileError(f"cannot read {path}: {exc}") from exc


def load_tfjs_weights(model_json: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Return ({weight name: array}, model topology) for a TF.js layers model."""
    model_json = Path(model_json)
    pkg = model_json.parent.parent
    if (pkg / CHECKSUMS_NAME).exists():
        try:
            verify_package(pkg)
        except FetchError as exc:
            raise WeightFileError(str(exc)) from exc
    spec = _read_model_json(model_json)
    if "weightsManifest" not in spec or "modelTopology" not in spec:
        raise WeightFileError(f"{model_json} is not a TF.js layers model")
    weights: dict[str, np.ndarray] = {}
    for group in spec["weightsManifest"]:
        chunks = []
        for rel in group["paths"]:
            shard = model_json.parent / rel
            if not shard.exists():
                raise WeightFileError(f"weight shard {shard} is missing")
            chunks.append(shard.read_bytes())
        buffer = b"".join(chunks)
        needed = sum(
            int(np.prod(w["shape"], dtype=np.int64)) * _DTYPES[w["dtype"]].itemsize
            for w in group["weights"]
            if w["dtype"] in _DTYPES
        )
        if len(buffer) != needed:
            raise WeightFileError(
                f"weight shards of {model_json.name} hold {len(buffer)} bytes but the manifest "
                f"needs {needed}: a shard is truncated or the wrong file"
            )
        offset = 0
        for entry in group["weights"]:
            dtype = _DTYPES.get(entry["dtype"])
            if dtype is None:
                raise WeightFileError(f"unsupported dtype {entry['dtype']} for {entry['name']}")
            count = int(np.prod(entry["shape"], dtype=np.int64))
            array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
            offset += count * dtype.itemsize
            if not np.isfinite(array).all():
                raise WeightFileError(f"weight {entry['name']} has NaN/inf values: corrupted")
            weights[entry["name"]] = array.reshape(entry["shape"]).astype(np.float32)
    return weights, spec["modelTopology"]
