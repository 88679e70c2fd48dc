"""Embedder configuration: one dataclass; defaults, then RIS_EMBEDDER_* env, then flags."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ris.common.admission import AdmissionLimits
from ris.common.secrets import SecretError, read_secret_list
from ris.common.settings import ConfigError, parse_bool, require
from ris.common.tls import ServerTls, TlsConfigError

ENV_PREFIX = "RIS_EMBEDDER_"
PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
PRECISIONS = ("auto", "fp32", "fp16")
POOLINGS = ("gem", "avg", "gem_softmax")
DECODE_MODES = ("thread", "process")
# "model" = the geometry in the ONNX metadata (shorter_crop for ImageNet weights).
RESIZE_MODES = ("model", "squash", "shorter_crop")
DEFAULT_MODEL = Path("models/resnet50.onnx")  # a checkout's; else the user cache's (below)
DEFAULT_TEXT_MODEL = Path("models/minilm")  # made by scripts/export_text_model.py


def user_models_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where `ris model fetch` exports the model for an installed ris (no checkout's models/):
    $XDG_CACHE_HOME/ris/models, else ~/.cache/ris/models."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ris" / "models"


def default_model_path() -> Path:
    """models/resnet50.onnx when it exists (a checkout), else the user cache's when that exists,
    else models/resnet50.onnx (whose absence the model loader then reports)."""
    cached = user_models_dir() / DEFAULT_MODEL.name
    return cached if not DEFAULT_MODEL.exists() and cached.exists() else DEFAULT_MODEL


@dataclass
class EmbedderConfig:
    """Everything the embedder needs to start. Defaults suit a small CPU machine."""

    host: str = "127.0.0.1"  # address to bind; 0.0.0.0 to serve beyond this machine
    port: int = 50051  # 0 = pick a free port
    # image ONNX models; the first is the default
    model_paths: list[Path] = field(default_factory=lambda: [DEFAULT_MODEL])
    # Text models (EmbedText): "auto" = models/minilm when it has been exported, else none;
    # "off" = none; else comma-separated text model files or directories (each must load).
    text_models: str = "auto"
    provider: str = "auto"  # auto | cpu | cuda | tensorrt
    allow_fallback: bool = False  # a requested GPU provider may fall back to CPU (logged)
    precision: str = "auto"  # auto = fp16 on GPU when a .fp16.onnx sibling exists, else fp32
    # The embedding: "gem_softmax" (the default) = GeM and the classifier's softmax of the same
    # pass, [l2n(gem), w * softmax(logits / T)] (3048-d), or "gem" / "avg" alone (the
    # `embedding` output, 2048-d). Chosen by cross-validation over folds with the search
    # service's near-duplicate guard (docs/results/near_duplicates.md): held-out folds Caltech
    # mAP@10 0.861, ImageNet R@1 0.709, copy detection R@1 0.983, against 0.875 / 0.364 /
    # 0.992 for gem; text search R@1 0.778 -> 0.894; +49 % memory a vector.
    pooling: str = "gem_softmax"
    semantic_weight: float = 0.7  # gem_softmax: w, the softmax part's weight
    semantic_temperature: float = 1.0  # gem_softmax: T, the softmax temperature
    # Image geometry for embeddings. squash (whole image to crop x crop) retrieves better than
    # the model's shorter_crop: Caltech mAP@10 0.838 vs 0.812 (docs/results/retrieval_study.json).
    resize_mode: str = "squash"
    device_id: int = 0  # GPU index for CUDA/TensorRT
    # TensorRT engine cache (first start builds engines)
    trt_cache_dir: Path = Path("models/trt_cache")
    max_batch_size: int = 16  # largest batch the dynamic batcher forms
    # longest a queued image waits for a batch to fill, while other images are still being
    # decoded (none on the way: the batch goes at once)
    max_queue_delay_ms: float = 5.0
    max_queue_images: int = 256  # admitted, not yet answered; beyond: RESOURCE_EXHAUSTED
    max_images_per_request: int = 64  # more in one call: INVALID_ARGUMENT
    # decoded width x height; beyond: that item fails (decompression bombs)
    max_image_pixels: int = 40_000_000
    max_text_chars: int = 2000  # per text; beyond: that item fails with INVALID_ARGUMENT
    max_message_bytes: int = 64 * 1024 * 1024  # gRPC receive limit; beyond: RESOURCE_EXHAUSTED
    decode_workers: int = 2  # parallel decode + preprocess workers
    decode_mode: str = "thread"  # thread | process
    intra_op_threads: int = 0  # 0 = onnxruntime's default (one per core)
    ort_spinning: bool = False  # intra-op spin-waiting steals CPU from decoding
    grpc_workers: int = 128  # unary calls at once; must exceed the concurrency to batch across
    max_concurrent_streams: int = 64  # EmbedStream calls at once (one per ingest call upstream)
    max_queued_calls: int = 128  # calls waiting for a slot; beyond: RESOURCE_EXHAUSTED + retry hint
    max_queue_wait_s: float = 30.0  # longest wait in that queue (the call's deadline also ends it)
    # an EmbedStream silent this long ends (DEADLINE_EXCEEDED); above the search service's 30 s,
    # so an idle ingest client is ended there first, with its summary
    stream_idle_timeout_s: float = 60.0
    stream_window: int = 8  # request messages of one EmbedStream in flight at once
    metrics_port: int | None = None  # None = off, 0 = pick a free port
    metrics_host: str = "127.0.0.1"  # Prometheus endpoint address
    shutdown_grace_s: float = 10.0  # SIGTERM: in-flight calls get this long to finish
    log_level: str = "INFO"  # DEBUG, INFO, WARNING, ERROR
    # Security (docs/security.md): TLS when tls_cert+tls_key are set; tls_client_ca requires
    # client certificates (mutual TLS). tokens/tokens_file: bearer tokens of allowed callers
    # (comma-separated; none = open). client_names: allowed client-certificate CN/SANs (mTLS).
    tls_cert: str = ""  # server certificate (PEM); with tls_key enables TLS
    tls_key: str = ""  # server private key (PEM)
    tls_client_ca: str = ""  # CA of client certificates; set = mutual TLS required
    # bearer tokens of allowed callers, comma-separated; none = open
    tokens: str = field(default="", repr=False)
    tokens_file: str = ""  # file with one token per line (wins over tokens)
    client_names: str = ""  # allowed client-certificate CN/SANs (mutual TLS)

    def validate(self) -> EmbedderConfig:
        """Reject impossible settings early, with the setting's name in the message.

        The default model path resolves here (default_model_path): a wheel install, which has
        no models/, then finds the model `ris model fetch` exported.
        """
        if self.model_paths == [DEFAULT_MODEL]:
            self.model_paths = [default_model_path()]
        checks = [
            (self.provider in PROVIDERS, f"provider must be one of {PROVIDERS}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (self.pooling in POOLINGS, f"pooling must be one of {POOLINGS}"),
            (self.semantic_weight > 0, "semantic_weight must be > 0"),
            (self.semantic_temperature > 0, "semantic_temperature must be > 0"),
            (self.resize_mode in RESIZE_MODES, f"resize_mode must be one of {RESIZE_MODES}"),
            (self.decode_mode in DECODE_MODES, f"decode_mode must be one of {DECODE_MODES}"),
            (0 <= self.port <= 65535, "port must be 0..65535"),
            (bool(self.model_paths), "at least one model path is needed"),
            (self.max_batch_size >= 1, "max_batch_size must be >= 1"),
            (self.max_queue_delay_ms >= 0, "max_queue_delay_ms must be >= 0"),
            (self.max_images_per_request >= 1, "max_images_per_request must be >= 1"),
            (
                self.max_queue_images >= self.max_images_per_request,
                "max_queue_images must be >= max_images_per_request",
            ),
            (self.max_image_pixels >= 1, "max_image_pixels must be >= 1"),
            (self.max_text_chars >= 1, "max_text_chars must be >= 1"),
            (self.max_message_bytes >= 1024, "max_message_bytes must be >= 1024"),
            (self.decode_workers >= 1, "decode_workers must be >= 1"),
            (self.intra_op_threads >= 0, "intra_op_threads must be >= 0"),
            (self.grpc_workers >= 2, "grpc_workers must be >= 2"),
            (self.max_concurrent_streams >= 1, "max_concurrent_streams must be >= 1"),
            (self.max_queued_calls >= 0, "max_queued_calls must be >= 0"),
            (self.max_queue_wait_s >= 0, "max_queue_wait_s must be >= 0"),
            (self.stream_idle_timeout_s > 0, "stream_idle_timeout_s must be > 0"),
            (self.stream_window >= 1, "stream_window must be >= 1"),
            (self.shutdown_grace_s >= 0, "shutdown_grace_s must be >= 0"),
        ]
        require(checks)
        try:
            self.server_tls().validate()
        except TlsConfigError as exc:
            raise ConfigError(str(exc)) from None
        if self.client_names and not self.tls_client_ca:
            raise ConfigError("client_names needs mutual TLS (tls_client_ca)")
        self.allowed_tokens()
        return self

    def server_tls(self) -> ServerTls:
        return ServerTls(self.tls_cert, self.tls_key, self.tls_client_ca)

    def admission(self) -> AdmissionLimits:
        return AdmissionLimits.of(self)

    def allowed_tokens(self) -> list[str]:
        """Bearer tokens of the callers allowed in (tokens_file wins over tokens)."""
        try:
            return read_secret_list(self.tokens, self.tokens_file or None, "embedder tokens")
        except SecretError as exc:
            raise ConfigError(str(exc)) from None

    def allowed_client_names(self) -> list[str]:
        return [n.strip() for n in self.client_names.split(",") if n.strip()]

    def text_model_paths(self) -> list[Path]:
        """The text models to load, "auto" and "off" resolved."""
        value = self.text_models.strip()
        if value.lower() == "auto":
            return [DEFAULT_TEXT_MODEL] if (DEFAULT_TEXT_MODEL / "model.onnx").exists() else []
        if value.lower() in ("", "off", "none"):
            return []
        return _parse_paths(value)


def _parse_optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none", "off") else int(text)


def _parse_paths(text: str) -> list[Path]:
    return [Path(p.strip()) for p in text.split(",") if p.strip()]


# Field annotations are strings here (from __future__ import annotations).
_PARSERS: dict[str, Callable[[str], object]] = {
    "bool": parse_bool,
    "int": int,
    "float": float,
    "str": str,
    "Path": Path,
    "int | None": _parse_optional_int,
    "list[Path]": _parse_paths,
}


def _parser_for(f: dataclasses.Field) -> Callable[[str], object]:
    return _PARSERS[str(f.type)]


def from_env(
    env: Mapping[str, str] | None = None, base: EmbedderConfig | None = None
) -> EmbedderConfig:
    """Overlay RIS_EMBEDDER_<FIELD> variables (e.g. RIS_EMBEDDER_MAX_BATCH_SIZE=8) on base."""
    env = os.environ if env is None else env
    config = dataclasses.replace(base) if base else EmbedderConfig()
    for f in dataclasses.fields(EmbedderConfig):
        name = ENV_PREFIX + f.name.upper()
        if name in env:
            try:
                setattr(config, f.name, _parser_for(f)(env[name]))
            except (ValueError, KeyError) as exc:
                raise ConfigError(f"{name}={env[name]!r}: {exc}") from exc
    # The shorter RIS_EMBEDDER_MODEL names one model path, like --model.
    if ENV_PREFIX + "MODEL" in env:
        config.model_paths = _parse_paths(env[ENV_PREFIX + "MODEL"])
    if ENV_PREFIX + "TEXT_MODEL" in env:
        config.text_models = env[ENV_PREFIX + "TEXT_MODEL"]
    return config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field; unset flags keep the env/default value."""
    for f in dataclasses.fields(EmbedderConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = _parser_for(f)
        if kind is parse_bool:
            parser.add_argument(
                flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction
            )
        else:
            parser.add_argument(flag, dest=f.name, default=None, type=kind)
    parser.add_argument(
        "--model",
        dest="model_paths",
        type=_parse_paths,
        default=None,
        help="comma-separated ONNX model path(s); the first is the default",
    )
    parser.add_argument(
        "--text-model",
        dest="text_models",
        default=None,
        help="text model file(s)/dir(s), comma-separated; 'auto' (default) or 'off'",
    )


def from_args(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> EmbedderConfig:
    """Defaults, then environment, then command-line flags; validated."""
    parser = argparse.ArgumentParser(prog="python -m ris.embedder", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    config = from_env(env)
    for f in dataclasses.fields(EmbedderConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(config, f.name, value)
    return config.validate()
