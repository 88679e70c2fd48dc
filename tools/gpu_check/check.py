"""The GPU check of the embedder (issue 20): one bounded run that proves and measures the GPU path.

On the GPU machine (no network) it assembles the carried bundle, installs its wheels
(onnxruntime-gpu and the project's gRPC pins; the image's torch brings the CUDA 13 / cuDNN 9
`nvidia-*` libraries), then runs each phase of ris.tools.gpu_check.phases in its own process
under a time limit: env (versions, nvidia-smi, TensorRT library), cuda (CUDA provider really
first in the session, fp16 vs the fp32 CPU references, raw ORT at batch 1/32/128/256), decode
(CPU decode on every core), service (the real embedder on loopback at concurrency 64/256, then
raw again), tensorrt (provider, engine build, second start on the cache). After every phase it
rewrites gpu_check.json, so a phase that hangs costs its own limit and nothing measured before.

    prepare (here):  python scripts/gpu_check.py prepare            -> .gpu_carry/part-NN/
    stage (device):  python scripts/gpu_check.py stage              (one part per call)
    run (device):    python scripts/gpu_check.py run [OUT]          -> OUT/gpu_check.{json,txt,log}
    dry run (here):  python scripts/gpu_check.py run --dry-run OUT  (CPU stands in, tiny sizes)

scripts/gpu_check.sh is the entry point; docs/benchmarks.md ("GPU check") gives the call sequence.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ris.tools.bench import write_json
from ris.tools.checkout import CALTECH_TEST, CHECKOUT, DEFAULT_MODEL, IMAGENET
from ris.tools.gpu_check.bundle import (
    DEFAULT_STAGE,
    BundleError,
    PartSet,
    assemble,
    find_parts,
    stage,
    write_bundle,
)
from ris.tools.gpu_check.phases import MIN_COSINE_FP16, PHASES, CheckPlan
from ris.tools.machine import machine_info

ROOT = CHECKOUT  # .gpu_carry/, out/ and pyproject.toml are the checkout's

CARRY_DIR = ROOT / ".gpu_carry"
DEFAULT_WORK = Path(tempfile.gettempdir()) / "ris_gpu_work"
PART_MIB = 56  # + the repository (~2 MB) stays under a device call's 64 MiB
DRY_PART_MIB = 16  # small parts, so a dry run assembles several
# Carried to the GPU machine: the embedder's own pins; numpy, Pillow, onnx and the CUDA
# libraries come from the machine's image (torch's nvidia-* wheels).
CARRIED = ("onnxruntime-gpu", "grpcio", "protobuf", "grpcio-health-checking", "grpcio-reflection",
           "prometheus-client")  # fmt: skip
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip
GPU_BUDGET_S = 450.0  # the whole run, install included: inside the 8 minutes
DRY_BUDGET_S = 55.0
# Per-phase limits (s): GPU run, dry run.
PHASE_LIMITS = {
    "env": (60, 30),
    "cuda": (120, 40),
    "decode": (60, 30),
    "service": (150, 45),
    "tensorrt": (150, 30),
}
RESERVE_S = 8.0  # kept back for the summary
MIN_PHASE_S = (15.0, 5.0)  # a phase given less is skipped: GPU run, dry run
TARGET_SERVICE_RATIO = 0.8
TARGET_SERVICE_IMAGES_S = 5000.0


# -- prepare (here) ---------------------------------------------------------------------------


def carried_pins() -> list[str]:
    """``name==version`` of CARRIED, read from pyproject.toml (one source of versions)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs.extend(s for s in extra if "==" in s)
    pins = {s.split("==")[0].strip().lower(): s.strip() for s in specs if "==" in s}
    missing = [name for name in CARRIED if name not in pins]
    if missing:
        raise SystemExit(f"pyproject.toml pins none of {missing}")
    return [pins[name] for name in CARRIED]


