"""Start the search service: gRPC server with health checking, reflection and metrics."""

from __future__ import annotations

import dataclasses
import logging

from ris.api import search_pb2, search_pb2_grpc
from ris.common.auth import AuthInterceptor, method_scopes
from ris.common.errors import ServiceError
from ris.common.grpc_server import GrpcServer, PortInUseError
from ris.common.secrets import redact, register_secrets
from ris.common.tls import TlsConfigError, warn_if_open
from ris.search.config import ConfigError, SearchConfig
from ris.search.embedder_client import EmbedderClient
from ris.search.metrics import SearchMetrics
from ris.search.operations import Services
from ris.search.servicer import SearchServicer
from ris.search.store import MilvusStore

log = logging.getLogger(__name__)

SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
# Read tokens may call these; everything else (Create/Drop, Ingest, Delete) needs a write token.
_SCOPES = method_scopes(
    search_pb2.DESCRIPTOR.services_by_name["SearchService"],
    read=(
        "DescribeCollection",
        "ListCollections",
        "Search",
        "Get",
        "Count",
        "GetServiceInfo",
        "ListItems",
        "GetItemImage",
    ),
)

__all__ = ["PortInUseError", "SearchServer", "start_server"]


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
        except ServiceError as exc:  # the message may quote the driver: never the password
            raise type(exc)(redact(str(exc)), exc.code) from None
        self.embedder = EmbedderClient(
            config.embedder_addresses,
            config.embed_timeout_s,
            config.max_message_bytes,
            credentials=embedder_credentials,
            token=secrets.embedder_token,
            tls_options=embedder_tls.options(),
        )
        self.services = Services(config, self.store, self.embedder, self.metrics)
        servicer = SearchServicer(self.services)
        self._grpc = GrpcServer(
            SERVICE_NAME,
            lambda server: search_pb2_grpc.add_SearchServiceServicer_to_server(servicer, server),
            workers=config.grpc_workers,
            max_message_bytes=config.max_message_bytes,
            thread_name_prefix="search-grpc",
            interceptors=[auth],
            admission=config.admission(),
        )
        try:
            self.port = self._grpc.bind(f"{config.host}:{config.port}", credentials)
        except PortInUseError:
            self._close_clients()
            raise
        warn_if_open("search service", config.host, tls, auth.checks_tokens)
        self.metrics_port: int | None = None

    def _close_clients(self) -> None:
        self.embedder.close()
        self.store.close()

    def start(self) -> SearchServer:
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve(
                self.config.metrics_host, self.config.metrics_port
            )
        self._grpc.start()
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
        if not self._grpc.begin_stop():
            return
        grace = self.config.shutdown_grace_s if grace is None else grace
        self._grpc.drain(grace)
        self._close_clients()
        self.metrics.close()
        log.info("search service stopped")
        self._grpc.mark_stopped()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stop() has finished; True when it has."""
        return self._grpc.wait(timeout)


def start_server(config: SearchConfig) -> SearchServer:
    """Connect to Milvus, bind, start serving; port 0 picks a free port (see ``.port``)."""
    return SearchServer(config).start()
