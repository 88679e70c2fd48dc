"""The search service's side of the embedder: channels, Embed/EmbedStream wrappers, model checks.

Several addresses (``host:port,host:port``) are used round robin, one call at a time; a call
that finds its embedder gone (UNAVAILABLE) moves on to the next one, and channels known to be
down are skipped, so losing one embedder loses no request. Each channel also balances round
robin over every address a DNS name resolves to, retrying UNAVAILABLE on another one, and
reconnects within ~2 s of an embedder's return.

An embedder call that outlives this service's own timeout (``embed_timeout_s``; the caller's
deadline still had time) is work cut short for the service's deadline: it answers
DEADLINE_EXCEEDED with a retry hint, never UNAVAILABLE, which clients retry at once and so run
the heaviest work again on an embedder that is already behind (``translate``).

The served models (GetModelInfo) are asked at most every ``MODEL_INFO_TTL_S``, not once a
search: that call was a second round trip on every search. A stale answer is harmless: it only
sets the limits and the early model check, and every Embed answer names its own model, which
the callers check again.
"""

from __future__ import annotations

import functools
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np

from ris.api import embedder_pb2, embedder_pb2_grpc
from ris.common import deadlines
from ris.common.channels import outgoing_channel
from ris.common.errors import (
    PUSHBACK_KEY,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)

T = TypeVar("T")
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}
_DOWN = {grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN}
MODEL_INFO_TTL_S = 1.0  # a GetModelInfo answer is reused this long (module docstring)
# Per channel: round robin over a DNS name's addresses; UNAVAILABLE retried on another one
# (Embed/EmbedText/GetModelInfo are read-only; a stream is retried only before any answer).
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": "ris.v1.Embedder"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


@dataclass(frozen=True)
class ModelRef:
    """Which model produced (or will produce) embeddings."""

    name: str
    version: str
    dim: int
    max_images_per_request: int = 0
    max_request_bytes: int = 0  # the embedder's message limit; 0 = not reported
    modality: str = ""  # "text" for a text model; images otherwise
    visual_dims: int = 0  # leading dims that are the visual part (0 = all: no semantic part)

    @classmethod
    def of(cls, info: Any) -> ModelRef:
        """From a ModelInfo message."""
        return cls(
            info.name,
            info.version,
            info.dim,
            info.max_images_per_request,
            info.max_request_bytes,
            info.modality,
            info.visual_dims,
        )


@dataclass
class Embedded:
    """One image's outcome: a vector, or an error (gRPC code number and message)."""

    vector: np.ndarray | None
    error_code: int = 0
    error_message: str = ""
    low_confidence: bool = False  # text: matched no concept the model knows


@dataclass
class EmbedBatch:
    model: ModelRef
    results: list[Embedded]


def _pushback_ms(exc: grpc.RpcError) -> int | None:
    """The embedder's own retry hint (its admission's ``grpc-retry-pushback-ms``), if any."""
    trailing = getattr(exc, "trailing_metadata", None)
    try:
        metadata = trailing() if callable(trailing) else None
        return next((int(v) for k, v in metadata or () if k == PUSHBACK_KEY), None)
    except Exception:  # not a finished call, or a malformed hint: no hint
        return None


def translate(
    exc: grpc.RpcError, what: str = "embedder", timeout_s: float | None = None
) -> ServiceError:
    """A failed embedder call as the error our caller should see; ``timeout_s`` is the timeout
    this service gave the call (its own embed_timeout_s, or less)."""
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    message = f"{what}: {code.name}: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and deadlines.expired():
        return DeadlineExceeded(message)  # the caller's own deadline: nothing to fail over
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        # This service's own timeout (or the embedder's): the embedder is that far behind, so
        # the hint is as long as the work was given; the client does not retry it by itself.
        wait_ms = max(1000, round(1000 * (timeout_s or 0)))
        if timeout_s:
            message = (
                f"{what} did not answer within the search service's own timeout "
                f"({timeout_s:g} s, embed_timeout_s): it is overloaded; retry in {wait_ms} ms, "
                "or with fewer images a call"
            )
        else:
            message = f"{message}; retry in {wait_ms} ms"
        return DeadlineExceeded(message, retry_after_ms=wait_ms)
    if code in _RETRYABLE:
        return Unavailable(message)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # overload: the caller should back off, for as long as the embedder asked
        return ResourceExhausted(message, retry_after_ms=_pushback_ms(exc))
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(message)
    if code in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNAUTHENTICATED,  # our token or certificate: a deployment problem
        grpc.StatusCode.PERMISSION_DENIED,
    ):
        return FailedPrecondition(message)
    return ServiceError(message)  # INTERNAL: logged with a request id, not returned


def check_model(
    collection: str, model_name: str, model_version: str, dim: int, actual: ModelRef
) -> None:
    """Refuse an embedder whose model differs from the one that filled the collection."""
    if model_name and (actual.name, actual.version) != (model_name, model_version):
        raise FailedPrecondition(
            f"collection {collection!r} was filled by model {model_name} {model_version}; "
            f"the embedder serves {actual.name} {actual.version}"
        )
    if actual.dim != dim:
        raise FailedPrecondition(
            f"collection {collection!r} holds {dim}-d vectors; the embedder's model "
            f"{actual.name} makes {actual.dim}-d"
        )


def _batch(response: embedder_pb2.EmbedResponse, expected: int) -> EmbedBatch:
    if len(response.results) != expected:
        raise ServiceError(f"embedder answered {len(response.results)} results for {expected}")
    results = []
    for r in response.results:
        if r.HasField("error") and r.error.code:
            results.append(Embedded(None, r.error.code, r.error.message))
        else:
            vector = np.asarray(r.embedding, dtype=np.float32)
            results.append(Embedded(vector, low_confidence=r.low_confidence))
    ref = ModelRef(response.model, response.model_version, response.dim)
    return EmbedBatch(ref, results)