def download_wheels(dest: Path, python_version: str) -> list[Path]:
    """pip download of the carried wheels for the GPU machine (x86-64 manylinux, CPython)."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--python-version", python_version, "--implementation", "cp",
        *[arg for p in PLATFORMS for arg in ("--platform", p)], "-d", str(dest), *carried_pins(),
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return sorted(dest.glob("*.whl"))


def _photo_sets(n_accuracy: int, n_throughput: int) -> tuple[list[Path], list[Path]]:
    """Accuracy photos (one per Caltech class, then ImageNet) and throughput photos (ImageNet)."""
    imagenet = sorted(IMAGENET.glob("*.JPEG")) if IMAGENET.exists() else []
    classes = sorted(CALTECH_TEST.glob("*")) if CALTECH_TEST.exists() else []
    caltech = [min(files) for d in classes if (files := list(d.glob("*.jpg")))]
    accuracy = caltech[: n_accuracy // 2]
    accuracy += imagenet[: n_accuracy - len(accuracy)]
    return accuracy, imagenet[-n_throughput:] if imagenet else []


def references(model: Path, photos: list[bytes]) -> tuple[Any, Any]:
    """The served pixels of ``photos`` and their fp32 CPU embeddings: the accuracy baseline."""
    import numpy as np

    from ris.embedder.config import EmbedderConfig
    from ris.embedder.preprocessing import prepare as prepare_pixels
    from ris.embedder.preprocessing import with_resize_mode
    from ris.embedder.runtime import ModelRuntime

    config = EmbedderConfig(model_paths=[model], provider="cpu").validate()
    runtime = ModelRuntime(model, config)
    spec = with_resize_mode(runtime.metadata.preprocessing, config.resize_mode)
    pixels = np.stack([prepare_pixels(data, spec) for data in photos])
    vectors = np.concatenate([runtime.infer(pixels[i : i + 16]) for i in range(0, len(pixels), 16)])
    return pixels, vectors


def prepare(args: argparse.Namespace) -> int:
    """Build the bundle here and cut it into part folders under --carry-dir."""
    import numpy as np

    from ris.embedder.runtime import fp16_sibling
    from ris.tools.loadtest import synthetic_images

    fp32 = Path(args.model)
    fp16 = fp16_sibling(fp32)
    for path in (fp32, fp16):
        if not path.exists():
            raise SystemExit(f"{path} missing: run python scripts/export_onnx.py first")
    n_acc, n_tp = (4, 4) if args.dry_run else (args.accuracy_photos, args.throughput_photos)
    with tempfile.TemporaryDirectory(prefix="ris_gpu_prepare_") as tmp:
        staging = Path(tmp)
        members: list[tuple[Path, str]] = [(fp16, f"models/{fp16.name}")]
        wheels: list[Path] = []
        if args.wheels_from:
            wheels = sorted(Path(args.wheels_from).glob("*.whl"))
        elif not (args.dry_run or args.no_wheels):
            wheels = download_wheels(staging / "wheels", args.python_version)
        if wheels:
            members.extend((w, f"wheels/{w.name}") for w in wheels)
        accuracy, throughput = _photo_sets(n_acc, n_tp)
        source = "shared datasets"
        if len(accuracy) < n_acc or not throughput:
            source = "synthetic (no shared datasets here)"
            synthetic = synthetic_images(n_acc + n_tp)
            photos_dir = staging / "photos"
            photos_dir.mkdir()
            for i, data in enumerate(synthetic[n_acc:]):
                (photos_dir / f"synthetic_{i:02d}.jpg").write_bytes(data)
            accuracy_bytes = synthetic[:n_acc]
            members.append((photos_dir, "photos"))
        else:
            accuracy_bytes = [p.read_bytes() for p in accuracy]
            members.extend((p, f"photos/{p.name}") for p in throughput)
        pixels, vectors = references(fp32, accuracy_bytes)
        np.save(staging / "pixels.npy", pixels)
        np.save(staging / "reference.npy", vectors)
        manifest = {
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dry_run": args.dry_run,
            "model": fp16.name,
            "reference_model": fp32.name,
            "reference": "fp32 ModelRuntime on CPUExecutionProvider, served preprocessing",
            "photos": source,
            "accuracy_photos": [p.name for p in accuracy] if source == "shared datasets" else [],
            "throughput_photos": len(throughput) if throughput else n_tp,
            "wheels": [w.name for w in wheels],
            "prepared_on": machine_info(),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        members += [(staging / n, n) for n in ("pixels.npy", "reference.npy", "manifest.json")]
        part_mib = args.part_mib or (DRY_PART_MIB if args.dry_run else PART_MIB)
        index = write_bundle(Path(args.carry_dir), members, part_mib * 2**20)
    print(
        f"bundle {index['bundle'][:12]}: {index['bytes'] / 2**20:.1f} MiB in {index['parts']} "
        f"parts of <= {part_mib} MiB under {args.carry_dir} ({len(wheels)} wheels, "
        f"{len(accuracy_bytes)} accuracy photos, photos: {source})"
    )
    return 0


def prepare_wheels(args: argparse.Namespace) -> int:
    wheels = download_wheels(Path(args.dir), args.python_version)
    total = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(wheels)} wheels, {total:.1f} MiB in {args.dir}")
    return 0


def stage_command(args: argparse.Namespace) -> int:
    parts = stage(Path(args.carry_dir), Path(args.stage_dir))
    print(parts.describe() if parts else f"no bundle parts under {args.carry_dir}")
    return 0


# -- run (device, or a dry run here) ----------------------------------------------------------


def plan_for(args: argparse.Namespace, bundle: Path, work: Path, model: str) -> CheckPlan:
    if not args.dry_run:
        return CheckPlan(
            dry_run=False,
            bundle=str(bundle),
            work=str(work),
            model_name=model,
            decode_workers=os.cpu_count() or 16,
        )
    return CheckPlan(
        dry_run=True, bundle=str(bundle), work=str(work), model_name=model, provider="cpu",
        trt_provider="cpu", raw_batches=[1, 2], raw_seconds=0.2, raw_iters=1, raw_warmup=0,
        new_shapes=[1], service_batch=2, service_levels=[[2, 1], [2, 2]], level_seconds=1.5,
        level_requests=3, warmup_s=0.1, decode_workers=2, decode_images=8, decode_seconds=2.0,
        trt_max_batch=1,
        raw_after=False,
    )  # fmt: skip


def run_phase(
    name: str, argv: list[str], timeout: float, log: Path, env: dict[str, str]
) -> tuple[str, int | None, float]:
    """Run one phase process (its own process group) for at most ``timeout`` seconds.

    Whatever it leaves behind (the embedder server, decode workers) is killed with its group,
    on time-out and on a normal exit alike. Returns (status, exit code, seconds).
    """
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"\n== {name}: {' '.join(argv)} (limit {timeout:.0f} s)\n")
        out.flush()
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True
        )
        try:
            rc: int | None = proc.wait(timeout=timeout)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            rc, status = None, "timeout"
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        seconds = time.monotonic() - started
        out.write(f"== {name}: {status} in {seconds:.1f} s\n")
    return status, rc, seconds


def install_wheels(wheels: list[Path], site: Path, log: Path) -> dict[str, Any]:
    """pip install --no-index --target: nothing is fetched, the image's own packages stay."""
    shutil.rmtree(site, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
               "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site),
               *map(str, wheels)]  # fmt: skip
    status, rc, seconds = run_phase("install", command, 240, log, dict(os.environ))
    return {"status": status, "rc": rc, "seconds": seconds, "wheels": [w.name for w in wheels]}


