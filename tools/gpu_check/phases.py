"""The GPU check's measuring phases, one process each: `python -m ris.tools.gpu_check.phases
NAME WORK`.

Each phase reads WORK/plan.json, builds its sessions with the embedder's own code
(ModelRuntime, DecodePool, the real server through ris.tools.harness) and writes
WORK/NAME.json after every step, so what it measured survives when the orchestrator has to
kill it at its time limit. Nothing here imports onnxruntime before a phase starts: the
orchestrator chooses the Python path (the carried onnxruntime-gpu) first.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ris.tools.bench import write_json
from ris.tools.machine import machine_info

if TYPE_CHECKING:
    from ris.embedder.runtime import ModelRuntime

MIN_COSINE_FP16 = 0.999  # the floor, as scripts/export_onnx.py's MIN_COSINE_FP16
PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
PACKAGES = (
    "onnxruntime-gpu", "onnxruntime", "numpy", "pillow", "onnx", "grpcio", "protobuf",
    "nvidia-cuda-runtime", "nvidia-cudnn-cu13", "nvidia-cublas", "nvidia-cufft",
    "nvidia-curand", "nvidia-cuda-nvrtc", "tensorrt-cu13-libs", "tensorrt", "torch",
)  # fmt: skip
TRT_LIBRARIES = ("libnvinfer.so.11", "libnvinfer.so.10", "libnvinfer.so")


@dataclass
class CheckPlan:
    """What one run measures and how long each measurement may take (GPU or dry-run sizes)."""

    dry_run: bool
    bundle: str  # the extracted bundle: models/, photos/, pixels.npy, reference.npy
    work: str
    provider: str = "cuda"  # the CUDA path; "cpu" stands in for it in a dry run
    trt_provider: str = "tensorrt"
    raw_batches: list[int] = field(default_factory=lambda: [1, 32, 128, 256])
    raw_seconds: float = 3.0
    raw_iters: int = 300
    raw_warmup: int = 3
    new_shapes: list[int] = field(default_factory=lambda: [7, 13])  # first-run cost of a shape
    service_batch: int = 128
    queue_delay_ms: float = 5.0
    service_levels: list[list[int]] = field(default_factory=lambda: [[64, 1], [256, 1], [64, 8]])
    level_seconds: float = 15.0
    level_requests: int = 200_000
    warmup_s: float = 3.0
    decode_workers: int = 16
    decode_mode: str = "thread"
    decode_images: int = 4000
    decode_seconds: float = 10.0  # per pool mode: stop submitting after this long
    trt_max_batch: int = 128
    raw_after: bool = True  # raw ORT again after the service phase (the "A B A" bracket)
    model_name: str = "resnet50.fp16.onnx"

    @property
    def model(self) -> Path:
        return Path(self.bundle) / "models" / self.model_name

    @property
    def photos(self) -> Path:
        return Path(self.bundle) / "photos"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> CheckPlan:
        return cls(**json.loads(path.read_text()))


class Record(dict):
    """A phase's results, rewritten atomically to its file at every step."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        write_json(self.path, dict(self), quiet=True)


# -- helpers ----------------------------------------------------------------------------------


def _runtime(plan: CheckPlan, provider: str, max_batch: int, **overrides: Any) -> ModelRuntime:
    from ris.embedder.config import EmbedderConfig
    from ris.embedder.runtime import ModelRuntime

    config = EmbedderConfig(
        model_paths=[plan.model], provider=provider, max_batch_size=max_batch, **overrides
    ).validate()
    return ModelRuntime(plan.model, config)


def _provider_report(runtime: ModelRuntime, provider: str, create_s: float) -> dict[str, Any]:
    expected = PROVIDER_NAMES[provider]
    return {
        "expected": expected,
        "active": runtime.execution_provider,
        "session_providers": runtime.providers,
        "ok": runtime.providers[:1] == [expected],
        "precision": runtime.precision,
        "model_file": str(runtime.plan.model_file),
        "create_s": round(create_s, 3),
    }


def _batches(pixels: np.ndarray, size: int, count: int = 2) -> list[np.ndarray]:
    """``count`` distinct uint8 batches of ``size`` images tiled from the photos."""
    n = len(pixels)
    return [np.ascontiguousarray(pixels[(np.arange(size) + k * 7) % n]) for k in range(count)]


