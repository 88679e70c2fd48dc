"""Phone-sized photos beside the same photos at their original size, measured in one run.

The large photos are made from the small ones (ris.tools.phone_photos: upscaled to 4032 x 3024
with sensor-like noise, JPEG quality 92, ~2.7 MB) and cached under data/bench_photos/ (git-ignored).
Every leg runs small and large interleaved (small, large, small, large, ...), so both see the
same machine load:

1. decode + preprocess on one thread, per photo: every pixel decoded (what the embedder did before
   scaled decoding) vs scaled decoding (what it does now).
2. raw ONNX Runtime on preprocessed batches (bench_embedder.raw_throughput): the ceiling,
   measured before each pair of embedder legs.
3. the embedder alone (``python -m ris.embedder``, Embed calls of --batch images from
   --concurrency callers, as the search service sends them; tools/loadtest.py): images/s, as a
   fraction of raw.
4. end to end: RisClient.ingest -> search service -> embedder -> Milvus Lite, fresh collection per
   run: images/s, large over small.

Goals on 2 CPU cores: end to end, 12 MP >= 0.7x small; embedder alone on 12 MP >= 80% of raw.

    python scripts/bench_phone_photos.py --limit 48 --json docs/results/bench_phone_photos.json
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ris.client import RisClient
from ris.client.types import IngestItem
from ris.embedder.config import EmbedderConfig
from ris.embedder.model_metadata import read_model_metadata
from ris.embedder.preprocessing import PreprocessSpec, prepare, with_resize_mode
from ris.tools.bench import add_embedder_args, embedder_config, verdict, write_json
from ris.tools.checkout import CALTECH_TRAIN
from ris.tools.harness import start_configured_embedder, start_search
from ris.tools.loadtest import LoadSpec, run_level
from ris.tools.machine import describe_machine, machine_info
from ris.tools.phone_photos import phone_photo
from ris.tools.raw_ort import raw_throughput

ROOT = Path(__file__).resolve().parent.parent

CACHE = ROOT / "data" / "bench_photos"
E2E_TARGET = 0.7
EMBEDDER_TARGET = 0.8


def photo_sets(limit: int, cache: Path) -> tuple[list[bytes], list[bytes]]:
    """(small, large): ``limit`` Caltech photos, one per class first, and their 12 MP versions."""
    classes = sorted(p for p in CALTECH_TRAIN.iterdir() if p.is_dir())
    files: list[Path] = []
    for rank in range(limit):
        for folder in classes:
            pictures = sorted(folder.glob("*.jpg"))
            if rank < len(pictures) and len(files) < limit:
                files.append(pictures[rank])
        if len(files) >= limit:
            break
    cache.mkdir(parents=True, exist_ok=True)
    small, large = [], []
    for seed, path in enumerate(files):
        data = path.read_bytes()
        cached = cache / f"{path.parent.name}-{path.stem}-{seed}.jpg"
        if not cached.exists():
            cached.write_bytes(phone_photo(data, seed))
        small.append(data)
        large.append(cached.read_bytes())
    return small, large


def decode_costs(spec: PreprocessSpec, small: list[bytes], large: list[bytes]) -> dict[str, Any]:
    """ms per photo of decode + preprocess on one thread, full vs scaled, interleaved."""
    times: dict[str, list[float]] = {
        f"{size}_{mode}": [] for size in ("small", "large") for mode in ("full", "scaled")
    }
    for s, big in zip(small, large, strict=True):
        for size, data in (("small", s), ("large", big)):
            for mode, scaled in (("full", False), ("scaled", True)):
                started = time.perf_counter()
                prepare(data, spec, scaled=scaled)
                times[f"{size}_{mode}"].append(time.perf_counter() - started)
    out: dict[str, Any] = {k: float(np.median(v) * 1000) for k, v in times.items()}
    out["large_speedup"] = out["large_full"] / out["large_scaled"]
    return out


def embedder_alone(
    config: EmbedderConfig,
    address: str,
    small: list[bytes],
    large: list[bytes],
    args: argparse.Namespace,
) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    """images/s of single-image Embed calls, small and large, and raw ORT beside them:
    raw, small, large, raw, small, large, ... (the embedder idles while raw runs)."""
    rates: dict[str, list[float]] = {"small": [], "large": []}
    raws: list[dict[str, Any]] = []
    for _ in range(args.repeats):
        raws.append(raw_throughput(config, small, args.raw_seconds, args.raw_iters))
        print(f"  raw ORT: {raws[-1]['images_per_s']:.1f} images/s", flush=True)
        for label, images in (("small", small), ("large", large)):
            spec = LoadSpec(
                target=address,
                call="embed",
                concurrency=args.concurrency,
                batch=args.batch,
                max_requests=max(1, 2 * len(images) // args.batch),
                max_seconds=args.leg_seconds,
                warmup_seconds=1.0,
                timeout_s=120.0,
            )
            report = run_level(spec, images)
            rates[label].append(report.images_per_s)
            print(f"  embedder alone, {label}: {report.images_per_s:.1f} images/s", flush=True)
    return rates, raws


def end_to_end(
    address: str, small: list[bytes], large: list[bytes], args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    """RisClient.ingest into a fresh collection per run, small and large interleaved."""
    runs: dict[str, list[dict[str, Any]]] = {"small": [], "large": []}
    with RisClient(address=address, timeout=300) as client:
        client.wait_ready(timeout=60)
        client.create_collection("bench_warmup")
        client.ingest("bench_warmup", _items(small[:16] + large[:8]))
        client.drop_collection("bench_warmup")
        for repeat in range(args.repeats):
            for label, images in (("small", small), ("large", large)):
                name = f"bench_phone_{label}_{repeat}"
                client.create_collection(name)
                started = time.perf_counter()
                summary = client.ingest(name, _items(images))
                seconds = time.perf_counter() - started
                client.drop_collection(name)
                runs[label].append(
                    {
                        "images": len(images),
                        "stored": summary.stored,
                        "failed": summary.failed,
                        "megabytes": sum(len(d) for d in images) / 1e6,
                        "seconds": seconds,
                        "images_per_s": summary.stored / seconds,
                    }
                )
                print(
                    f"  end to end, {label}: {summary.stored}/{len(images)} stored in "
                    f"{seconds:.2f} s = {summary.stored / seconds:.1f} images/s",
                    flush=True,
                )
    return runs


def _items(images: list[bytes]) -> list[IngestItem]:
    return [IngestItem(id=f"img-{i}", data=d, label="bench") for i, d in enumerate(images)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=48, help="photos per size")
    add_embedder_args(parser, model_help="model of raw, the embedder and end to end")
    parser.add_argument("--concurrency", type=int, default=4, help="embedder-alone callers")
    parser.add_argument("--batch", type=int, default=8, help="images per embedder-alone call")
    parser.add_argument("--repeats", type=int, default=2, help="runs per size per leg")
    parser.add_argument("--leg-seconds", type=float, default=60.0, help="bound per embedder leg")
    parser.add_argument("--raw-seconds", type=float, default=15.0)
    parser.add_argument("--raw-iters", type=int, default=60)
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the 12 MP photos are kept")
    parser.add_argument("--json", dest="json_path", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.limit < 1 or args.repeats < 1:
        parser.error("--limit and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = embedder_config(args, max_queue_images=max(256, 4 * args.concurrency))
    small, large = photo_sets(args.limit, args.cache)
    machine = machine_info()
    print(f"machine: {describe_machine(machine)}")
    print(
        f"{len(small)} photos: small mean {np.mean([len(d) for d in small]) / 1e3:.0f} KB, "
        f"large (4032x3024) mean {np.mean([len(d) for d in large]) / 1e6:.2f} MB",
        flush=True,
    )
    model_spec = read_model_metadata(config.model_paths[0]).preprocessing
    spec = with_resize_mode(model_spec, config.resize_mode)  # what the embedder serves
    decode = decode_costs(spec, small, large)
    print(
        f"decode + preprocess, one thread (median ms): small {decode['small_full']:.1f} full / "
        f"{decode['small_scaled']:.1f} scaled; 12 MP {decode['large_full']:.1f} full / "
        f"{decode['large_scaled']:.1f} scaled ({decode['large_speedup']:.1f}x)",
        flush=True,
    )
    embedder = start_configured_embedder(config)
    embedder_address = embedder.address
    db_dir = Path(tempfile.mkdtemp(prefix="ris-bench-phone-"))
    try:
        alone, raws = embedder_alone(config, embedder_address, small, large, args)
        search = start_search(
            embedder_address, str(db_dir / "bench.db"), extra_args=["--log-level", "WARNING"]
        )
        address = search.address
        try:
            e2e = end_to_end(address, small, large, args)
        finally:
            search.stop(timeout=60)
    finally:
        embedder.stop(timeout=60)

    raw = max(raws, key=lambda r: float(r["images_per_s"]))  # best, like the legs beside it
    best_alone = {k: max(v) for k, v in alone.items()}
    best_e2e = {k: max(r["images_per_s"] for r in v) for k, v in e2e.items()}
    # Headline ratios: the median over repeats of each ratio between legs run back to back (on a
    # shared machine a ratio of neighbours is steadier than one of bests taken minutes apart).
    pairs = {
        "e2e_large_to_small": [
            big["images_per_s"] / little["images_per_s"]
            for little, big in zip(e2e["small"], e2e["large"], strict=True)
        ],
        "embedder_large_to_raw": [
            big / float(r["images_per_s"]) for big, r in zip(alone["large"], raws, strict=True)
        ],
        "embedder_large_to_small": [
            big / little for little, big in zip(alone["small"], alone["large"], strict=True)
        ],
    }
    e2e_ratio = float(np.median(pairs["e2e_large_to_small"]))
    alone_large_to_raw = float(np.median(pairs["embedder_large_to_raw"]))
    print(f"\n{'leg (best of each)':<34} {'small':>9} {'12 MP':>9}  12 MP vs (median of pairs)")
    print(f"{'raw ORT (images/s, preprocessed)':<34} {float(raw['images_per_s']):>9.1f}")
    print(
        f"{'embedder alone (images/s)':<34} {best_alone['small']:>9.1f} "
        f"{best_alone['large']:>9.1f}  {alone_large_to_raw:.0%} of raw ORT"
    )
    print(
        f"{'end to end (images/s)':<34} {best_e2e['small']:>9.1f} "
        f"{best_e2e['large']:>9.1f}  {e2e_ratio:.2f}x small"
    )
    ok_e2e, ok_alone = e2e_ratio >= E2E_TARGET, alone_large_to_raw >= EMBEDDER_TARGET
    print(
        f"target 12 MP >= {E2E_TARGET}x small end to end: {verdict(ok_e2e)}; "
        f"embedder on 12 MP >= {EMBEDDER_TARGET:.0%} of raw: {verdict(ok_alone)}"
    )
    write_json(
        args.json_path,
        {
            "benchmark": "phone_photos",
            "machine": machine,
            "photos_per_size": len(small),
            "small_mean_bytes": float(np.mean([len(d) for d in small])),
            "large_mean_bytes": float(np.mean([len(d) for d in large])),
            "config": {k: str(v) for k, v in dataclasses.asdict(config).items()},
            "args": {k: str(v) for k, v in vars(args).items()},
            "decode_ms_one_thread": decode,
            "raw": raw,
            "raw_runs": raws,
            "embedder_alone_images_per_s": alone,
            "end_to_end": e2e,
            "best": {"embedder_alone": best_alone, "end_to_end": best_e2e},
            "ratios": {
                "e2e_large_to_small": e2e_ratio,
                "embedder_large_to_raw": alone_large_to_raw,
                "embedder_large_to_small": float(np.median(pairs["embedder_large_to_small"])),
            },
            "ratio_per_repeat": pairs,
            "targets": {
                "e2e_large_to_small": E2E_TARGET,
                "embedder_large_to_raw": EMBEDDER_TARGET,
                "e2e_met": ok_e2e,
                "embedder_met": ok_alone,
            },
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