def _bundle(args: argparse.Namespace, work: Path, log: Path) -> tuple[PartSet | None, str]:
    """The complete bundle's parts, or why not. A dry run without --carry-dir prepares its own
    (never a GPU bundle left in .gpu_carry: its cp312 wheels are not for this Python)."""
    if args.dry_run and not args.carry_dir:
        carry = work / "carry"
        command = [sys.executable, "-m", "ris.tools.gpu_check.check", "prepare", "--dry-run",
                   "--carry-dir", str(carry), "--model", str(args.model)]  # fmt: skip
        status, _, _ = run_phase("prepare", command, 60, log, dict(os.environ))
        if status != "ok":
            return None, f"dry-run prepare {status} (see gpu_check.log)"
        dirs = [carry]
    else:
        dirs = [Path(args.carry_dir or CARRY_DIR), Path(args.stage_dir)]
    parts = find_parts(dirs)
    if parts is None:
        return None, f"no bundle parts in {[str(d) for d in dirs]}: run --prepare here first"
    if not parts.complete:
        return parts, parts.describe() + ": carry the missing part folders (see docs)"
    return parts, ""


class Results:
    """gpu_check.json under OUT, rewritten after every step."""

    def __init__(self, out: Path, data: dict[str, Any]) -> None:
        self.path = out / "gpu_check.json"
        self.data = data

    def save(self) -> None:
        write_json(self.path, self.data, quiet=True)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out or os.environ.get("OUT") or ROOT / "out" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = out / "gpu_check.log"
    log.write_text("")
    budget = args.budget_s or (DRY_BUDGET_S if args.dry_run else GPU_BUDGET_S)
    deadline = time.monotonic() + budget
    results = Results(
        out,
        {
            "schema": 1,
            "dry_run": args.dry_run,
            "complete": False,
            "budget_s": budget,
            "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "bundle": {},
            "install": None,
            "plan": None,
            "phases": {},
            "checks": [],
            "summary": {},
        },
    )
    started = time.monotonic()
    parts, error = _bundle(args, work, log)
    assembling = time.monotonic()
    if error or parts is None:
        results.data["bundle"] = {"error": error}
        results.save()
        print(f"gpu check: {error}", file=sys.stderr)
        return 2
    try:
        bundle = assemble(parts, work / "bundle")
    except BundleError as exc:
        results.data["bundle"] = {"error": str(exc)}
        results.save()
        print(f"gpu check: {exc}", file=sys.stderr)
        return 2
    manifest = json.loads((bundle / "manifest.json").read_text())
    results.data["bundle"] = {
        "id": parts.bundle,
        "parts": parts.parts,
        "bytes": parts.index["bytes"],
        "assemble_s": round(time.monotonic() - assembling, 2),
        "manifest": manifest,
    }
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    paths = []
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    if wheels:
        site = work / "site"
        results.data["install"] = install_wheels(wheels, site, log)
        paths.append(str(site))
    env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH")])])
    plan = plan_for(args, bundle, work, manifest["model"])
    plan.save(work / "plan.json")
    results.data["plan"] = dataclasses.asdict(plan)
    results.save()
    for name in PHASES:
        (work / f"{name}.json").unlink(missing_ok=True)
        left = deadline - time.monotonic() - RESERVE_S
        limit = min(PHASE_LIMITS[name][1 if args.dry_run else 0], left)
        entry: dict[str, Any]
        if limit < MIN_PHASE_S[1 if args.dry_run else 0]:
            entry = {"status": "skipped", "error": f"{left:.0f} s left of the budget"}
        else:
            command = [sys.executable, "-m", "ris.tools.gpu_check.phases", name, str(work)]
            status, rc, seconds = run_phase(name, command, limit, log, env)
            path = work / f"{name}.json"
            entry = json.loads(path.read_text()) if path.exists() else {}
            if status == "ok" and entry.get("status") == "unavailable":
                status = "unavailable"
            entry.update(status=status, rc=rc, seconds=round(seconds, 2), limit_s=round(limit))
        results.data["phases"][name] = entry
        results.save()
    results.data["checks"], results.data["summary"] = summarize(results.data)
    results.data["elapsed_s"] = round(time.monotonic() - started, 1)
    results.data["complete"] = all(
        p["status"] in ("ok", "unavailable") for p in results.data["phases"].values()
    )
    table = render(results.data)
    (out / "gpu_check.txt").write_text(table + "\n")
    results.save()
    print(table)
    return 0 if results.data["complete"] else 1


