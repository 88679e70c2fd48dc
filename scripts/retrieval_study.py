"""Offline study: which frozen-ResNet50 descriptor retrieves Caltech-101 best, and at what cost.

Why offline: each variant (pooling, input geometry, scales, whitening, query expansion) would need
a different service build; here the backbone runs once per input geometry through onnxruntime on
models/resnet50.onnx (made to also expose its last feature map, in a temporary copy), every
pooling is computed from the cached feature maps in numpy, and every post-processing is scored on
the cached descriptors. The metrics are tools/evaluation.py's, so numbers match `ris eval`.

    python scripts/retrieval_study.py --json study.json --markdown study.md \\
        --geometries crop,cc224,sq224,sq160,sq320,full224,full320 \\
        --multiscale sq160+sq224+sq320,sq224+sq320,sq224+full224 \\
        --held-out-geometries crop,full224,sq224

Features are cached under --cache-dir (keyed by model hash, geometry and image set): re-running
only re-scores. Reported ms/image is the backbone time on this machine for that geometry.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ris.embedder.preprocessing import (  # noqa: E402
    PreprocessSpec,
    decode_image,
    preprocess,
)
from ris.tools.evaluation import (  # noqa: E402
    read_candidates,
    read_queries,
    relevant_sets,
    score_rankings,
)

DEFAULT_MODEL = ROOT / "models" / "resnet50.onnx"
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "caltech101-ris"
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


def _image_size(path: Path) -> tuple[int, int]:
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


# ---------------------------------------------------------------------------------------------
# Post-processing: normalisation, whitening, query expansion, database-side augmentation.
# ---------------------------------------------------------------------------------------------


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


_PCA_CACHE: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, eigenvalues descending, eigenvectors as columns) of the L2-normalised rows.

    Through the n x n Gram matrix (n < C here: cheaper than the C x C covariance), memoised:
    the grid fits the same data many times.
    """
    key = hashlib.sha1(x.tobytes()).digest()
    if key not in _PCA_CACHE:
        x = l2n(x)
        mean = x.mean(axis=0)
        xc = x - mean
        gram_val, gram_vec = np.linalg.eigh(xc @ xc.T)
        order = np.argsort(gram_val)[::-1]
        gram_val = np.maximum(gram_val[order], 0.0)
        keep = gram_val > gram_val[0] * 1e-12
        sing = np.sqrt(gram_val[keep])
        vecs = (xc.T @ gram_vec[:, order][:, keep]) / sing
        _PCA_CACHE[key] = (mean, sing**2 / max(1, len(x) - 1), vecs)
    return _PCA_CACHE[key]


@dataclass(frozen=True)
class Whitening:
    """PCA-whitening (Jégou & Chum 2012): centre, rotate, scale by eigval^-power, keep `dim`."""

    mean: np.ndarray
    proj: np.ndarray  # [dim, C]

    @classmethod
    def fit(cls, x: np.ndarray, dim: int, power: float = 0.5) -> Whitening:
        mean, eigval, eigvec = _pca(np.ascontiguousarray(x, dtype=np.float64))
        eigval, eigvec = np.maximum(eigval[:dim], 1e-9), eigvec[:, :dim]
        return cls(mean, (eigvec / eigval**power).T)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return l2n((l2n(x) - self.mean) @ self.proj.T)


