"""Ingest throughput end to end, beside its two baselines, all measured in the same run.

1. raw: ONNX Runtime alone on preprocessed batches (scripts/bench_embedder.py's measurement:
   the server's session options, batches of max_batch_size, no decoding, no gRPC, no Milvus).
2. naive: the seed's pipeline in one process, one image at a time: decode + preprocess
   (ris.embedder.preprocessing), one session run with batch 1 (same session options),
   one MilvusClient insert of that row into Milvus Lite; a flush at the end.
3. end to end: RisClient.ingest -> search service (subprocess, Milvus Lite inside it) ->
   embedder (subprocess): the real services on 127.0.0.1, fresh collection per repeat.

Targets on a 2-core CPU: end to end >= 80% of raw and >= 2x naive.

    python scripts/bench_ingest.py --limit 300 --json out/bench_ingest.json

--model is what raw and end to end run; --naive-model (default: --model) is what the naive
baseline runs, e.g. the seed's fp32 model beside an int8 service:

    python scripts/bench_ingest.py --limit 300 --model models/resnet50.int8.onnx \
        --naive-model models/resnet50.onnx --json out/bench_ingest_int8.json

Each leg's model (path, precision, file hash, embedding-space version) is in the JSON's
"models" and in the printed table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ris.client import RisClient
from ris.client.types import IngestItem
from ris.embedder.config import EmbedderConfig
from ris.embedder.model_metadata import (
    embedding_version,
    file_version,
    read_model_metadata,
)
from ris.embedder.preprocessing import prepare, with_resize_mode
from ris.embedder.runtime import ModelRuntime, pooling_label
from ris.tools.bench import (
    add_embedder_args,
    embedder_config,
    existing,
    release_lite,
    verdict,
    write_json,
)
from ris.tools.checkout import CALTECH_TRAIN
from ris.tools.harness import start_configured_embedder, start_search
from ris.tools.loadtest import load_images
from ris.tools.machine import describe_machine, machine_info
from ris.tools.raw_ort import raw_throughput
from ris.tools.stats import percentiles_ms

ROOT = Path(__file__).resolve().parent.parent

RAW_TARGET = 0.8
NAIVE_TARGET = 2.0


def model_identity(path: Path, config: EmbedderConfig) -> dict[str, str]:
    """Which model a leg ran: path, name, precision, file hash and the embedding-space version
    the embedder would report for it under ``config`` (as ris.embedder.core computes it)."""
    meta = read_model_metadata(path)
    weights = file_version(path)
    resize_mode = with_resize_mode(meta.preprocessing, config.resize_mode).resize_mode
    return {
        "path": str(path),
        "name": meta.name,
        "precision": meta.precision,
        "file_version": weights,
        "embedding_version": embedding_version(weights, pooling_label(config), resize_mode),
    }


def service_env() -> dict[str, str]:
    """RIS_* settings in the environment: the services started here read them (e.g.
    RIS_SEARCH_AUGMENTATION_TOP_N), so they are part of what a figure measured. Secrets hidden."""
    secret = re.compile(r"TOKEN|PASSWORD|SECRET|KEY", re.IGNORECASE)
    return {
        k: "***" if secret.search(k) else v
        for k, v in sorted(os.environ.items())
        if k.startswith("RIS_")
    }


def _model_label(identity: dict[str, str]) -> str:
    path = Path(identity["path"])
    try:
        shown = str(path.resolve().relative_to(ROOT))
    except ValueError:
        shown = str(path)
    return f"{shown} ({identity['precision']}, {identity['file_version']})"


def naive_baseline(
    config: EmbedderConfig, images: list[bytes], db_dir: Path, max_seconds: float
) -> dict[str, Any]:
    """The seed's loop: decode, embed (batch 1), insert one row, for each image in turn."""
    from pymilvus import DataType, MilvusClient

    runtime = ModelRuntime(config.model_paths[0], config)
    spec = runtime.metadata.preprocessing
    runtime.warm_up(1)
    uri = str(db_dir / "naive.db")
    client = MilvusClient(uri=uri)
    name = "naive"
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=runtime.dim)
    schema.add_field("label", DataType.VARCHAR, max_length=1024)
    index = MilvusClient.prepare_index_params()
    index.add_index(field_name="embedding", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index)
    decode_s: list[float] = []
    infer_s: list[float] = []
    insert_s: list[float] = []
    started = time.perf_counter()
    stop_at = started + max_seconds
    try:
        for i, data in enumerate(images):
            if time.perf_counter() > stop_at:
                break
            t0 = time.perf_counter()
            array = prepare(data, spec)
            t1 = time.perf_counter()
            vector = runtime.infer(array[None])[0]
            t2 = time.perf_counter()
            client.insert(name, [{"id": f"img-{i}", "embedding": vector.tolist(), "label": ""}])
            t3 = time.perf_counter()
            decode_s.append(t1 - t0)
            infer_s.append(t2 - t1)
            insert_s.append(t3 - t2)
        t4 = time.perf_counter()
        client.flush(name)
        flush_s = time.perf_counter() - t4
        seconds = time.perf_counter() - started
        count = client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"]
    finally:
        client.close()
        release_lite(uri)
    done = len(decode_s)
    return {
        "images": done,
        "stored": int(count),
        "seconds": seconds,
        "images_per_s": done / seconds,
        "decode_ms": percentiles_ms(decode_s),
        "infer_ms": percentiles_ms(infer_s),
        "insert_ms": percentiles_ms(insert_s),
        "flush_s": flush_s,
        "provider": runtime.execution_provider,
    }