# -- summary ----------------------------------------------------------------------------------


def _check(name: str, value: Any, target: str, ok: bool | None) -> dict[str, Any]:
    return {"name": name, "value": value, "target": target, "ok": ok}


def _raw_at(phases: dict[str, Any], batch: int) -> dict[str, Any] | None:
    """Raw ORT at the service's batch size: the CUDA phase's, else the service phase's own."""
    for row in phases.get("cuda", {}).get("raw", []):
        if row["batch"] == batch:
            return dict(row)
    after = phases.get("service", {}).get("raw_after")
    return dict(after) if after else None


def _provider_checks(label: str, phase: dict[str, Any]) -> list[dict[str, Any]]:
    """Provider really first in the session, and fp16 accuracy against the fp32 references."""
    provider, accuracy = phase.get("provider", {}), phase.get("accuracy", {})
    if not provider and phase.get("status") in ("unavailable", "failed", "timeout"):
        # the session never came up (the phase's error says why): that is a failed check
        value = phase["status"]
        return [_check(f"{label} provider first in session", value, "first in session", False)]
    return [
        _check(
            f"{label} provider first in session",
            provider.get("active"),
            provider.get("expected", ""),
            provider.get("ok"),
        ),
        _check(
            f"fp16 ({label}) vs fp32 CPU, min cosine",
            accuracy.get("cosine_min"),
            f">= {MIN_COSINE_FP16}",
            accuracy.get("ok"),
        ),
    ]


