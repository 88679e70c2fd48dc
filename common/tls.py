"""TLS for the services: server credentials (mutual TLS optional), client credentials, binding.

Certificates and keys are PEM files read once at start-up; a missing or unreadable file is a
configuration error before anything binds, never a silently plaintext port.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


class TlsConfigError(ValueError):
    """A TLS setting is incomplete or a file cannot be read."""


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise TlsConfigError(f"{what}: {path} is not a PEM file")
    return data


@dataclass(frozen=True)
class ServerTls:
    """Server side: ``cert``+``key`` turn TLS on; ``client_ca`` also requires client certs."""

    cert: str = ""
    key: str = ""
    client_ca: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key or self.client_ca)

    @property
    def mutual(self) -> bool:
        return bool(self.client_ca)

    def validate(self) -> ServerTls:
        if bool(self.cert) != bool(self.key):
            raise TlsConfigError("tls_cert and tls_key go together")
        if self.client_ca and not self.cert:
            raise TlsConfigError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        return self

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials; client certificates required when ``client_ca`` is set."""
        self.validate()
        pair = (_read(self.key, "tls_key"), _read(self.cert, "tls_cert"))
        ca = _read(self.client_ca, "tls_client_ca") if self.client_ca else None
        return grpc.ssl_server_credentials(
            [pair], root_certificates=ca, require_client_auth=bool(ca)
        )


@dataclass(frozen=True)
class ClientTls:
    """Client side (a service calling another): CA to trust, optional client cert for mTLS."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""  # override the name checked against the server certificate

    @property
    def enabled(self) -> bool:
        return bool(self.ca or self.cert or self.key)

    def validate(self) -> ClientTls:
        if bool(self.cert) != bool(self.key):
            raise TlsConfigError("client certificate and key go together")
        return self

    def credentials(self) -> grpc.ChannelCredentials:
        self.validate()
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "tls ca") if self.ca else None,
            private_key=_read(self.key, "tls client key") if self.key else None,
            certificate_chain=_read(self.cert, "tls client cert") if self.cert else None,
        )

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; anything else may be reachable by others."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def add_port(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind ``address`` with TLS when credentials are given, else plaintext; 0 = failed."""
    if credentials is not None:
        return server.add_secure_port(address, credentials)
    return server.add_insecure_port(address)


def warn_if_open(service: str, host: str, tls: ServerTls, checks_callers: bool) -> None:
    """One start-up warning when a non-loopback address serves without TLS or without callers."""
    if is_loopback(host):
        return
    if not checks_callers:
        log.warning(
            "%s listens on %s with no tokens configured: anyone who can reach it may call it",
            service,
            host,
        )
    if not tls.enabled:
        log.warning("%s listens on %s without TLS: traffic is plaintext", service, host)
