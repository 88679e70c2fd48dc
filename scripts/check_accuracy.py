"""Top-1/top-5 accuracy of an exported ONNX model on imagenet-sample (500 real photos).

Uses the model's own preprocessing metadata and the shared preprocessing module, so
it checks exactly what the embedder serves. --compare-resize also scores the plain
alternatives (shorter side 256 or 224, centre crop 224); --record writes the best one
into the model's metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ris.embedder.export.sample_images import read_labels
from ris.embedder.model_metadata import read_model_metadata
from ris.embedder.preprocessing import PreprocessSpec, decode_image, preprocess

ROOT = Path(__file__).resolve().parent.parent

RESIZE_CHOICES = (256, 224)
BATCH = 32


def evaluate(
    session: ort.InferenceSession, images: list, labels: np.ndarray, spec: PreprocessSpec
) -> dict:
    """Top-1/top-5 of the session on decoded images preprocessed with spec."""
    top1 = top5 = 0
    started = time.perf_counter()
    for start in range(0, len(images), BATCH):
        batch = np.stack([preprocess(img, spec) for img in images[start : start + BATCH]])
        (logits,) = session.run(["logits"], {"images": batch})
        truth = labels[start : start + BATCH]
        best5 = np.argsort(-logits, axis=1)[:, :5]
        top1 += int((best5[:, 0] == truth).sum())
        top5 += int((best5 == truth[:, None]).any(axis=1).sum())
    count = len(images)
    return {
        "resize_shorter": spec.resize_shorter,
        "crop_size": spec.crop_size,
        "interpolation": spec.interpolation,
        "images": count,
        "top1": top1 / count,
        "top5": top5 / count,
        "seconds": round(time.perf_counter() - started, 1),
    }


def record_spec(model_path: Path, spec: PreprocessSpec) -> None:
    """Rewrite ris.preprocessing in place (atomically) with spec."""
    model = onnx.load(str(model_path))
    for prop in model.metadata_props:
        if prop.key == "ris.preprocessing":
            prop.value = spec.to_json()
    tmp = model_path.with_suffix(".tmp.onnx")
    onnx.save(model, str(tmp))
    os.replace(tmp, model_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "resnet50.onnx")
    parser.add_argument(
        "--images-dir", type=Path, default=ROOT.parent / "shared" / "datasets" / "imagenet-sample"
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    parser.add_argument("--compare-resize", action="store_true", help="also try other resizes")
    parser.add_argument("--record", action="store_true", help="write the best resize to metadata")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    meta = read_model_metadata(args.model)
    rows = read_labels(args.images_dir)
    if args.limit:
        rows = rows[: args.limit]
    images = [decode_image(path.read_bytes()) for path, _ in rows]
    labels = np.array([label for _, label in rows])
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])

    specs = [meta.preprocessing]
    if args.compare_resize or args.record:
        specs += [
            dataclasses.replace(meta.preprocessing, resize_shorter=size)
            for size in RESIZE_CHOICES
            if size != meta.preprocessing.resize_shorter
        ]
    results = [evaluate(session, images, labels, spec) for spec in specs]
    print(f"model {args.model} ({meta.name}, {meta.precision}, version {meta.version})")
    print(
        f"{'resize':>6} {'crop':>4} {'interp':>8} {'images':>6} {'top1':>7} {'top5':>7} {'sec':>6}"
    )
    for r in results:
        print(
            f"{r['resize_shorter']:>6} {r['crop_size']:>4} {r['interpolation']:>8} "
            f"{r['images']:>6} {r['top1']:>7.4f} {r['top5']:>7.4f} {r['seconds']:>6}"
        )
    best = max(range(len(results)), key=lambda i: (results[i]["top1"], results[i]["top5"], -i))
    report = {
        "model": str(args.model),
        "model_name": meta.name,
        "precision": meta.precision,
        "version": meta.version,
        "metadata_preprocessing": json.loads(meta.preprocessing.to_json()),
        "results": results,
        "best": results[best],
        "top1": results[0]["top1"],
        "top5": results[0]["top5"],
    }
    if args.record and best != 0:
        record_spec(args.model, specs[best])
        print(f"recorded resize_shorter={specs[best].resize_shorter} in {args.model}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
