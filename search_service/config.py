"""Search service configuration: one dataclass, filled from defaults, then env, then flags.

Env: RIS_SEARCH_* for the service, RIS_MILVUS_* for Milvus, RIS_EMBEDDER_ADDRESS for the embedder.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ris.common.admission import AdmissionLimits
from ris.common.secrets import SecretError, read_secret, read_secret_list
from ris.common.settings import ConfigError, parse_bool, require
from ris.common.tls import ClientTls, ServerTls, TlsConfigError

DEFAULT_MILVUS_URI = "data/milvus/ris.db"
SEARCH_CONSISTENCY_LEVELS = ("Strong", "Session", "Bounded", "Eventually")


@dataclass
class SearchConfig:
    """Everything the search service needs to start."""

    host: str = "127.0.0.1"  # address to bind; 0.0.0.0 to serve beyond this machine
    port: int = 50052  # 0 = pick a free port
    embedder_address: str = "127.0.0.1:50051"  # host:port[,host:port...] (round robin)
    embed_timeout_s: float = 60.0  # deadline of each call to the embedder
    # Milvus: a local path ending in .db = Milvus Lite (nothing to start); else a URI.
    milvus_uri: str = DEFAULT_MILVUS_URI  # Milvus Lite path (*.db) or a Milvus server URI
    milvus_host: str = ""  # IBM-style alternative to the URI: host + port (+ secure)
    milvus_port: int = 19530  # with milvus_host
    milvus_token: str = field(default="", repr=False)  # Milvus token (user:password or API key)
    milvus_user: str = ""  # Milvus user (with milvus_password)
    milvus_password: str = field(default="", repr=False)  # Milvus password
    milvus_token_file: str = ""  # a file holding the token / password (wins over the value)
    milvus_password_file: str = ""  # file holding the Milvus password
    milvus_db_name: str = ""  # Milvus database; empty = default
    milvus_secure: bool = False  # TLS to Milvus
    milvus_server_name: str = ""  # TLS SNI / hostname override
    milvus_ca_cert: str = ""  # PEM file of the CA that signed the server's certificate
    milvus_timeout_s: float = 30.0  # connect and call timeout for Milvus
    # Milvus consistency level of the reads a Search makes (Strong, Session, Bounded,
    # Eventually). Session sees every write this process made, other replicas' up to Milvus'
    # last time tick (~200 ms), and waits only for its own; Strong sees every acknowledged write
    # but waits for the next time tick on each read (docs/benchmarks.md, "Search reads").
    # Ingest, augmentation and the other RPCs always read Strong.
    milvus_search_consistency: str = "Session"
    default_index_type: str = "AUTOINDEX"  # index for collections created without one
    # Milvus Lite collections past this many rows are logged and described with a warning that
    # says to move to a Milvus server (docs/benchmarks.md); 0 = never warn.
    lite_warn_rows: int = 50_000
    ingest_batch_size: int = 32  # images per embed request (capped by the embedder's limit)
    # Image bytes per embedder call aimed for (Ingest and Search); a larger image goes alone.
    # Calls never exceed max_message_bytes nor the embedder's reported max_message_bytes: an
    # image that fits neither fails alone with RESOURCE_EXHAUSTED (search_service/batching.py).
    embed_batch_bytes: int = 16 * 1024 * 1024
    # Alpha query expansion for searches that do not set it (COSINE/IP collections only):
    # re-query with q + sum(sim^alpha * top-n neighbours). top_n 0 = off by default.
    # Caltech mAP@10 0.838 -> 0.847 with n=1, alpha=3 (docs/results/retrieval_study.json).
    query_expansion_top_n: int = 1  # neighbours folded into each query; 0 = off
    query_expansion_alpha: float = 3.0  # neighbour weight = similarity^alpha
    # Database-side augmentation for collections created without a setting (COSINE/IP only):
    # each item stored as its top-n neighbourhood blend; queries stay raw. With alpha QE it
    # lifted Caltech mAP@10 0.847 -> 0.87 (docs/results/quality.md).
    augmentation_top_n: int = 3  # neighbours blended into each stored item; 0 = off
    augmentation_alpha: float = 3.0  # neighbour weight = similarity^alpha
    # Near-duplicate guard, for spaces with a semantic part (embedder pooling gem_softmax): of
    # the top near_duplicate_depth hits, those whose visual (GeM) part is at least this similar
    # to the query's come first. Cross-validated: copy detection R@1 0.957 -> 0.983, Caltech
    # mAP@10 0.854 -> 0.862, ImageNet R@1 unchanged (docs/results/near_duplicates.md). 0 = off.
    near_duplicate_threshold: float = 0.7
    near_duplicate_depth: int = 100  # hits checked (their raw vectors are read: bounded cost)
    # Milvus Lite only: stored vectors kept in memory for the guard and augmentation's reads
    # (this process is Lite's one writer, so its writes keep it exact); 0 = off.
    lite_vector_cache_mb: int = 256
    allowed_roots: list[Path] = field(default_factory=list)  # server-side paths; empty = none
    # largest server-side file read for an ingest item; <= max_message_bytes
    max_file_bytes: int = 64 * 1024 * 1024
    grpc_workers: int = 16  # unary calls (Search, Get, ...) served at once; more wait in the queue
    max_concurrent_streams: int = 16  # Ingest streams served at once; more wait in the queue
    max_queued_calls: int = 128  # calls waiting for a slot; beyond: RESOURCE_EXHAUSTED + retry hint
    max_queue_wait_s: float = 30.0  # longest wait in that queue (the call's deadline also ends it)
    stream_idle_timeout_s: float = 30.0  # Ingest stream silent this long: ends, DEADLINE_EXCEEDED
    # gRPC message limit: requests received, and calls sent to the embedder
    max_message_bytes: int = 64 * 1024 * 1024
    metrics_port: int | None = None  # None = off, 0 = pick a free port
    metrics_host: str = "127.0.0.1"  # Prometheus endpoint address
    shutdown_grace_s: float = 10.0  # SIGTERM: in-flight calls get this long to finish
    log_level: str = "INFO"  # DEBUG, INFO, WARNING, ERROR
    # Security (docs/security.md). TLS when tls_cert+tls_key are set; tls_client_ca requires
    # client certificates. Tokens: comma-separated, or *_file (one per line); none = open.
    tls_cert: str = ""  # server certificate (PEM); with tls_key enables TLS
    tls_key: str = ""  # server private key (PEM)
    tls_client_ca: str = ""  # CA of client certificates; set = mutual TLS required
    # bearer tokens allowed to read, comma-separated
    read_tokens: str = field(default="", repr=False)
    read_tokens_file: str = ""  # file with one read token per line
    write_tokens: str = field(default="", repr=False)  # write tokens may also read
    write_tokens_file: str = ""  # file with one write token per line
    # Calling the embedder: its token, and TLS (CA to trust; client cert+key for mutual TLS).
    embedder_token: str = field(default="", repr=False)  # bearer token sent to the embedder
    embedder_token_file: str = ""  # file holding the embedder token
    embedder_tls_ca: str = ""  # CA to trust for the embedder's certificate; set = TLS
    embedder_tls_cert: str = ""  # client certificate for mutual TLS to the embedder
    embedder_tls_key: str = ""  # its private key
    embedder_tls_server_name: str = ""  # name checked against the embedder's certificate

    @property
    def embedder_addresses(self) -> list[str]:
        return [a.strip() for a in self.embedder_address.split(",") if a.strip()]

    @property
    def is_milvus_lite(self) -> bool:
        return not self.milvus_host and self.milvus_uri.endswith(".db")

    def milvus_target(self) -> str:
        """The URI given to pymilvus: Lite path, explicit URI, or built from host/port."""
        if self.milvus_host:
            scheme = "https" if self.milvus_secure else "http"
            return f"{scheme}://{self.milvus_host}:{self.milvus_port}"
        return self.milvus_uri

    def validate(self) -> SearchConfig:
        """Reject impossible settings early, with the setting's name in the message."""
        checks = [
            (0 <= self.port <= 65535, "port must be 0..65535"),
            (bool(self.embedder_addresses), "embedder_address must name at least one host:port"),
            (self.embed_timeout_s > 0, "embed_timeout_s must be > 0"),
            (bool(self.milvus_uri or self.milvus_host), "milvus_uri or milvus_host is needed"),
            (0 < self.milvus_port <= 65535, "milvus_port must be 1..65535"),
            (
                self.milvus_search_consistency in SEARCH_CONSISTENCY_LEVELS,
                "milvus_search_consistency must be one of " + ", ".join(SEARCH_CONSISTENCY_LEVELS),
            ),
            (1 <= self.ingest_batch_size <= 1024, "ingest_batch_size must be 1..1024"),
            (self.lite_warn_rows >= 0, "lite_warn_rows must be >= 0"),
            (0 <= self.query_expansion_top_n <= 64, "query_expansion_top_n must be 0..64"),
            (0 <= self.query_expansion_alpha <= 100, "query_expansion_alpha must be 0..100"),
            (0 <= self.augmentation_top_n <= 64, "augmentation_top_n must be 0..64"),
            (0 <= self.augmentation_alpha <= 100, "augmentation_alpha must be 0..100"),
            (
                0 <= self.near_duplicate_threshold <= 1,
                "near_duplicate_threshold must be 0..1 (0 = off)",
            ),
            (1 <= self.near_duplicate_depth <= 1024, "near_duplicate_depth must be 1..1024"),
            (self.lite_vector_cache_mb >= 0, "lite_vector_cache_mb must be >= 0"),
            (self.max_file_bytes >= 1, "max_file_bytes must be >= 1"),
            (self.grpc_workers >= 2, "grpc_workers must be >= 2"),
            (self.max_concurrent_streams >= 1, "max_concurrent_streams must be >= 1"),
            (self.max_queued_calls >= 0, "max_queued_calls must be >= 0"),
            (self.max_queue_wait_s >= 0, "max_queue_wait_s must be >= 0"),
            (self.stream_idle_timeout_s > 0, "stream_idle_timeout_s must be > 0"),
            (self.max_message_bytes >= 1024, "max_message_bytes must be >= 1024"),
            (self.embed_batch_bytes >= 1024, "embed_batch_bytes must be >= 1024"),
            (
                self.max_file_bytes <= self.max_message_bytes,
                "max_file_bytes must be <= max_message_bytes (a larger file never fits a call "
                "to the embedder)",
            ),
            (self.shutdown_grace_s >= 0, "shutdown_grace_s must be >= 0"),
            (
                self.metrics_port is None or 0 <= self.metrics_port <= 65535,
                "metrics_port must be 0..65535",
            ),
        ]
        require(checks)
        try:
            self.server_tls().validate()
            self.embedder_tls().validate()
        except TlsConfigError as exc:
            raise ConfigError(str(exc)) from None
        self.tokens()
        self.secrets()
        return self

    def admission(self) -> AdmissionLimits:
        return AdmissionLimits.of(self)

    def server_tls(self) -> ServerTls:
        return ServerTls(self.tls_cert, self.tls_key, self.tls_client_ca)

    def embedder_tls(self) -> ClientTls:
        return ClientTls(
            self.embedder_tls_ca,
            self.embedder_tls_cert,
            self.embedder_tls_key,
            self.embedder_tls_server_name,
        )

    def tokens(self) -> tuple[list[str], list[str]]:
        """(read tokens, write tokens) of callers; both empty = no token is checked."""
        try:
            read = read_secret_list(self.read_tokens, self.read_tokens_file, "read_tokens")
            write = read_secret_list(self.write_tokens, self.write_tokens_file, "write_tokens")
        except SecretError as exc:
            raise ConfigError(str(exc)) from None
        return read, write

    def secrets(self) -> SearchSecrets:
        """The outgoing secrets (embedder token, Milvus token/password), files read."""
        try:
            return SearchSecrets(
                embedder_token=read_secret(
                    self.embedder_token, self.embedder_token_file, "embedder_token"
                ),
                milvus_token=read_secret(self.milvus_token, self.milvus_token_file, "milvus_token"),
                milvus_password=read_secret(
                    self.milvus_password, self.milvus_password_file, "milvus_password"
                ),
            )
        except SecretError as exc:
            raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class SearchSecrets:
    embedder_token: str = field(default="", repr=False)
    milvus_token: str = field(default="", repr=False)
    milvus_password: str = field(default="", repr=False)

    def all(self) -> list[str]:
        return [s for s in (self.embedder_token, self.milvus_token, self.milvus_password) if s]