def summarize(data: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The checks (correctness and the issue's targets) and the headline figures."""
    phases, plan, dry = data["phases"], data["plan"], data["dry_run"]
    trt, service, decode = (phases.get(n, {}) for n in ("tensorrt", "service", "decode"))
    checks = []
    if any(w.startswith("onnxruntime") for w in (data["install"] or {}).get("wheels", [])):
        carried = phases.get("env", {}).get("onnxruntime", {}).get("from_carried_wheels")
        checks.append(_check("onnxruntime imported from the carried wheels", carried, "True",
                             carried))  # fmt: skip
    checks += _provider_checks("CPU stand-in" if dry else "CUDA", phases.get("cuda", {}))
    checks += _provider_checks("TensorRT stand-in" if dry else "TensorRT", trt)
    speedup = trt.get("cache_reuse_speedup")
    checks.append(
        _check(
            "TensorRT second start on the engine cache, speedup",
            speedup,
            "> 1 (n/a in a dry run)" if dry else "> 1",
            None if speedup is None or dry else speedup > 1,
        )
    )
    raw = _raw_at(phases, plan["service_batch"])
    levels = service.get("levels", [])
    best = max(levels, key=lambda r: r["images_per_s"]) if levels else None
    ratio = best["images_per_s"] / raw["images_per_s"] if best and raw else None
    checks.append(
        _check(
            f"service best / raw ORT at batch {plan['service_batch']}",
            ratio,
            f">= {TARGET_SERVICE_RATIO:.0%}",
            None if ratio is None else ratio >= TARGET_SERVICE_RATIO,
        )
    )
    best_ips = best["images_per_s"] if best else None
    checks.append(
        _check(
            "service images/s end to end (best level)",
            best_ips,
            "n/a in a dry run" if dry else f">= {TARGET_SERVICE_IMAGES_S:.0f}",
            None if dry or best_ips is None else best_ips >= TARGET_SERVICE_IMAGES_S,
        )
    )
    pools = decode.get("pool", {})
    decode_best = max((p["images_per_s"] for p in pools.values()), default=None)
    one_ms = decode.get("one_thread_ms_per_image")
    infer_ms = 1000 / raw["images_per_s"] if raw else None
    summary = {
        "raw_at_service_batch": raw,
        "service_best": best,
        "service_ratio_to_raw": ratio,
        "decode_one_thread_ms": one_ms,
        "infer_ms_per_image_at_service_batch": infer_ms,
        # one image's CPU decode against its share of a batched model run
        "decode_share_serial": one_ms / (one_ms + infer_ms) if one_ms and infer_ms else None,
        "decode_pool_images_per_s": decode_best,
        # > 1: the CPU decodes faster than the model embeds; < 1: decode is the ceiling
        "decode_capacity_over_raw": (
            decode_best / raw["images_per_s"] if decode_best and raw else None
        ),
    }
    return checks, summary


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if 0.99 < value < 1.0:
            return f"{value:.6f}"
        return f"{value:.3g}" if value < 100 else f"{value:,.0f}"
    return str(value)


def _short(error: Any, limit: int = 110) -> str:
    text = str(error or "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _table(header: list[tuple[str, int]], rows: list[list[Any]]) -> list[str]:
    """Fixed-width columns: the first left-aligned, the others right-aligned."""
    lines = []
    for cells in [[h for h, _ in header], *rows]:
        parts = [
            f"{_fmt(c):<{w}}" if i == 0 else f"{_fmt(c):>{w}}"
            for i, (c, (_, w)) in enumerate(zip(cells, header, strict=True))
        ]
        lines.append(" ".join(parts).rstrip())
    return lines


def render(data: dict[str, Any]) -> str:
    """The table printed at the end of the run (also OUT/gpu_check.txt)."""
    phases, summary = data["phases"], data["summary"]
    env = phases.get("env", {})
    gpu = env.get("gpu")
    machine, ort = env.get("machine", {}), env.get("onnxruntime", {})
    dry = " (DRY RUN: CPU stands in for CUDA and TensorRT)" if data["dry_run"] else ""
    lines = [
        f"GPU check{dry}",
        f"machine: {gpu.get('name') if isinstance(gpu, dict) else 'no GPU'}; "
        f"{machine.get('cpu')}, {machine.get('cpus')} CPUs; onnxruntime {ort.get('version')}, "
        f"providers {ort.get('available_providers')}",
        "",
    ]
    lines += _table(
        [("phase", 10), ("status", 12), ("seconds", 8), ("limit", 6), ("  error", 0)],
        [
            [n, p["status"], p.get("seconds"), p.get("limit_s"), "  " + _short(p.get("error"))]
            for n, p in phases.items()
        ],
    )
    verdicts = {True: "PASS", False: "FAIL", None: "n/a"}
    lines.append("")
    lines += _table(
        [("check", 52), ("value", 24), ("target", 24), ("verdict", 8)],
        [[c["name"], c["value"], c["target"], verdicts[c["ok"]]] for c in data["checks"]],
    )
    raw_rows = [
        [f"{source} {r['batch']}", r["images_per_s"], r["median_ms"],
         r["device_resident"]["images_per_s"]]
        for source in ("cuda", "tensorrt")
        for r in phases.get(source, {}).get("raw", [])
    ]  # fmt: skip
    lines.append("")
    lines += _table(
        [("raw ORT fp16, batch", 20), ("img/s host in+out", 18), ("median ms", 10),
         ("img/s on device", 16)],
        raw_rows,
    )  # fmt: skip
    raw = summary.get("raw_at_service_batch")
    level_rows = [
        [lv["concurrency"], lv["batch"], lv["images_per_s"], lv["latency_ms"].get("p50"),
         lv["latency_ms"].get("p99"),
         f"{lv['images_per_s'] / raw['images_per_s']:.0%}" if raw else "-",
         ",".join(f"{k}:{v}" for k, v in lv["errors"].items()) or "-"]
        for lv in phases.get("service", {}).get("levels", [])
    ]  # fmt: skip
    lines.append("")
    lines += _table(
        [("service conc", 12), ("img/req", 8), ("img/s", 10), ("p50 ms", 8), ("p99 ms", 8),
         ("vs raw", 7), ("errors", 8)],
        level_rows,
    )  # fmt: skip
    decode = phases.get("decode", {})
    if decode.get("pool"):
        pools = ", ".join(f"{m} {p['images_per_s']:,.0f}/s" for m, p in decode["pool"].items())
        workers = decode["pool"].get("thread", {}).get("workers")
        lines.append(
            f"\ndecode+preprocess: {_fmt(decode.get('one_thread_ms_per_image'))} ms/image on one "
            f"thread; pools of {workers}: {pools}; share of serial time "
            f"{_fmt(summary.get('decode_share_serial'))}, capacity / raw "
            f"{_fmt(summary.get('decode_capacity_over_raw'))}"
        )
    trt = phases.get("tensorrt", {})
    if "build" in trt:
        reuse = trt.get("reuse", {}).get("total_s")
        lines.append(
            f"tensorrt: first start {_fmt(trt['build']['total_s'])} s "
            f"({trt['build']['cache_files']} cache files), second start {_fmt(reuse)} s"
        )
    lines.append(f"complete: {data['complete']}; {data.get('elapsed_s')} s of {data['budget_s']}")
    return "\n".join(lines)


# -- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="here: build the bundle and cut it into part folders")
    prep.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the fp32 model")
    prep.add_argument("--carry-dir", default=str(CARRY_DIR))
    prep.add_argument("--dry-run", action="store_true", help="tiny photo set, no wheels")
    prep.add_argument("--no-wheels", action="store_true", help="carry no wheels")
    prep.add_argument("--wheels-from", default=None, help="use the wheels already in this folder")
    prep.add_argument("--part-mib", type=int, default=None)
    prep.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    prep.add_argument("--accuracy-photos", type=int, default=32)
    prep.add_argument("--throughput-photos", type=int, default=48)
    wheels = sub.add_parser("prepare-wheels", help="here: only pip download the carried wheels")
    wheels.add_argument("dir")
    wheels.add_argument("--python-version", default="3.12")
    stg = sub.add_parser("stage", help="device: keep this call's carried parts for the last call")
    stg.add_argument("--carry-dir", default=str(CARRY_DIR))
    stg.add_argument("--stage-dir", default=str(DEFAULT_STAGE))
    go = sub.add_parser("run", help="the check; results under OUT")
    go.add_argument("out", nargs="?", default=None, help="results folder (default: $OUT)")
    go.add_argument("--out", dest="out_flag", default=None)
    go.add_argument("--dry-run", action="store_true", help="CPU in place of the GPU, tiny sizes")
    go.add_argument("--carry-dir", default=None, help=f"default {CARRY_DIR} (dry run: prepared)")
    go.add_argument("--stage-dir", default=str(DEFAULT_STAGE))
    go.add_argument("--work", default=str(DEFAULT_WORK), help="scratch: bundle, wheels, caches")
    go.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="dry run: fp32 model")
    go.add_argument("--budget-s", type=float, default=None)
    args = parser.parse_args(argv)
    if args.command == "run":
        args.out = args.out_flag or args.out
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = {"prepare": prepare, "prepare-wheels": prepare_wheels, "stage": stage_command}
    return command.get(args.command, run)(args)


if __name__ == "__main__":
    sys.exit(main())
