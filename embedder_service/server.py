"""Start the embedder: gRPC server with health checking, reflection and metrics; graceful stop."""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from client.grpc_gen import embedder_pb2, embedder_pb2_grpc
from embedder_service.config import ConfigError, EmbedderConfig
from embedder_service.core import EmbedderCore
from embedder_service.metrics import EmbedderMetrics
from embedder_service.servicer import EmbedderServicer
from server_common.auth import AuthInterceptor, method_scopes
from server_common.secrets import register_secrets
from server_common.tls import TlsConfigError, add_port, warn_if_open

log = logging.getLogger(__name__)

SERVICE_NAME = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name
# Every embedder method is open to any configured caller (one scope).
_SCOPES = method_scopes(
    embedder_pb2.DESCRIPTOR.services_by_name["Embedder"],
    read=("Embed", "EmbedStream", "EmbedText", "GetModelInfo"),
)


class PortInUseError(OSError):
    """The configured address could not be bound."""


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
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(config.grpc_workers, thread_name_prefix="grpc"),
            options=options,
            maximum_concurrent_rpcs=config.grpc_workers,
            interceptors=[auth],
        )
        embedder_pb2_grpc.add_EmbedderServicer_to_server(EmbedderServicer(self.core), self._grpc)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc
        )
        address = f"{config.host}:{config.port}"
        try:
            self.port = add_port(self._grpc, address, credentials)
        except (RuntimeError, ValueError) as exc:
            self.core.close()
            raise PortInUseError(f"cannot bind {address}: {exc}") from exc
        if not self.port:
            self.core.close()
            raise PortInUseError(f"cannot bind {address}")
        warn_if_open("embedder", config.host, tls, auth.checks_tokens)
        self.metrics_port: int | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False

    def start(self) -> EmbedderServer:
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve(
                self.config.metrics_host, self.config.metrics_port
            )
        self._grpc.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
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
        with self._stop_lock:
            if self._stopping:
                self._stopped.wait()
                return
            self._stopping = True
        grace = self.config.shutdown_grace_s if grace is None else grace
        log.info("embedder draining (grace %.1f s)", grace)
        self.core.draining = True
        self.health.enter_graceful_shutdown()
        self._grpc.stop(grace).wait()
        self.core.close()
        self.metrics.close()
        log.info("embedder stopped")
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stop() has finished; True when it has."""
        return self._stopped.wait(timeout)


def start_server(config: EmbedderConfig) -> EmbedderServer:
    """Load the model(s), bind, start serving; port 0 picks a free port (see `.port`)."""
    return EmbedderServer(config).start()