def end_to_end(
    config: EmbedderConfig, images: list[bytes], args: argparse.Namespace, db_dir: Path
) -> dict[str, Any]:
    """Real client -> search service -> embedder -> Milvus Lite; one fresh collection per run."""
    embedder = start_configured_embedder(config)
    embedder_address = embedder.address
    try:
        extra = ["--ingest-batch-size", str(args.ingest_batch_size)]
        search = start_search(
            embedder_address, str(db_dir / "e2e.db"), extra_args=["--log-level", "WARNING", *extra]
        )
        address = search.address
        try:
            with RisClient(address=address) as client:
                client.wait_ready(timeout=60)
                return _ingest_runs(client, images, args)
        finally:
            search.stop(timeout=60)
    finally:
        embedder.stop(timeout=60)


def _items(images: list[bytes]) -> list[IngestItem]:
    return [IngestItem(id=f"img-{i}", data=d, label="bench") for i, d in enumerate(images)]


def _ingest_runs(
    client: RisClient, images: list[bytes], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Per collection setting (database-side augmentation's top_n, None = the server default),
    the repeats interleaved so that both settings see the same machine load."""
    warm = min(len(images), 2 * args.chunk_size)  # model, batch shapes, Milvus Lite all warm
    info = client.create_collection("bench_warmup")
    client.ingest("bench_warmup", _items(images[:warm]), chunk_size=args.chunk_size)
    client.drop_collection("bench_warmup")
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in args.augmentation_list}
    for repeat in range(args.repeats):
        for label, top_n in args.augmentation_list:
            name = f"bench_ingest_{repeat}"
            made = client.create_collection(name, augmentation_top_n=top_n)
            started = time.perf_counter()
            summary = client.ingest(name, _items(images), chunk_size=args.chunk_size)
            seconds = time.perf_counter() - started
            count = client.count(name)
            client.drop_collection(name)
            runs[label].append(
                {
                    "images": len(images),
                    "stored": summary.stored,
                    "failed": summary.failed,
                    "count_after": count,
                    "augmentation_top_n": made.augmentation_top_n,
                    "seconds": seconds,
                    "images_per_s": summary.stored / seconds,
                    "service_embed_seconds": summary.embed_seconds,
                    "service_milvus_seconds": summary.milvus_seconds,
                }
            )
            print(
                f"  run {repeat + 1}, augmentation {label}: {summary.stored}/{len(images)} "
                f"stored in {seconds:.2f} s = {summary.stored / seconds:.1f} images/s (service: "
                f"embed wait {summary.embed_seconds:.2f} s, milvus {summary.milvus_seconds:.2f} s)",
                flush=True,
            )
    out = {}
    for label, series in runs.items():
        best = max(series, key=lambda r: r["images_per_s"])
        out[label] = {
            "runs": series,
            "best": best,
            "images_per_s": best["images_per_s"],
            "median_images_per_s": float(np.median([r["images_per_s"] for r in series])),
            # what the search service recorded for its collections (from the embedder)
            "service_model_name": info.model_name,
            "service_model_version": info.model_version,
        }
    return out


def augmentation_list(text: str) -> list[tuple[str, int | None]]:
    """ "default,0" -> [("default", None), ("0", 0)]: collection settings to compare."""
    out: list[tuple[str, int | None]] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        out.append((part, None) if part == "default" else (f"top{int(part)}", int(part)))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--images", nargs="*", default=None, help=f"files or folders (default: {CALTECH_TRAIN})"
    )
    parser.add_argument("--limit", type=int, default=300, help="photos to ingest")
    add_embedder_args(parser, model_help="model of (a) raw and the end-to-end service")
    parser.add_argument(
        "--naive-model",
        type=Path,
        default=None,
        help="model of (b) the naive baseline (default: --model), e.g. the seed's fp32 model",
    )
    parser.add_argument("--ingest-batch-size", type=int, default=32, help="search service's")
    parser.add_argument("--chunk-size", type=int, default=32, help="items per stream message")
    parser.add_argument("--repeats", type=int, default=2, help="end-to-end runs (best counts)")
    parser.add_argument("--raw-seconds", type=float, default=20.0)
    parser.add_argument("--raw-iters", type=int, default=200)
    parser.add_argument("--naive-seconds", type=float, default=300.0, help="bound on naive loop")
    parser.add_argument(
        "--augmentation",
        default="default,0",
        help="collection settings compared end to end: 'default' (the server's: database-side "
        "augmentation, top 3) and/or top_n values (0 = raw embeddings); the first is the headline",
    )
    parser.add_argument("--json", dest="json_path", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        args.augmentation_list = augmentation_list(args.augmentation)
    except ValueError:
        parser.error("--augmentation: 'default' or integers, comma-separated")
    if not args.augmentation_list:
        parser.error("--augmentation names no setting")
    if args.limit < 1 or args.repeats < 1:
        parser.error("--limit and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = embedder_config(args)
    naive_model = args.naive_model if args.naive_model is not None else args.model
    naive_config = dataclasses.replace(config, model_paths=[naive_model]).validate()
    models = {
        "raw": model_identity(args.model, config),
        "naive": model_identity(naive_model, naive_config),
        "end_to_end": model_identity(args.model, config),
    }
    sources = args.images if args.images else existing([CALTECH_TRAIN])
    images = load_images(sources, args.limit)
    if not images:
        print("bench_ingest: no images found", file=sys.stderr)
        return 2
    machine = machine_info()
    print(f"machine: {describe_machine(machine)}")
    print(f"{len(images)} photos, mean {np.mean([len(i) for i in images]) / 1024:.0f} KiB")
    print(f"model of (a) raw and end to end: {_model_label(models['raw'])}")
    print(f"model of (b) naive:              {_model_label(models['naive'])}", flush=True)
    env = service_env()
    if env:
        print("services' RIS_* settings: " + ", ".join(f"{k}={v}" for k, v in env.items()))

    raw = raw_throughput(config, images, args.raw_seconds, args.raw_iters)
    print(f"(a) raw ORT, batch {raw['batch_size']}: {raw['images_per_s']:.1f} images/s", flush=True)
    db_dir = Path(tempfile.mkdtemp(prefix="ris-bench-ingest-"))
    try:
        naive = naive_baseline(naive_config, images, db_dir, args.naive_seconds)
        print(
            f"(b) naive one-at-a-time: {naive['images_per_s']:.1f} images/s "
            f"(decode {naive['decode_ms']['p50']:.1f} + infer {naive['infer_ms']['p50']:.1f} + "
            f"insert {naive['insert_ms']['p50']:.1f} ms p50)",
            flush=True,
        )
        print("end to end (client -> search service -> embedder -> Milvus Lite):", flush=True)
        by_setting = end_to_end(config, images, args, db_dir)
    finally:
        shutil.rmtree(db_dir, ignore_errors=True)
    e2e = by_setting[args.augmentation_list[0][0]]  # the headline setting
    models["end_to_end"]["service_model_version"] = e2e["service_model_version"]

    to_raw = e2e["images_per_s"] / raw["images_per_s"]
    to_naive = e2e["images_per_s"] / naive["images_per_s"]
    rows = [
        ("(a) raw ORT (preprocessed batches)", raw["images_per_s"], "-", models["raw"]),
        ("(b) naive one at a time", naive["images_per_s"], "-", models["naive"]),
    ]
    ratios: dict[str, dict[str, float]] = {}
    for label, result in by_setting.items():
        rate = result["images_per_s"]
        ratios[label] = {
            "e2e_to_raw": rate / raw["images_per_s"],
            "e2e_to_naive": rate / naive["images_per_s"],
        }
        note = f"{ratios[label]['e2e_to_raw']:.0%} of (a), {ratios[label]['e2e_to_naive']:.2f}x (b)"
        rows.append((f"end to end, augmentation {label} (best)", rate, note, models["end_to_end"]))
    print(f"\n{'pipeline':<38} {'images/s':>9}  {'vs baselines':<24} model")
    for label, rate, note, identity in rows:
        print(f"{label:<38} {rate:>9.1f}  {note:<24} {_model_label(identity)}")
    print(f"end-to-end service's model version: {e2e['service_model_version']}")
    same_model = models["naive"]["file_version"] == models["raw"]["file_version"]
    if not same_model:
        print("note: (b) naive ran another model than (a) and end to end (see 'model' column)")
    ok_raw, ok_naive = to_raw >= RAW_TARGET, to_naive >= NAIVE_TARGET
    print(
        f"headline (augmentation {args.augmentation_list[0][0]}): "
        f"target >= {RAW_TARGET:.0%} of raw: {verdict(ok_raw)}; "
        f"target >= {NAIVE_TARGET:.0f}x naive: {verdict(ok_naive)}"
    )
    write_json(
        args.json_path,
        {
            "benchmark": "ingest",
            "machine": machine,
            "images": len(images),
            "config": {k: str(v) for k, v in dataclasses.asdict(config).items()},
            "args": {k: str(v) for k, v in vars(args).items()},
            "models": models,
            "service_env": env,
            "same_model_all_legs": same_model,
            "raw": raw,
            "naive": naive,
            "end_to_end": e2e,
            "end_to_end_by_augmentation": by_setting,
            "ratios": {"e2e_to_raw": to_raw, "e2e_to_naive": to_naive},
            "ratios_by_augmentation": ratios,
            "targets": {
                "e2e_to_raw": RAW_TARGET,
                "e2e_to_naive": NAIVE_TARGET,
                "e2e_to_raw_met": ok_raw,
                "e2e_to_naive_met": ok_naive,
            },
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
