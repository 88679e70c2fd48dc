"""Channels built from a ClientConfig: plaintext or TLS (optionally mutual), sync or asyncio."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio

from ris.client.config import ClientConfig


def _options(config: ClientConfig) -> list[tuple[str, int | str]]:
    reconnect_ms = max(20, int(config.retry.initial_backoff * 1000))
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Retries are ours (client/retry.py); gRPC's own would multiply attempts.
        ("grpc.enable_retries", 0),
        # Reconnect on our schedule: gRPC's default waits 1-120 s after a refused connection,
        # failing every call fast meanwhile, which would outlast our whole retry budget.
        ("grpc.initial_reconnect_backoff_ms", reconnect_ms),
        ("grpc.min_reconnect_backoff_ms", reconnect_ms),
        ("grpc.max_reconnect_backoff_ms", max(reconnect_ms, int(config.retry.max_backoff * 1000))),
    ]
    if config.server_name:
        options.append(("grpc.ssl_target_name_override", config.server_name))
    return options


def _credentials(config: ClientConfig) -> grpc.ChannelCredentials:
    def read(path: Path | None) -> bytes | None:
        return None if path is None else path.read_bytes()

    return grpc.ssl_channel_credentials(
        root_certificates=read(config.root_cert),
        private_key=read(config.client_key),
        certificate_chain=read(config.client_cert),
    )


def open_channel(config: ClientConfig) -> grpc.Channel:
    """A blocking-API channel; connects lazily on the first call."""
    if config.secure:
        return grpc.secure_channel(config.address, _credentials(config), options=_options(config))
    return grpc.insecure_channel(config.address, options=_options(config))


def open_aio_channel(config: ClientConfig) -> grpc.aio.Channel:
    """An asyncio channel; must be created and used inside the running event loop."""
    if config.secure:
        return grpc.aio.secure_channel(
            config.address, _credentials(config), options=_options(config)
        )
    return grpc.aio.insecure_channel(config.address, options=_options(config))