def time_calls(
    call: Callable[[int], object], seconds: float, max_iters: int, warmup: int
) -> dict[str, float]:
    """Median and p90 of ``call(i)`` after ``warmup`` calls, bounded by time and count (at
    least one timed call)."""
    for i in range(warmup):
        call(i)
    timings: list[float] = []
    stop_at = time.perf_counter() + seconds
    while len(timings) < max(1, max_iters) and (time.perf_counter() < stop_at or not timings):
        started = time.perf_counter()
        call(len(timings))
        timings.append(time.perf_counter() - started)
    return {
        "iterations": len(timings),
        "median_ms": float(np.median(timings) * 1000),
        "p90_ms": float(np.percentile(timings, 90) * 1000),
    }


def _throughput(batch: int, timing: dict[str, float]) -> dict[str, float]:
    return {"batch": batch, **timing, "images_per_s": batch / (timing["median_ms"] / 1000)}


def _device_resident(runtime: ModelRuntime, batches: list[np.ndarray]) -> Callable[[int], object]:
    """Runs with input and output left on the device: the model alone, no host copies."""
    import onnxruntime as ort

    from ris.embedder.runtime import INPUT_NAME

    device = "cpu" if runtime.execution_provider == PROVIDER_NAMES["cpu"] else "cuda"
    bindings = []
    for batch in batches:
        value = ort.OrtValue.ortvalue_from_numpy(batch, device, 0)
        binding = runtime.session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, value)
        binding.bind_output(runtime.output_name, device)
        bindings.append((binding, value))

    def run(i: int) -> None:
        binding = bindings[i % len(bindings)][0]
        runtime.session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return run


def raw_throughput(
    runtime: ModelRuntime, pixels: np.ndarray, plan: CheckPlan, batches: list[int]
) -> list[dict[str, Any]]:
    """Per batch size: ModelRuntime.infer (host in and out, what the server calls) and the
    device-resident run beside it."""
    rows = []
    for size in batches:
        inputs = _batches(pixels, size)
        limits = (plan.raw_seconds, plan.raw_iters, plan.raw_warmup)

        def host_in_out(i: int, x: list[np.ndarray] = inputs) -> object:
            return runtime.infer(x[i % 2])

        host = time_calls(host_in_out, *limits)
        resident = time_calls(_device_resident(runtime, inputs), *limits)
        rows.append({**_throughput(size, host), "device_resident": _throughput(size, resident)})
    return rows


def accuracy(runtime: ModelRuntime, plan: CheckPlan) -> dict[str, Any]:
    """Cosine of this runtime's embeddings to the fp32 CPU references made by --prepare."""
    pixels = np.load(Path(plan.bundle) / "pixels.npy")
    reference = np.load(Path(plan.bundle) / "reference.npy")
    out = np.concatenate([runtime.infer(pixels[i : i + 16]) for i in range(0, len(pixels), 16)])
    cosine = (out.astype(np.float64) * reference).sum(axis=1)
    finite = bool(np.isfinite(out).all())
    return {
        "images": len(pixels),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "target_min": MIN_COSINE_FP16,
        "finite": finite,
        "ok": finite and float(cosine.min()) >= MIN_COSINE_FP16,
    }


def _nvidia_smi() -> dict[str, str] | str:
    fields = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu"
    try:
        proc = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi: {type(exc).__name__}: {exc}"
    if proc.returncode != 0:
        return f"nvidia-smi exit {proc.returncode}: {proc.stderr.strip()[:300]}"
    values = [v.strip() for v in proc.stdout.splitlines()[0].split(",")]
    return dict(zip(fields.split(","), values, strict=False))


def _tensorrt_library() -> str | None:
    """The TensorRT runtime library this process can load, if any (TRT's EP needs it)."""
    for name in TRT_LIBRARIES:
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return None


# -- phases -----------------------------------------------------------------------------------