_ENV = {
    "host": "RIS_SEARCH_HOST",
    "port": "RIS_SEARCH_PORT",
    "embedder_address": "RIS_EMBEDDER_ADDRESS",
    "embed_timeout_s": "RIS_SEARCH_EMBED_TIMEOUT_S",
    "milvus_uri": "RIS_MILVUS_URI",
    "milvus_host": "RIS_MILVUS_HOST",
    "milvus_port": "RIS_MILVUS_PORT",
    "milvus_token": "RIS_MILVUS_TOKEN",
    "milvus_user": "RIS_MILVUS_USER",
    "milvus_password": "RIS_MILVUS_PASSWORD",
    "milvus_db_name": "RIS_MILVUS_DB_NAME",
    "milvus_secure": "RIS_MILVUS_SECURE",
    "milvus_server_name": "RIS_MILVUS_SERVER_NAME",
    "milvus_ca_cert": "RIS_MILVUS_CA_CERT",
    "milvus_timeout_s": "RIS_MILVUS_TIMEOUT_S",
    "milvus_search_consistency": "RIS_MILVUS_SEARCH_CONSISTENCY",
    "default_index_type": "RIS_SEARCH_DEFAULT_INDEX_TYPE",
    "lite_warn_rows": "RIS_SEARCH_LITE_WARN_ROWS",
    "ingest_batch_size": "RIS_SEARCH_INGEST_BATCH_SIZE",
    "embed_batch_bytes": "RIS_SEARCH_EMBED_BATCH_BYTES",
    "allowed_roots": "RIS_SEARCH_ALLOWED_ROOTS",
    "max_file_bytes": "RIS_SEARCH_MAX_FILE_BYTES",
    "grpc_workers": "RIS_SEARCH_GRPC_WORKERS",
    "max_concurrent_streams": "RIS_SEARCH_MAX_CONCURRENT_STREAMS",
    "max_queued_calls": "RIS_SEARCH_MAX_QUEUED_CALLS",
    "max_queue_wait_s": "RIS_SEARCH_MAX_QUEUE_WAIT_S",
    "stream_idle_timeout_s": "RIS_SEARCH_STREAM_IDLE_TIMEOUT_S",
    "max_message_bytes": "RIS_SEARCH_MAX_MESSAGE_BYTES",
    "metrics_port": "RIS_SEARCH_METRICS_PORT",
    "metrics_host": "RIS_SEARCH_METRICS_HOST",
    "shutdown_grace_s": "RIS_SEARCH_SHUTDOWN_GRACE_S",
    "log_level": "RIS_SEARCH_LOG_LEVEL",
    "query_expansion_top_n": "RIS_SEARCH_QUERY_EXPANSION_TOP_N",
    "query_expansion_alpha": "RIS_SEARCH_QUERY_EXPANSION_ALPHA",
    "augmentation_top_n": "RIS_SEARCH_AUGMENTATION_TOP_N",
    "augmentation_alpha": "RIS_SEARCH_AUGMENTATION_ALPHA",
    "near_duplicate_threshold": "RIS_SEARCH_NEAR_DUPLICATE_THRESHOLD",
    "near_duplicate_depth": "RIS_SEARCH_NEAR_DUPLICATE_DEPTH",
    "lite_vector_cache_mb": "RIS_SEARCH_LITE_VECTOR_CACHE_MB",
    "milvus_token_file": "RIS_MILVUS_TOKEN_FILE",
    "milvus_password_file": "RIS_MILVUS_PASSWORD_FILE",
    "tls_cert": "RIS_SEARCH_TLS_CERT",
    "tls_key": "RIS_SEARCH_TLS_KEY",
    "tls_client_ca": "RIS_SEARCH_TLS_CLIENT_CA",
    "read_tokens": "RIS_SEARCH_READ_TOKENS",
    "read_tokens_file": "RIS_SEARCH_READ_TOKENS_FILE",
    "write_tokens": "RIS_SEARCH_WRITE_TOKENS",
    "write_tokens_file": "RIS_SEARCH_WRITE_TOKENS_FILE",
    "embedder_token": "RIS_EMBEDDER_TOKEN",
    "embedder_token_file": "RIS_EMBEDDER_TOKEN_FILE",
    "embedder_tls_ca": "RIS_SEARCH_EMBEDDER_TLS_CA",
    "embedder_tls_cert": "RIS_SEARCH_EMBEDDER_TLS_CERT",
    "embedder_tls_key": "RIS_SEARCH_EMBEDDER_TLS_KEY",
    "embedder_tls_server_name": "RIS_SEARCH_EMBEDDER_TLS_SERVER_NAME",
}
_SECRETS = {"milvus_token", "milvus_password", "read_tokens", "write_tokens", "embedder_token"}


