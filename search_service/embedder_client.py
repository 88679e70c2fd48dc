"""The search service's side of the embedder: channels, Embed/EmbedStream wrappers, model checks.

Several addresses (``host:port,host:port``) are used round robin, one call at a time.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from client.grpc_gen import embedder_pb2, embedder_pb2_grpc
from search_service.errors import (
    FailedPrecondition,
    InvalidArgument,
    SearchError,
    Unavailable,
)
from server_common.channels import outgoing_channel

_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}


@dataclass(frozen=True)
class ModelRef:
    """Which model produced (or will produce) embeddings."""

    name: str
    version: str
    dim: int
    max_images_per_request: int = 0


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


def translate(exc: grpc.RpcError, what: str = "embedder") -> SearchError:
    """A failed embedder call as the error our caller should see."""
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    message = f"{what}: {code.name}: {details}"
    if code in _RETRYABLE:
        return Unavailable(message)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(message)
    if code == grpc.StatusCode.NOT_FOUND:
        return FailedPrecondition(message)
    return SearchError(message)


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
        raise SearchError(f"embedder answered {len(response.results)} results for {expected}")
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
            *tls_options,
        ]
        self._channels = [outgoing_channel(a, options, credentials, token) for a in addresses]
        self._stubs = [embedder_pb2_grpc.EmbedderStub(c) for c in self._channels]
        self._next = itertools.cycle(range(len(self._stubs)))
        self._lock = threading.Lock()
        self.timeout_s = timeout_s

    def _stub(self) -> embedder_pb2_grpc.EmbedderStub:
        with self._lock:
            return self._stubs[next(self._next)]

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def model_info(self, model: str = "") -> ModelRef:
        """The served model called ``model`` (empty = the default); FailedPrecondition if absent."""
        try:
            info = self._stub().GetModelInfo(
                embedder_pb2.GetModelInfoRequest(), timeout=min(self.timeout_s, 10.0)
            )
        except grpc.RpcError as exc:
            raise translate(exc) from exc
        candidates = [info.default_model, *info.models]
        for m in candidates:
            if (not model and m is info.default_model) or m.name == model:
                return ModelRef(m.name, m.version, m.dim, m.max_images_per_request)
        served = sorted({m.name for m in candidates})
        raise FailedPrecondition(f"the embedder does not serve model {model!r} (serves {served})")

    def text_model_for(self, image_model: str) -> ModelRef | None:
        """The served text model whose embeddings live in ``image_model``'s space, if any."""
        try:
            info = self._stub().GetModelInfo(
                embedder_pb2.GetModelInfoRequest(), timeout=min(self.timeout_s, 10.0)
            )
        except grpc.RpcError as exc:
            raise translate(exc) from exc
        for m in info.models:
            if m.modality == "text" and (m.target_space == image_model or not image_model):
                return ModelRef(m.name, m.version, m.dim, m.max_images_per_request)
        return None

    def embed_text(self, texts: Sequence[str], model: str = "") -> EmbedBatch:
        """Embed text descriptions into the image space of ``model``'s target."""
        request = embedder_pb2.EmbedTextRequest(texts=list(texts), model=model)
        try:
            response = self._stub().EmbedText(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise translate(exc) from exc
        return _batch(response, len(texts))

    def embed(self, images: Sequence[bytes], model: str = "") -> EmbedBatch:
        """Embed a few images in one call; results in order."""
        request = embedder_pb2.EmbedRequest(
            images=[embedder_pb2.ImageInput(data=d) for d in images], model=model
        )
        try:
            response = self._stub().Embed(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise translate(exc) from exc
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
