"""ONNX Runtime session for one model: provider choice, session options, batched inference.

The provider actually in use is verified after the session is built and reported; it is never
silently different from the one asked for (a GPU provider falls back to CPU only when the config
allows it, and then with a warning).
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ris.embedder.config import EmbedderConfig
from ris.embedder.model_metadata import ModelMetadata, read_model_metadata
from ris.embedder.pooling import SEMANTIC_POOLING, semantic_concat, semantic_label

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
INPUT_NAME = "images"
POOLING_OUTPUTS = {"gem": "gem", "avg": "embedding", SEMANTIC_POOLING: "gem"}
POOLING_LABELS = {"gem": "gem3", "avg": "avg"}
LOGITS_OUTPUT = "logits"


def pooling_label(config: EmbedderConfig) -> str:
    """The pooling part of the embedding version: it names every setting that changes vectors."""
    if config.pooling == SEMANTIC_POOLING:
        return semantic_label(config.semantic_weight, config.semantic_temperature)
    return POOLING_LABELS[config.pooling]


class ProviderUnavailableError(RuntimeError):
    """The configured execution provider cannot run here and fallback is not allowed."""


class ModelLoadError(RuntimeError):
    """The model file is missing or does not have the contracted inputs/outputs."""


def gpu_visible() -> bool:
    """An NVIDIA device node exists: without one, asking ORT for CUDA only produces warnings."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/dxg")


def gpu_providers_usable() -> bool:
    return gpu_visible() and CUDA in ort.get_available_providers()


def fp16_sibling(path: Path) -> Path:
    """models/resnet50.onnx -> models/resnet50.fp16.onnx (a path already fp16 maps to itself)."""
    if path.name.endswith(".fp16.onnx"):
        return path
    return path.with_name(path.name[: -len(".onnx")] + ".fp16.onnx")


@dataclass(frozen=True)
class ProviderPlan:
    """What to ask ONNX Runtime for, and which model file to load."""

    kind: str  # "cpu" | "cuda" | "tensorrt"
    providers: list[Any]  # ORT provider list: names or (name, options)
    model_file: Path
    precision: str
    fell_back: bool = False
    notes: list[str] = field(default_factory=list)


def _pick_kind(config: EmbedderConfig) -> tuple[str, bool, list[str]]:
    """The provider kind to try, whether that is a fallback, and why."""
    requested = config.provider
    if requested == "cpu":
        return "cpu", False, []
    usable = gpu_providers_usable()
    if requested == "auto":
        return ("cuda" if usable else "cpu"), False, []
    if requested == "tensorrt" and usable and TENSORRT not in ort.get_available_providers():
        usable = False
    if usable:
        return requested, False, []
    reason = (
        f"provider {requested!r} requested but no usable NVIDIA GPU: "
        f"gpu device visible={gpu_visible()}, onnxruntime providers={ort.get_available_providers()}"
    )
    if not config.allow_fallback:
        raise ProviderUnavailableError(
            reason + "; use --provider cpu, or --allow-fallback (RIS_EMBEDDER_ALLOW_FALLBACK=1) "
            "to run on CPU instead"
        )
    return "cpu", True, [reason + "; falling back to CPU as allowed by allow_fallback"]


def _pick_model_file(path: Path, kind: str, precision: str) -> tuple[Path, str]:
    """The file to load and a precision override ("" = what the file's metadata says).

    CUDA runs the fp16 sibling (when present, or required by precision=fp16); TensorRT builds
    its fp16 engine from the fp32 file itself.
    """
    sibling = fp16_sibling(path)
    if kind == "tensorrt":
        return path, "fp32" if precision == "fp32" else "fp16"
    if precision == "fp16" or (precision == "auto" and kind == "cuda" and sibling.exists()):
        if not sibling.exists():
            raise ModelLoadError(f"precision fp16 asked for but {sibling} does not exist")
        return sibling, ""
    return path, ""


