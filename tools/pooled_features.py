"""The frozen backbone's last feature map, pooled several ways, for offline retrieval studies.

models/resnet50.onnx is copied with its last feature map as an extra output (free H/W), each
input geometry turns a decoded image into the array fed to it, and every pooling (GAP, GeM,
MAC, R-MAC) is computed in numpy; descriptors are cached on disk per model, geometry and image
set. Used by scripts/retrieval_study.py and scripts/retrieval_cv.py.
"""

from __future__ import annotations

import hashlib
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ris.embedder.preprocessing import PreprocessSpec, decode_image, preprocess

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "ris_retrieval_study"
POOLINGS = ("gap", "gem", "mac", "rmac")
GEM_P = 3.0

# ---------------------------------------------------------------------------------------------
# The backbone: the exported graph, plus its last feature map as an extra output, with free H/W.
# ---------------------------------------------------------------------------------------------


def _sha16(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def read_spec(model_path: Path) -> PreprocessSpec:
    """The preprocessing recorded in the model's metadata (what the embedder applies)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return PreprocessSpec.from_json(props["ris.preprocessing"])


def _feature_map_tensor(graph: Any) -> str:
    """Name of the tensor the `embedding` output is average-pooled from (the last conv map)."""
    producers = {out: node for node in graph.node for out in node.output}
    name = "embedding"
    for _ in range(16):
        node = producers[name]
        if node.op_type in ("GlobalAveragePool", "ReduceMean"):
            return str(node.input[0])
        name = node.input[0]
    raise RuntimeError("could not trace the embedding output back to its pooling node")


def make_feature_model(model_path: Path, out_path: Path) -> tuple[str, int]:
    """Copy the model with the last feature map as output `fmap` and symbolic H and W.

    Returns (layout, channel axis). The copy lives only in the cache dir; the service model is
    untouched.
    """
    import onnx

    model = onnx.load(str(model_path))
    graph = model.graph
    fmap = _feature_map_tensor(graph)
    inp = graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    dims[1].dim_param = "H"
    dims[2].dim_param = "W"
    del graph.value_info[:]
    graph.output.append(onnx.helper.make_tensor_value_info(fmap, onnx.TensorProto.FLOAT, None))
    graph.output[-1].name = fmap
    onnx.save(model, str(out_path))
    return fmap, 1


class Backbone:
    """onnxruntime session returning the last feature map as [N, C, h, w] float32."""

    def __init__(self, model_path: Path, cache_dir: Path, threads: int) -> None:
        import onnxruntime as ort

        cache_dir.mkdir(parents=True, exist_ok=True)
        self.version = _sha16(model_path)
        variant = cache_dir / f"features-{self.version}.onnx"
        if not variant.exists():
            tmp = variant.with_suffix(".tmp")
            make_feature_model(model_path, tmp)
            tmp.rename(variant)
        import onnx

        self.fmap_name = _feature_map_tensor(
            onnx.load(str(variant), load_external_data=False).graph
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(variant), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        (fm,) = self.session.run([self.fmap_name], {self.input_name: batch})
        if fm.shape[1] != 2048 and fm.shape[-1] == 2048:  # NHWC map: make it NCHW
            fm = fm.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(fm, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Input geometries: how a decoded image becomes the uint8 HWC array fed to the graph.
# ---------------------------------------------------------------------------------------------


def _resize(image: Image.Image, size: tuple[int, int], spec: PreprocessSpec) -> np.ndarray:
    resample = {
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "nearest": Image.Resampling.NEAREST,
        "lanczos": Image.Resampling.LANCZOS,
    }[spec.interpolation.lower()]
    return np.asarray(image.resize(size, resample), dtype=np.uint8)


def geometry(name: str, spec: PreprocessSpec) -> Callable[[Image.Image], np.ndarray]:
    """`crop` = the service's preprocessing; `ccN` = shorter side to N, centre crop NxN;
    `sqN` = whole image squashed to NxN; `fullN` = whole image, aspect kept, shorter side N
    (variable shape, batch of one)."""
    if name == "crop":
        return lambda im: preprocess(im, spec)
    if name.startswith("cc"):
        n = int(name[2:])
        return lambda im: preprocess(im, replace(spec, resize_shorter=n, crop_size=n))
    if name.startswith("sq"):
        n = int(name[2:])
        return lambda im: _resize(im, (n, n), spec)
    if name.startswith("full"):
        n = int(name[4:])

        def full(im: Image.Image) -> np.ndarray:
            w, h = im.size
            s = n / min(w, h)
            return _resize(im, (max(1, round(w * s)), max(1, round(h * s))), spec)

        return full
    raise ValueError(f"unknown geometry {name!r}")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF rotation, read from the header only."""
    with Image.open(path) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def relative_pixels(name: str, sizes: Sequence[tuple[int, int]], spec: PreprocessSpec) -> float:
    """Mean network-input pixels relative to 224x224: the backbone's cost, free of timing noise."""
    if name == "crop":
        return spec.crop_size**2 / 224**2
    if name.startswith(("cc", "sq")):
        return int(name[2:]) ** 2 / 224**2
    n = int(name[4:])
    return float(np.mean([n * n * max(w, h) / min(w, h) for w, h in sizes])) / 224**2


# ---------------------------------------------------------------------------------------------
# Poolings of one feature map [C, h, w] -> [C].
# ---------------------------------------------------------------------------------------------


def gem(fm: np.ndarray, p: float = GEM_P) -> np.ndarray:
    """Generalised mean (Radenović et al. 2018): p=1 is GAP, p->inf is MAC."""
    return np.power(np.mean(np.power(np.maximum(fm, 1e-6), p), axis=(1, 2)), 1.0 / p)


def rmac_regions(h: int, w: int, levels: int = 3, overlap: float = 0.4) -> list[tuple]:
    """Square regions of R-MAC (Tolias et al. 2016), as in cnnimageretrieval-pytorch."""
    short, long_ = min(h, w), max(h, w)
    steps = np.arange(2, 8)
    b = (long_ - short) / (steps - 1)
    idx = int(np.argmin(np.abs((short**2 - short * b) / short**2 - overlap)))
    wd = idx + 1 if h < w else 0
    hd = idx + 1 if h > w else 0
    regions: list[tuple] = [(0, h, 0, w)]
    for level in range(1, levels + 1):
        wl = math.floor(2 * short / (level + 1))
        if wl == 0:
            continue
        wl2 = math.floor(wl / 2 - 1)
        bw = (w - wl) / (level + wd - 1) if level + wd > 1 else 0
        bh = (h - wl) / (level + hd - 1) if level + hd > 1 else 0
        cen_w = [math.floor(wl2 + i * bw) - wl2 for i in range(level + wd)]
        cen_h = [math.floor(wl2 + i * bh) - wl2 for i in range(level + hd)]
        regions.extend((y, y + wl, x, x + wl) for y in cen_h for x in cen_w)
    return regions


def rmac(fm: np.ndarray, levels: int = 3) -> np.ndarray:
    """Sum of L2-normalised max-pooled regions (whole map included)."""
    out = np.zeros(fm.shape[0], dtype=np.float64)
    for y0, y1, x0, x1 in rmac_regions(fm.shape[1], fm.shape[2], levels):
        v = fm[:, y0:y1, x0:x1].max(axis=(1, 2)).astype(np.float64)
        out += v / (np.linalg.norm(v) + 1e-12)
    return out


def pool_all(fm: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "gap": fm.mean(axis=(1, 2)),
        "gem": gem(fm),
        "mac": fm.max(axis=(1, 2)),
        "rmac": rmac(fm),
    }


# ---------------------------------------------------------------------------------------------
# Feature extraction with a cache.
# ---------------------------------------------------------------------------------------------


@dataclass
class Features:
    pooled: dict[str, np.ndarray]  # pooling -> [N, 2048] float32
    ms_per_image: float  # backbone only (decode and pooling excluded); noisy on a shared machine
    rel_cost: float = 1.0  # input pixels relative to 224x224


def extract(
    backbone: Backbone,
    paths: Sequence[Path],
    geom: str,
    spec: PreprocessSpec,
    cache_dir: Path,
    tag: str,
    batch: int = 16,
) -> Features:
    """Pooled descriptors of every image for one input geometry (cached on disk)."""
    key = hashlib.sha256("\n".join(str(p) for p in paths).encode()).hexdigest()[:10]
    cache = cache_dir / f"{backbone.version}-{tag}-{geom}-{key}.npz"
    if cache.exists():
        data = np.load(cache)
        return Features({k: data[k] for k in POOLINGS}, float(data["ms_per_image"]))
    prep = geometry(geom, spec)
    fixed = not geom.startswith("full")
    step = batch if fixed else 1
    pooled: dict[str, list[np.ndarray]] = {k: [] for k in POOLINGS}
    model_seconds = 0.0
    started = time.perf_counter()
    for start in range(0, len(paths), step):
        arrays = [prep(decode_image(p.read_bytes())) for p in paths[start : start + step]]
        t0 = time.perf_counter()
        fms = backbone(np.stack(arrays))
        model_seconds += time.perf_counter() - t0
        for fm in fms:
            for k, v in pool_all(fm).items():
                pooled[k].append(v.astype(np.float32))
        done = start + len(arrays)
        if done % 160 < step or done == len(paths):
            rate = done / (time.perf_counter() - started)
            print(f"  [{tag}/{geom}] {done}/{len(paths)} ({rate:.1f} img/s)", file=sys.stderr)
    out = {k: np.stack(v) for k, v in pooled.items()}
    ms = 1000.0 * model_seconds / max(1, len(paths))
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache.with_suffix(".tmp.npz"), ms_per_image=np.float64(ms), **out)  # type: ignore[arg-type]
    cache.with_suffix(".tmp.npz").rename(cache)
    return Features(out, ms)