def phase_env(plan: CheckPlan, rec: Record) -> None:
    rec.put("machine", machine_info())
    rec.put("gpu", _nvidia_smi())
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    rec.put("packages", versions)
    import onnxruntime as ort

    info: dict[str, Any] = {
        "version": ort.__version__,
        "file": ort.__file__,
        "device": ort.get_device(),
        "available_providers": ort.get_available_providers(),
        # the carried onnxruntime-gpu, not an onnxruntime the image already had
        "from_carried_wheels": Path(ort.__file__).is_relative_to(Path(plan.work) / "site"),
    }
    if plan.provider != "cpu":
        try:
            ort.preload_dlls()
            info["preload_dlls"] = "ok"
        except Exception as exc:  # recorded: the CUDA phase then says what failed to load
            info["preload_dlls"] = f"{type(exc).__name__}: {exc}"
    rec.put("onnxruntime", info)
    rec.put("tensorrt_library", _tensorrt_library())


def phase_cuda(plan: CheckPlan, rec: Record) -> None:
    """The CUDA path as the server runs it: provider really active, fp16 accuracy, throughput."""
    started = time.perf_counter()
    runtime = _runtime(plan, plan.provider, max(plan.raw_batches))
    rec.put("provider", _provider_report(runtime, plan.provider, time.perf_counter() - started))
    rec.put("accuracy", accuracy(runtime, plan))
    pixels = np.load(Path(plan.bundle) / "pixels.npy")
    shapes = []
    for size in plan.new_shapes:  # the batcher's odd sizes: how much a never-seen shape costs
        batch = _batches(pixels, size, 1)[0]
        first = time.perf_counter()
        runtime.infer(batch)
        second = time.perf_counter()
        runtime.infer(batch)
        done = time.perf_counter()
        shapes.append(
            {
                "batch": size,
                "first_ms": (second - first) * 1000,
                "second_ms": (done - second) * 1000,
            }
        )
    rec.put("new_shape", shapes)
    rows: list[dict[str, Any]] = []
    for size in plan.raw_batches:
        rows.extend(raw_throughput(runtime, pixels, plan, [size]))
        rec.put("raw", rows)


def phase_decode(plan: CheckPlan, rec: Record) -> None:
    """CPU decode + preprocess: one thread, then the server's pool on every worker."""
    from ris.embedder.config import EmbedderConfig
    from ris.embedder.decoding import DecodePool, decode_task
    from ris.embedder.model_metadata import read_model_metadata
    from ris.embedder.preprocessing import DEFAULT_MAX_PIXELS, with_resize_mode
    from ris.tools.loadtest import load_images

    spec = with_resize_mode(
        read_model_metadata(plan.model).preprocessing, EmbedderConfig().resize_mode
    )
    images = load_images([plan.photos], 10_000)
    rec.put("images", len(images))
    rec.put("mean_kib", float(np.mean([len(i) for i in images]) / 1024))
    one = [decode_task(data, spec, DEFAULT_MAX_PIXELS, None)[1] for data in images]
    rec.put("one_thread_ms_per_image", float(np.mean(one) * 1000))
    pools: dict[str, Any] = {}
    for mode in ("thread", "process"):
        pool = DecodePool(plan.decode_workers, mode)
        done = 0
        try:
            started = time.perf_counter()
            stop_at = started + plan.decode_seconds
            round_size = 8 * plan.decode_workers  # keeps every worker busy between rounds
            while done < plan.decode_images and (done == 0 or time.perf_counter() < stop_at):
                count = min(round_size, plan.decode_images - done)
                futures = [
                    pool.submit(images[(done + i) % len(images)], spec, DEFAULT_MAX_PIXELS, None)
                    for i in range(count)
                ]
                for f in futures:
                    f.result()
                done += count
            seconds = time.perf_counter() - started
        finally:
            pool.close()
        pools[mode] = {
            "workers": plan.decode_workers,
            "images": done,
            "images_per_s": done / seconds,
        }
        rec.put("pool", pools)