def search(db: np.ndarray, q: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive top-k: indices and similarities (negative squared distance for L2)."""
    if metric == "l2":
        sim = -((q**2).sum(1)[:, None] - 2.0 * q @ db.T + (db**2).sum(1)[None, :])
    else:
        sim = q @ db.T
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sim, idx, axis=1)


def alpha_qe(db: np.ndarray, q: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """α-query expansion (Radenović et al.): q + Σ sim^α · top-n neighbours, renormalised."""
    idx, sim = search(db, q, n, "cos")
    w = np.maximum(sim, 0.0) ** alpha
    return l2n(q + np.einsum("qn,qnc->qc", w, db[idx]))


def dba(db: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Database-side augmentation: every item becomes its α-weighted top-n neighbourhood."""
    idx, sim = search(db, db, n + 1, "cos")  # includes itself with weight 1
    w = np.maximum(sim, 0.0) ** alpha
    return l2n(np.einsum("qn,qnc->qc", w, db[idx]))


# ---------------------------------------------------------------------------------------------
# The study.
# ---------------------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    geoms: tuple[str, ...]  # one or several (multi-scale)
    pooling: str
    metric: str = "cos"  # "l2" = raw vectors, L2 distance
    whiten_dim: int = 0  # 0 = none
    whiten_power: float = 0.5
    whiten_on: str = "index"  # "index" = learned on the indexed set, "imagenet" = held-out
    qe: int = 0
    dba: int = 0
    alpha: float = 3.0


def descriptors(
    feats: dict[str, Features], split: slice, v: Variant
) -> tuple[np.ndarray, float, float]:
    """Descriptor for a variant (multi-scale: sum of L2-normalised per-scale vectors)."""
    per_scale = [feats[g].pooled[v.pooling][split].astype(np.float64) for g in v.geoms]
    ms = sum(feats[g].ms_per_image for g in v.geoms)
    cost = sum(feats[g].rel_cost for g in v.geoms)
    if v.metric == "l2":
        return np.sum(per_scale, axis=0), ms, cost
    return l2n(np.sum([l2n(x) for x in per_scale], axis=0)), ms, cost


def score_variant(
    v: Variant,
    feats: dict[str, Features],
    n_db: int,
    labels_db: list[str],
    labels_q: list[str],
    held_out: dict[str, Features] | None,
    k: int = 10,
) -> dict[str, object]:
    db, ms, cost = descriptors(feats, slice(0, n_db), v)
    q, _, _ = descriptors(feats, slice(n_db, None), v)
    if v.whiten_dim:
        if v.whiten_on == "imagenet":
            if held_out is None:
                raise RuntimeError("held-out features needed for whiten_on=imagenet")
            train, _, _ = descriptors(held_out, slice(0, None), v)
        else:
            train = db
        wh = Whitening.fit(train, v.whiten_dim, v.whiten_power)
        db, q = wh(db), wh(q)
    if v.dba:
        db = dba(db, v.dba, v.alpha)
    if v.qe:
        q = alpha_qe(db, q, v.qe, v.alpha)
    idx, _ = search(db, q, k, v.metric)
    ids = [str(i) for i in range(n_db)]
    rankings = [[ids[j] for j in row] for row in idx]
    s = score_rankings(rankings, relevant_sets(labels_q, ids, labels_db), k)
    return {
        "variant": v.name,
        "map_at_10_towhee": round(s.map_at_10_towhee, 4),
        "ap_at_10": round(s.ap_at_10, 4),
        "hit_ratio": round(s.hit_ratio, 4),
        "recall_at_1": round(s.recall_at_1, 4),
        "rel_cost": round(cost, 2),
        "ms_per_image": round(ms, 1),
        "dim": int(db.shape[1]),
        "config": {
            "geometries": list(v.geoms),
            "pooling": v.pooling,
            "metric": v.metric,
            "whiten_dim": v.whiten_dim,
            "whiten_power": v.whiten_power if v.whiten_dim else None,
            "whiten_on": v.whiten_on if v.whiten_dim else None,
            "qe": v.qe,
            "dba": v.dba,
            "alpha": v.alpha if (v.qe or v.dba) else None,
        },
    }


def build_variants(geoms: Sequence[str], ms_sets: Sequence[tuple[str, ...]]) -> list[Variant]:
    """The grid: baselines, each pooling x geometry, multi-scale, then whitening/QE/DBA combos."""
    vs: list[Variant] = [
        Variant("crop gap raw L2 (reference)", ("crop",), "gap", metric="l2"),
        Variant("crop gap cosine (reference)", ("crop",), "gap"),
    ]
    for g in geoms:
        for p in POOLINGS:
            if (g, p) != ("crop", "gap"):
                vs.append(Variant(f"{g} {p} cosine", (g,), p))
    for ms in ms_sets:
        for p in ("gap", "gem"):
            vs.append(Variant(f"ms[{'+'.join(ms)}] {p} cosine", ms, p))
    bases = [(("crop",), "gem"), *((ms, "gem") for ms in ms_sets)]
    bases += [((g,), "gem") for g in geoms if g != "crop"]
    for geo, p in bases:
        tag = "+".join(geo)
        for dim in (128, 256, 512):
            for power in (0.0, 0.25, 0.5):
                name = f"{tag} {p} + PCA{dim}" + (f" whiten^{power}" if power else "")
                vs.append(Variant(name, geo, p, whiten_dim=dim, whiten_power=power))
        for dim, power in ((256, 0.0), (256, 0.25)):
            name = f"{tag} {p} + PCA{dim}" + (f" whiten^{power}" if power else "")
            vs.append(
                Variant(
                    name + " (fit on imagenet)",
                    geo,
                    p,
                    whiten_dim=dim,
                    whiten_power=power,
                    whiten_on="imagenet",
                )
            )
        for n in (1, 2, 3):
            vs.append(Variant(f"{tag} {p} + αQE{n}", geo, p, qe=n))
        for n in (2, 3, 5):
            vs.append(Variant(f"{tag} {p} + DBA{n}", geo, p, dba=n))
        for n in (1, 3):
            vs.append(Variant(f"{tag} {p} + DBA3 + αQE{n}", geo, p, dba=3, qe=n))
        vs.append(
            Variant(f"{tag} {p} + PCA256 + αQE1", geo, p, whiten_dim=256, whiten_power=0.0, qe=1)
        )
        vs.append(
            Variant(
                f"{tag} {p} + PCA256 + DBA3 + αQE1",
                geo,
                p,
                whiten_dim=256,
                whiten_power=0.0,
                dba=3,
                qe=1,
            )
        )
    return vs


def markdown_table(rows: Sequence[dict[str, object]]) -> str:
    head = (
        "| variant | mAP@10 (Towhee) | AP@10 | hit ratio | R@1 | dim | cost (224² = 1) "
        "| backbone ms/img |"
    )
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|"
    lines = [head, sep]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['map_at_10_towhee']:.3f} | {r['ap_at_10']:.3f} | "
            f"{r['hit_ratio']:.3f} | {r['recall_at_1']:.2f} | {r['dim']} | {r['rel_cost']} | "
            f"{r['ms_per_image']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="caltech101-ris folder")
    ap.add_argument(
        "--held-out",
        type=Path,
        default=DEFAULT_DATA.parent / "imagenet-sample",
        help="imagenet-sample folder: a whitening learned off the indexed set",
    )
    ap.add_argument(
        "--held-out-geometries",
        default="crop,sq224",
        help="geometries to extract on the held-out set (whitening learned off the index)",
    )
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument(
        "--geometries",
        default="crop,sq224,sq320",
        help="comma list: crop, sqN (squash to NxN), fullN (shorter side N)",
    )
    ap.add_argument(
        "--multiscale",
        default="sq160+sq224+sq320",
        help="comma list of '+'-joined geometry sets, each one multi-scale variant",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit-classes", type=int, default=0, help="smoke test: first N classes")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)

    cands = read_candidates(args.data / "reverse_image_search.csv")
    queries = read_queries(args.data / "queries.csv")
    if args.limit_classes:
        keep = sorted({c.label for c in cands})[: args.limit_classes]
        cands = [c for c in cands if c.label in keep]
        queries = [q for q in queries if q.label in keep]
    paths = [c.path for c in cands] + [q.path for q in queries]
    spec = read_spec(args.model)
    backbone = Backbone(args.model, args.cache_dir, args.threads)

    geoms = [g for g in args.geometries.split(",") if g]
    ms_sets = [tuple(s.split("+")) for s in args.multiscale.split(",") if s]
    needed = sorted({*geoms, *(g for s in ms_sets for g in s)}, key=lambda g: (g != "crop", g))
    tag = f"caltech{len(cands)}"
    feats = {g: extract(backbone, paths, g, spec, args.cache_dir, tag) for g in needed}
    sizes = [_image_size(p) for p in paths]
    for g, f in feats.items():
        f.rel_cost = relative_pixels(g, sizes, spec)

    held_out: dict[str, Features] | None = None
    labels_csv = args.held_out / "labels.csv"
    if labels_csv.exists():
        import csv

        with labels_csv.open(newline="") as fh:
            ho_paths = [args.held_out / row["path"] for row in csv.DictReader(fh)]
        if args.limit_classes:
            ho_paths = ho_paths[: 4 * args.limit_classes]
        ho_geoms = [g for g in args.held_out_geometries.split(",") if g in needed]
        held_out = {
            g: extract(backbone, ho_paths, g, spec, args.cache_dir, f"imagenet{len(ho_paths)}")
            for g in ho_geoms
        }

    variants = build_variants(geoms, ms_sets)
    variants = [
        v
        for v in variants
        if v.whiten_on != "imagenet" or (held_out and all(g in held_out for g in v.geoms))
    ]
    if args.limit_classes:  # few images: cap the whitening dimension
        for v in variants:
            v.whiten_dim = min(v.whiten_dim, len(cands) - 1) if v.whiten_dim else 0
    labels_db = [c.label for c in cands]
    labels_q = [q.label for q in queries]
    rows = [score_variant(v, feats, len(cands), labels_db, labels_q, held_out) for v in variants]
    table = markdown_table(rows)
    print(table)
    best = max(rows, key=lambda r: float(r["map_at_10_towhee"]))  # type: ignore[arg-type]
    print(f"\nbest: {best['variant']} mAP@10 {best['map_at_10_towhee']}")
    result = {
        "data": str(args.data),
        "model": str(args.model),
        "model_version": backbone.version,
        "preprocessing": spec.__dict__ if hasattr(spec, "__dict__") else str(spec),
        "n_candidates": len(cands),
        "n_queries": len(queries),
        "geometries": {
            g: {"ms_per_image": round(f.ms_per_image, 1), "rel_cost": round(f.rel_cost, 2)}
            for g, f in feats.items()
        },
        "variants": rows,
        "best": best,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