class EmbedderClient:
    """gRPC client for ris.v1.Embedder; thread-safe."""

    def __init__(
        self,
        addresses: Sequence[str],
        timeout_s: float = 60.0,
        max_message_bytes: int = 64 << 20,
        credentials: grpc.ChannelCredentials | None = None,  # TLS (docs/security.md)
        token: str = "",  # sent as a bearer token on every call
        tls_options: Sequence[tuple[str, str]] = (),
    ) -> None:
        if not addresses:
            raise ValueError("no embedder address")
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
            *tls_options,
        ]
        self._channels = [outgoing_channel(a, options, credentials, token) for a in addresses]
        self._stubs = [embedder_pb2_grpc.EmbedderStub(c) for c in self._channels]
        self._states = [grpc.ChannelConnectivity.IDLE] * len(self._channels)
        self._next = itertools.cycle(range(len(self._stubs)))
        self._lock = threading.Lock()
        self._infos: tuple[float, Any] | None = None  # (when, GetModelInfoResponse)
        self.timeout_s = timeout_s
        if len(self._channels) > 1:  # only needed to tell live embedders from dead ones
            for i, channel in enumerate(self._channels):
                channel.subscribe(functools.partial(self._on_state, i), try_to_connect=True)

    def _on_state(self, index: int, state: grpc.ChannelConnectivity) -> None:
        self._states[index] = state

    def _order(self) -> list[int]:
        """Channel indexes for one call: the next in rotation first, channels known down last."""
        with self._lock:
            start = next(self._next)
        order = [(start + k) % len(self._stubs) for k in range(len(self._stubs))]
        return sorted(order, key=lambda i: self._states[i] in _DOWN)  # stable: keeps rotation

    def _stub(self) -> embedder_pb2_grpc.EmbedderStub:
        return self._stubs[self._order()[0]]

    def _call(
        self, fn: Callable[[embedder_pb2_grpc.EmbedderStub, float], T], timeout_s: float
    ) -> T:
        """One unary call, ``fn(stub, timeout)`` with ``timeout_s`` capped by the caller's
        deadline; on UNAVAILABLE try the next embedder (each at most once)."""
        order = self._order()
        for attempt, index in enumerate(order):
            timeout = deadlines.timeout(timeout_s)
            try:
                return fn(self._stubs[index], timeout)
            except grpc.RpcError as exc:
                last = attempt == len(order) - 1
                if last or exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise translate(exc, timeout_s=timeout) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def _model_infos(self) -> Any:
        cached = self._infos
        if cached is not None and time.monotonic() - cached[0] < MODEL_INFO_TTL_S:
            return cached[1]
        request = embedder_pb2.GetModelInfoRequest()
        info = self._call(
            lambda stub, timeout: stub.GetModelInfo(request, timeout=timeout),
            min(self.timeout_s, 10.0),
        )
        self._infos = (time.monotonic(), info)
        return info

    def describe_model(self, model: str = "") -> Any:
        """The served model's ModelInfo (empty = the default); FailedPrecondition if absent."""
        info = self._model_infos()
        candidates = [info.default_model, *info.models]
        for m in candidates:
            if (not model and m is info.default_model) or m.name == model:
                return m
        served = sorted({m.name for m in candidates})
        raise FailedPrecondition(f"the embedder does not serve model {model!r} (serves {served})")

    def model_info(self, model: str = "") -> ModelRef:
        """The served model called ``model`` (empty = the default); FailedPrecondition if absent."""
        return ModelRef.of(self.describe_model(model))

    def text_model_for(self, image_model: str) -> ModelRef | None:
        """The served text model whose embeddings live in ``image_model``'s space, if any."""
        info = self._model_infos()
        for m in info.models:
            if m.modality == "text" and (m.target_space == image_model or not image_model):
                return ModelRef.of(m)
        return None

    def embed_text(self, texts: Sequence[str], model: str = "") -> EmbedBatch:
        """Embed text descriptions into the image space of ``model``'s target."""
        request = embedder_pb2.EmbedTextRequest(texts=list(texts), model=model)
        response = self._call(
            lambda stub, timeout: stub.EmbedText(request, timeout=timeout), self.timeout_s
        )
        return _batch(response, len(texts))

    def embed(self, images: Sequence[bytes], model: str = "") -> EmbedBatch:
        """Embed a few images in one call; results in order."""
        request = embedder_pb2.EmbedRequest(
            images=[embedder_pb2.ImageInput(data=d) for d in images], model=model
        )
        response = self._call(
            lambda stub, timeout: stub.Embed(request, timeout=timeout), self.timeout_s
        )
        return _batch(response, len(images))

    def embed_stream(
        self, batches: Iterable[Sequence[bytes]], model: str = "", timeout_s: float | None = None
    ) -> Iterator[EmbedBatch]:
        """One EmbedStream call: each batch in is answered by one EmbedBatch out, in order.

        ``batches`` is consumed by gRPC's sending thread, so several batches are in flight while
        earlier answers are being processed (bound that in the iterable).
        """
        sizes: list[int] = []

        def requests() -> Iterator[embedder_pb2.EmbedRequest]:
            for images in batches:
                sizes.append(len(images))
                yield embedder_pb2.EmbedRequest(
                    images=[embedder_pb2.ImageInput(data=d) for d in images], model=model
                )

        call = self._stub().EmbedStream(requests(), timeout=timeout_s)
        try:
            for index, response in enumerate(call):
                yield _batch(response, sizes[index])
        except grpc.RpcError as exc:
            raise translate(exc) from exc
        finally:
            call.cancel()