def phase_service(plan: CheckPlan, rec: Record) -> None:
    """The real embedder server on loopback under load, then raw ORT again at its batch size."""
    from ris.embedder.config import EmbedderConfig
    from ris.tools.harness import start_configured_embedder
    from ris.tools.loadtest import LoadSpec, load_images, run_level

    top = max(c for c, _ in plan.service_levels)
    most = max(c * b for c, b in plan.service_levels)
    os.environ["RIS_EMBEDDER_TEXT_MODEL"] = "off"
    os.environ["RIS_EMBEDDER_GRPC_WORKERS"] = str(top + 32)
    os.environ["RIS_EMBEDDER_TRT_CACHE_DIR"] = str(Path(plan.work) / "trt_cache_service")
    config = EmbedderConfig(
        model_paths=[plan.model],
        provider=plan.provider,
        max_batch_size=plan.service_batch,
        max_queue_delay_ms=plan.queue_delay_ms,
        decode_workers=plan.decode_workers,
        decode_mode=plan.decode_mode,
        max_queue_images=max(512, 2 * most),
    ).validate()
    rec.put(
        "config",
        {k: str(v) for k, v in asdict(config).items() if k not in ("tokens", "tokens_file")},
    )
    images = load_images([plan.photos], 256)
    started = time.perf_counter()
    embedder = start_configured_embedder(config)
    rec.put("start_s", time.perf_counter() - started)
    levels: list[dict[str, Any]] = []
    try:
        for concurrency, batch in plan.service_levels:
            spec = LoadSpec(
                target=embedder.address,
                call="embed",
                concurrency=concurrency,
                max_requests=plan.level_requests,
                max_seconds=plan.level_seconds,
                warmup_seconds=plan.warmup_s,
                batch=batch,
                timeout_s=60.0,
            )
            levels.append(asdict(run_level(spec, images)))
            rec.put("levels", levels)
    finally:
        embedder.stop(timeout=20)
    if not plan.raw_after:
        return
    runtime = _runtime(plan, plan.provider, plan.service_batch)
    pixels = np.load(Path(plan.bundle) / "pixels.npy")
    rec.put("raw_after", raw_throughput(runtime, pixels, plan, [plan.service_batch])[0])


def phase_tensorrt(plan: CheckPlan, rec: Record) -> None:
    """TensorRT: provider really active, engine build time, then a second start on the cache."""
    import onnxruntime as ort

    from ris.embedder.runtime import ProviderUnavailableError

    stand_in = plan.trt_provider != "tensorrt"
    rec.put("stand_in", plan.trt_provider if stand_in else None)
    if not stand_in and PROVIDER_NAMES["tensorrt"] not in ort.get_available_providers():
        rec.put("status", "unavailable")
        rec.put("error", f"onnxruntime providers: {ort.get_available_providers()}")
        return
    cache = Path(plan.work) / "trt_cache"
    shutil.rmtree(cache, ignore_errors=True)
    pixels = np.load(Path(plan.bundle) / "pixels.npy")
    one, full = _batches(pixels, 1, 1)[0], _batches(pixels, plan.trt_max_batch, 1)[0]
    for attempt in ("build", "reuse"):
        started = time.perf_counter()
        try:
            runtime = _runtime(plan, plan.trt_provider, plan.trt_max_batch, trt_cache_dir=cache)
        except ProviderUnavailableError as exc:
            rec.put("status", "unavailable")
            rec.put("error", str(exc))
            rec.put("tensorrt_library", _tensorrt_library())
            return
        created = time.perf_counter()
        runtime.infer(one)
        runtime.infer(full)
        done = time.perf_counter()
        files = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
        rec.put(
            attempt,
            {
                "create_s": created - started,
                "first_runs_s": done - created,
                "total_s": done - started,
                "cache_files": len(files),
                "cache_bytes": sum(p.stat().st_size for p in files),
            },
        )
        if attempt == "build":
            rec.put("provider", _provider_report(runtime, plan.trt_provider, created - started))
            rec.put("accuracy", accuracy(runtime, plan))
            sizes = [b for b in plan.raw_batches if b <= plan.trt_max_batch]
            rec.put("raw", raw_throughput(runtime, pixels, plan, sizes))
        del runtime
    rec.put("cache_reuse_speedup", rec["build"]["total_s"] / max(rec["reuse"]["total_s"], 1e-9))


PHASES: dict[str, Callable[[CheckPlan, Record], None]] = {
    "env": phase_env,
    "cuda": phase_cuda,
    "decode": phase_decode,
    "service": phase_service,
    "tensorrt": phase_tensorrt,
}


def main(argv: list[str]) -> int:
    name, work = argv[0], Path(argv[1])
    plan = CheckPlan.load(work / "plan.json")
    rec = Record(work / f"{name}.json")
    try:
        PHASES[name](plan, rec)
    except Exception as exc:
        rec.put("error", f"{type(exc).__name__}: {exc}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
