"""Start the search service: gRPC server with health checking, reflection and metrics."""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from client.grpc_gen import search_pb2, search_pb2_grpc
from search_service.config import ConfigError, SearchConfig
from search_service.embedder_client import EmbedderClient
from search_service.errors import SearchError
from search_service.metrics import SearchMetrics
from search_service.operations import Services
from search_service.servicer import SearchServicer
from search_service.store import MilvusStore
from server_common.auth import AuthInterceptor, method_scopes
from server_common.secrets import redact, register_secrets
from server_common.tls import TlsConfigError, add_port, warn_if_open

log = logging.getLogger(__name__)

SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
# Read tokens may call these; everything else (Create/Drop, Ingest, Delete) needs a write token.
_SCOPES = method_scopes(
    search_pb2.DESCRIPTOR.services_by_name["SearchService"],
    read=("DescribeCollection", "ListCollections", "Search", "Get", "Count"),
)


class PortInUseError(OSError):
    """The configured address could not be bound."""


class SearchServer:
    """A running search service. ``stop()`` drains in-flight calls, then closes Milvus."""

    def __init__(self, config: SearchConfig) -> None:
        self.config = config.validate()
        secrets = config.secrets()
        read_tokens, write_tokens = config.tokens()
        register_secrets([*secrets.all(), *read_tokens, *write_tokens])
        auth = AuthInterceptor(_SCOPES, read_tokens, write_tokens)
        tls, embedder_tls = config.server_tls(), config.embedder_tls()
        try:
            credentials = tls.credentials() if tls.enabled else None
            embedder_credentials = embedder_tls.credentials() if embedder_tls.enabled else None
        except TlsConfigError as exc:
            raise ConfigError(str(exc)) from None
        self.metrics = SearchMetrics()
        milvus_config = dataclasses.replace(
            config, milvus_token=secrets.milvus_token, milvus_password=secrets.milvus_password
        )
        try:
            self.store = MilvusStore(milvus_config)
        except SearchError as exc:  # the message may quote the driver: never the password
            raise type(exc)(redact(str(exc))) from None
        self.embedder = EmbedderClient(
            config.embedder_addresses,
            config.embed_timeout_s,
            config.max_message_bytes,
            credentials=embedder_credentials,
            token=secrets.embedder_token,
            tls_options=embedder_tls.options(),
        )
        self.services = Services(config, self.store, self.embedder, self.metrics)
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(config.grpc_workers, thread_name_prefix="search-grpc"),
            options=options,
            maximum_concurrent_rpcs=config.grpc_workers,
            interceptors=[auth],
        )
        search_pb2_grpc.add_SearchServiceServicer_to_server(
            SearchServicer(self.services), self._grpc
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc
        )
        address = f"{config.host}:{config.port}"
        try:
            self.port = add_port(self._grpc, address, credentials)
        except RuntimeError as exc:
            self._close_clients()
            raise PortInUseError(f"cannot bind {address}: {exc}") from exc
        if not self.port:
            self._close_clients()
            raise PortInUseError(f"cannot bind {address}")
        warn_if_open("search service", config.host, tls, auth.checks_tokens)
        self.metrics_port: int | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False

    def _close_clients(self) -> None:
        self.embedder.close()
        self.store.close()

    def start(self) -> SearchServer:
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve(
                self.config.metrics_host, self.config.metrics_port
            )
        self._grpc.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "search service listening on %s:%d (milvus %s, embedder %s, metrics %s)",
            self.config.host,
            self.port,
            "lite " + self.config.milvus_uri if self.config.is_milvus_lite else "server",
            self.config.embedder_address,
            f"{self.config.metrics_host}:{self.metrics_port}" if self.metrics_port else "off",
        )
        return self

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let running ones finish (up to ``grace`` s), then release all."""
        with self._stop_lock:
            if self._stopping:
                self._stopped.wait()
                return
            self._stopping = True
        grace = self.config.shutdown_grace_s if grace is None else grace
        self.health.enter_graceful_shutdown()
        self._grpc.stop(grace).wait()
        self._close_clients()
        self.metrics.close()
        log.info("search service stopped")
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stop() has finished; True when it has."""
        return self._stopped.wait(timeout)


def start_server(config: SearchConfig) -> SearchServer:
    """Connect to Milvus, bind, start serving; port 0 picks a free port (see ``.port``)."""
    return SearchServer(config).start()