def plan_providers(path: Path, config: EmbedderConfig) -> ProviderPlan:
    kind, fell_back, notes = _pick_kind(config)
    model_file, precision = _pick_model_file(path, kind, config.precision)
    if kind == "tensorrt":
        batch = config.max_batch_size
        trt_options = {
            "device_id": config.device_id,
            "trt_fp16_enable": precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(config.trt_cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(config.trt_cache_dir),
            "trt_profile_min_shapes": f"{INPUT_NAME}:1x224x224x3",
            "trt_profile_opt_shapes": f"{INPUT_NAME}:{batch}x224x224x3",
            "trt_profile_max_shapes": f"{INPUT_NAME}:{batch}x224x224x3",
        }
        providers: list[Any] = [
            (TENSORRT, trt_options),
            (CUDA, {"device_id": config.device_id}),
            CPU,
        ]
    elif kind == "cuda":
        providers = [(CUDA, {"device_id": config.device_id}), CPU]
    else:
        providers = [CPU]
    return ProviderPlan(kind, providers, model_file, precision, fell_back, notes)


def session_options(config: EmbedderConfig) -> ort.SessionOptions:
    """The options the server uses; the benchmark builds its raw session from the same ones."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT's warnings are re-stated in our own log
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if config.ort_spinning else "0"
    )
    return options


def _expected_provider(kind: str) -> str:
    return {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT}[kind]


class ModelRuntime:
    """One loaded model: `infer(uint8 NHWC batch) -> L2-normalised float32 [N, dim]`."""

    def __init__(self, path: Path, config: EmbedderConfig) -> None:
        path = Path(path)
        if not path.exists():
            raise ModelLoadError(f"model file {path} does not exist")
        plan = plan_providers(path, config)
        for note in plan.notes:
            log.warning(note)
        if plan.kind != "cpu":
            ort.preload_dlls()
        else:
            ort.set_default_logger_severity(3)
        if plan.kind == "tensorrt":
            config.trt_cache_dir.mkdir(parents=True, exist_ok=True)
        self.metadata: ModelMetadata = read_model_metadata(plan.model_file)
        self.output_name = POOLING_OUTPUTS[config.pooling]
        self.pooling = pooling_label(config)
        # gem_softmax: the softmax part's weight and temperature (0 = GeM or GAP alone).
        self.semantic_weight = config.semantic_weight if config.pooling == SEMANTIC_POOLING else 0.0
        self.semantic_temperature = config.semantic_temperature
        self.session = ort.InferenceSession(
            str(plan.model_file), sess_options=session_options(config), providers=plan.providers
        )
        self.providers: list[str] = list(self.session.get_providers())
        expected = _expected_provider(plan.kind)
        if not self.providers or self.providers[0] != expected:
            message = (
                f"onnxruntime did not enable {expected} for {plan.model_file} "
                f"(session providers: {self.providers})"
            )
            if not config.allow_fallback or self.providers[0] != CPU:
                raise ProviderUnavailableError(message)
            log.warning("%s; running on CPU as allowed by allow_fallback", message)
            plan = ProviderPlan("cpu", [CPU], plan.model_file, plan.precision, True, [message])
        self.plan = plan
        self.execution_provider = self.providers[0]
        self.precision = plan.precision or self.metadata.precision
        self._check_io()
        self.dim = int(self.metadata.dim) + (self._num_classes() if self.semantic_weight else 0)
        self._use_io_binding = self.execution_provider in (CUDA, TENSORRT)
        log.info(
            "model %s version %s loaded from %s: provider %s (chain %s), precision %s, pooling %s",
            self.metadata.name,
            self.metadata.version,
            plan.model_file,
            self.execution_provider,
            self.providers,
            self.precision,
            self.pooling,
        )

    def _check_io(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if INPUT_NAME not in inputs or inputs[INPUT_NAME].type != "tensor(uint8)":
            raise ModelLoadError(f"model needs a uint8 input named {INPUT_NAME!r}, has {inputs}")
        if self.output_name not in outputs and "embedding" in outputs:
            # Models without pooling variants (e.g. a CLIP image tower) serve their embedding.
            log.info(
                "%s has no %r output: serving its 'embedding'", self.metadata.name, self.output_name
            )
            self.output_name, self.pooling = "embedding", "model"
        if self.output_name not in outputs:
            raise ModelLoadError(f"model has no output {self.output_name!r} (has {outputs})")
        if self.semantic_weight and (LOGITS_OUTPUT not in outputs or self.pooling == "model"):
            raise ModelLoadError(
                f"pooling {SEMANTIC_POOLING} needs the outputs 'gem' and {LOGITS_OUTPUT!r}; "
                f"{self.metadata.name} has {sorted(outputs)}"
            )

    def _num_classes(self) -> int:
        (logits,) = [o for o in self.session.get_outputs() if o.name == LOGITS_OUTPUT]
        classes = logits.shape[-1]
        if not isinstance(classes, int):
            raise ModelLoadError(f"the {LOGITS_OUTPUT!r} output has no fixed class count")
        return classes

    def _run(self, names: list[str], batch: np.ndarray) -> list[np.ndarray]:
        if self._use_io_binding:
            binding = self.session.io_binding()
            binding.bind_cpu_input(INPUT_NAME, np.ascontiguousarray(batch))
            for name in names:
                binding.bind_output(name, "cpu")
            self.session.run_with_iobinding(binding)
            outs = binding.copy_outputs_to_cpu()
        else:
            outs = self.session.run(names, {INPUT_NAME: batch})
        return [np.asarray(o, dtype=np.float32) for o in outs]

    def raw(self, batch: np.ndarray) -> np.ndarray:
        """The chosen embedding, unnormalised (gem_softmax: already unit), for a uint8
        [N, H, W, 3] batch."""
        if self.semantic_weight:
            gem, logits = self._run([self.output_name, LOGITS_OUTPUT], batch)
            return semantic_concat(gem, logits, self.semantic_weight, self.semantic_temperature)
        return self._run([self.output_name], batch)[0]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return l2_normalise(self.raw(batch))

    def warm_up(self, batch_size: int = 1) -> None:
        size = self.metadata.preprocessing.crop_size
        self.infer(np.zeros((batch_size, size, size, 3), dtype=np.uint8))


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
