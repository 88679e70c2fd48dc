"""Start the embedder: gRPC server with health checking, reflection and metrics; graceful stop."""

from __future__ import annotations

import logging

from ris.api import embedder_pb2, embedder_pb2_grpc
from ris.common.auth import AuthInterceptor, method_scopes
from ris.common.grpc_server import GrpcServer, PortInUseError
from ris.common.secrets import register_secrets
from ris.common.tls import TlsConfigError, warn_if_open
from ris.embedder.config import ConfigError, EmbedderConfig
from ris.embedder.core import EmbedderCore
from ris.embedder.metrics import EmbedderMetrics
from ris.embedder.servicer import EmbedderServicer

log = logging.getLogger(__name__)

SERVICE_NAME = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name
# Every embedder method is open to any configured caller (one scope).
_SCOPES = method_scopes(
    embedder_pb2.DESCRIPTOR.services_by_name["Embedder"],
    read=("Embed", "EmbedStream", "EmbedText", "GetModelInfo"),
)

__all__ = ["EmbedderServer", "PortInUseError", "start_server"]


class EmbedderServer:
    """A running embedder. `stop()` drains in-flight requests, then releases everything."""

    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config.validate()
        tokens = config.allowed_tokens()
        register_secrets(tokens)
        tls = config.server_tls()
        try:
            credentials = tls.credentials() if tls.enabled else None
        except TlsConfigError as exc:
            raise ConfigError(str(exc)) from None
        auth = AuthInterceptor(
            _SCOPES, read_tokens=tokens, client_names=config.allowed_client_names()
        )
        self.metrics = EmbedderMetrics()
        self.core = EmbedderCore(config, self.metrics)
        servicer = EmbedderServicer(self.core)
        self._grpc = GrpcServer(
            SERVICE_NAME,
            lambda server: embedder_pb2_grpc.add_EmbedderServicer_to_server(servicer, server),
            workers=config.grpc_workers,
            max_message_bytes=config.max_message_bytes,
            thread_name_prefix="grpc",
            interceptors=[auth],
            admission=config.admission(),
        )
        try:
            self.port = self._grpc.bind(f"{config.host}:{config.port}", credentials)
        except PortInUseError:
            self.core.close()
            raise
        warn_if_open("embedder", config.host, tls, auth.checks_tokens)
        self.metrics_port: int | None = None

    def start(self) -> EmbedderServer:
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve(
                self.config.metrics_host, self.config.metrics_port
            )
        self._grpc.start()
        d = self.core.default.description
        log.info(
            "embedder listening on %s:%d (model %s %s, provider %s, metrics %s)",
            self.config.host,
            self.port,
            d.name,
            d.version,
            d.execution_provider,
            f"{self.config.metrics_host}:{self.metrics_port}" if self.metrics_port else "off",
        )
        return self

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def stop(self, grace: float | None = None) -> None:
        """Refuse new work, let in-flight calls finish (up to grace seconds), then shut down."""
        if not self._grpc.begin_stop():
            return
        grace = self.config.shutdown_grace_s if grace is None else grace
        log.info("embedder draining (grace %.1f s)", grace)
        self.core.draining = True
        self._grpc.drain(grace)
        self.core.close()
        self.metrics.close()
        log.info("embedder stopped")
        self._grpc.mark_stopped()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stop() has finished; True when it has."""
        return self._grpc.wait(timeout)


def start_server(config: EmbedderConfig) -> EmbedderServer:
    """Load the model(s), bind, start serving; port 0 picks a free port (see `.port`)."""
    return EmbedderServer(config).start()