def _convert(name: str, text: str) -> object:
    """Turn one env/flag string into the field's type."""
    default = getattr(SearchConfig(), name)
    try:
        if name == "allowed_roots":
            return [Path(p) for p in text.split(os.pathsep) if p]
        if name == "metrics_port":
            return None if text.strip().lower() in ("", "none", "off") else int(text)
        if isinstance(default, bool):
            return parse_bool(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from exc
    return text


def from_env(env: Mapping[str, str] | None = None) -> SearchConfig:
    """Defaults overridden by whichever RIS_* variables are set."""
    env = os.environ if env is None else env
    values = {name: _convert(name, env[var]) for name, var in _ENV.items() if var in env}
    return dataclasses.replace(SearchConfig(), **values)  # type: ignore[arg-type]


def from_args(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> SearchConfig:
    """Flags (``--milvus-uri`` ...) override env, which overrides defaults."""
    base = from_env(env)
    parser = argparse.ArgumentParser(prog="python -m ris.search", description=__doc__)
    for name, var in _ENV.items():
        flag = "--" + name.replace("_", "-")
        shown = "***" if name in _SECRETS else getattr(base, name)
        parser.add_argument(flag, dest=name, default=None, help=f"env {var} (now: {shown})")
    args = parser.parse_args(argv)
    values = {k: _convert(k, v) for k, v in vars(args).items() if v is not None}
    return dataclasses.replace(base, **values).validate()  # type: ignore[arg-type]
