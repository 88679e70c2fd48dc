"""Benchmark the embedder: raw ONNX Runtime throughput vs the gRPC service at several concurrencies.

1. Raw: the model's session, built exactly as the server builds it (same options, threads,
   provider), timed on already-preprocessed batches of max_batch_size. No decoding, no gRPC.
2. Service: `python -m ris.embedder` in a subprocess on 127.0.0.1 (so client and server do not
   share a GIL), loaded by tools/loadtest.py with single-image Embed calls (decode included) at
   each client concurrency.
3. Direct (the latency baseline of concurrency 1): one image at a time in this process, decode +
   preprocess (the served geometry) and one session run with batch 1, no gRPC, no batcher.

Prints a table with each level's images/s as a fraction of raw and writes JSON. Target: the best
level reaches >= 80% of raw on a 2-core CPU machine.

    python scripts/bench_embedder.py --duration 30 --requests 3000 --json bench.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ris.embedder.config import EmbedderConfig
from ris.embedder.preprocessing import prepare, with_resize_mode
from ris.embedder.runtime import ModelRuntime
from ris.tools.bench import add_embedder_args, embedder_config
from ris.tools.checkout import IMAGENET
from ris.tools.harness import start_configured_embedder
from ris.tools.loadtest import HEADER, LoadSpec, load_images, run_level, synthetic_images
from ris.tools.raw_ort import raw_throughput
from ris.tools.stats import percentiles_ms

DEFAULT_IMAGES = IMAGENET


def direct_latency(
    config: EmbedderConfig, images: list[bytes], requests: int, seconds: float
) -> dict[str, Any]:
    """One image at a time in this process: decode + preprocess as the server does (its resize
    mode and pixel limit), then one run with batch 1; what concurrency 1 is held against."""
    runtime = ModelRuntime(config.model_paths[0], config)
    spec = with_resize_mode(runtime.metadata.preprocessing, config.resize_mode)
    runtime.warm_up(1)
    for data in images[:3]:
        runtime.infer(prepare(data, spec, config.max_image_pixels)[None])
    timings: list[float] = []
    stop_at = time.perf_counter() + seconds
    while len(timings) < requests and time.perf_counter() < stop_at:
        data = images[len(timings) % len(images)]
        started = time.perf_counter()
        runtime.infer(prepare(data, spec, config.max_image_pixels)[None])
        timings.append(time.perf_counter() - started)
    return {"requests": len(timings), "latency_ms": percentiles_ms(timings)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_embedder_args(parser)
    parser.add_argument(
        "--images",
        nargs="*",
        default=None,
        help=f"images or folders (default: {DEFAULT_IMAGES} or synthetic)",
    )
    parser.add_argument("--max-images", type=int, default=128)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--duration", type=float, default=20.0, help="max seconds per level")
    parser.add_argument("--requests", type=int, default=2000, help="max requests per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per level")
    parser.add_argument("--raw-seconds", type=float, default=20.0)
    parser.add_argument("--raw-iters", type=int, default=200)
    parser.add_argument("--ort-spinning", action="store_true", help="let ORT threads spin")
    parser.add_argument("--json", dest="json_path", type=Path, default=None)
    args = parser.parse_args(argv)

    config = embedder_config(
        args,
        ort_spinning=args.ort_spinning,
        max_queue_images=max(256, 2 * max(int(c) for c in args.concurrency.split(","))),
    )
    if args.images:
        images = load_images(args.images, args.max_images)
    elif DEFAULT_IMAGES.exists():
        images = load_images([DEFAULT_IMAGES], args.max_images)
    else:
        images = synthetic_images(32)
    print(
        f"{len(images)} images, mean {np.mean([len(i) for i in images]) / 1024:.0f} KiB; "
        f"{os.cpu_count()} CPUs; {platform.processor() or platform.machine()}"
    )

    raw = raw_throughput(config, images, args.raw_seconds, args.raw_iters)
    print(
        f"raw ORT ({raw['provider']}, batch {raw['batch_size']}): "
        f"{raw['images_per_s']:.1f} images/s, {raw['batch_ms_p50']:.1f} ms/batch p50; "
        f"decode+preprocess {raw['decode_ms_per_image']:.1f} ms/image on one thread"
    )

    direct = direct_latency(config, images, args.requests, args.duration)
    print(
        f"direct (one image at a time, no gRPC): p50 {direct['latency_ms']['p50']:.1f} ms, "
        f"p99 {direct['latency_ms']['p99']:.1f} ms over {direct['requests']} images"
    )

    embedder = start_configured_embedder(config)
    levels = []
    try:
        print(HEADER + "   vs raw")
        for level in [int(c) for c in args.concurrency.split(",")]:
            spec = LoadSpec(
                target=embedder.address,
                call="embed",
                concurrency=level,
                max_requests=args.requests,
                max_seconds=args.duration,
                warmup_seconds=args.warmup,
                batch=1,
                timeout_s=60.0,
            )
            report = run_level(spec, images)
            ratio = report.images_per_s / float(raw["images_per_s"])
            extra = ""
            if level == 1:
                over = report.latency_ms.get("p50", 0) - direct["latency_ms"]["p50"]
                extra = f"   p50 {over:+.1f} ms vs direct"
            print(f"{report.row()}   {ratio:6.1%}{extra}", flush=True)
            levels.append({**asdict(report), "ratio_to_raw": ratio})
    finally:
        embedder.stop(timeout=60)
    best = max(levels, key=lambda r: r["images_per_s"])
    verdict = "PASS" if best["ratio_to_raw"] >= 0.8 else "BELOW TARGET"
    print(
        f"best: concurrency {best['concurrency']}: {best['images_per_s']:.1f} images/s = "
        f"{best['ratio_to_raw']:.1%} of raw ({verdict}, target 80%)"
    )
    if args.json_path:
        result = {
            "config": {k: str(v) for k, v in dataclasses.asdict(config).items()},
            "raw": raw,
            "direct": direct,
            "levels": levels,
            "best": best,
            "cpus": os.cpu_count(),
        }
        args.json_path.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
