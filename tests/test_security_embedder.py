"""Embedder security: TLS, mutual TLS with allowed client names, caller tokens, secrets in logs.

Real servers on 127.0.0.1 with certificates generated for this session (tests/certs.py).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest
from certs import CertPair, Pki, make_pki
from embedder_fixtures import SERVED_DIM, embed_request
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ris.api import embedder_pb2, embedder_pb2_grpc
from ris.common.auth import bearer_token
from ris.common.secrets import redact
from ris.common.tls import ServerTls, warn_if_open
from ris.embedder.config import ConfigError, EmbedderConfig, from_args
from ris.embedder.server import EmbedderServer

TOKEN = "emb-caller-7f3a9c2e51"
OTHER_TOKEN = "emb-caller-unknown-0b9d"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_channel(address: str, ca: Path, client: CertPair | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    return grpc.secure_channel(address, credentials)


def model_info(
    channel: grpc.Channel, token: str | None = None
) -> embedder_pb2.GetModelInfoResponse:
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    return stub.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=10, metadata=metadata)


def code_of(call: Callable[[], object]) -> grpc.RpcError:
    """The RpcError ``call`` raises (the test fails if it returns)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


@pytest.fixture(scope="module")
def tls_token_embedder(make_embedder, pki: Pki) -> Iterator[EmbedderServer]:
    """TLS (server cert only) and one allowed caller token."""
    with make_embedder(
        tls_cert=str(pki.server.cert), tls_key=str(pki.server.key), tokens=TOKEN
    ) as server:
        yield server


def test_tls_with_token_embeds(tls_token_embedder, pki, embedder_images):
    for host in ("127.0.0.1", "localhost"):
        channel = tls_channel(f"{host}:{tls_token_embedder.port}", pki.ca)
        try:
            stub = embedder_pb2_grpc.EmbedderStub(channel)
            response = stub.Embed(
                embed_request(embedder_images[:2]),
                timeout=60,
                metadata=(("authorization", f"Bearer {TOKEN}"),),
            )
            assert [len(r.embedding) for r in response.results] == [2048, 2048]
        finally:
            channel.close()


def test_missing_and_unknown_tokens_are_unauthenticated(tls_token_embedder, pki, caplog):
    channel = tls_channel(tls_token_embedder.address, pki.ca)
    try:
        caplog.set_level(logging.DEBUG)
        missing = code_of(lambda: model_info(channel))
        assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "Bearer" in missing.details()
        wrong = code_of(lambda: model_info(channel, OTHER_TOKEN))
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
        assert OTHER_TOKEN not in wrong.details()
        # A stream is checked before any message is read.
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        stream = stub.EmbedStream(iter([embedder_pb2.EmbedRequest()]), timeout=10)
        assert code_of(lambda: list(stream)).code() == grpc.StatusCode.UNAUTHENTICATED
        assert model_info(channel, TOKEN).default_model.dim == 2048
    finally:
        channel.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "unknown token" in logged  # the refusal is logged ...
    assert OTHER_TOKEN not in logged and TOKEN not in logged  # ... without the token


def test_health_stays_open_without_token(tls_token_embedder, pki):
    channel = tls_channel(tls_token_embedder.address, pki.ca)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()


def test_plaintext_and_untrusted_clients_cannot_connect(tls_token_embedder, pki):
    plain = grpc.insecure_channel(tls_token_embedder.address)
    untrusting = tls_channel(tls_token_embedder.address, pki.rogue_ca)
    try:
        for channel in (plain, untrusting):
            error = code_of(partial(model_info, channel, TOKEN))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        plain.close()
        untrusting.close()


@pytest.fixture(scope="module")
def mtls_embedder(make_embedder, pki: Pki) -> Iterator[EmbedderServer]:
    """Mutual TLS; only the certificate named "search-service" may call; no tokens."""
    with make_embedder(
        tls_cert=str(pki.server.cert),
        tls_key=str(pki.server.key),
        tls_client_ca=str(pki.ca),
        client_names="search-service",
    ) as server:
        yield server


def test_mtls_allowed_client_certificate(mtls_embedder, pki):
    channel = tls_channel(mtls_embedder.address, pki.ca, pki.client)
    try:
        assert model_info(channel).default_model.dim == 2048
    finally:
        channel.close()


def test_mtls_refuses_missing_untrusted_and_unlisted_certificates(mtls_embedder, pki):
    cases = [
        (None, grpc.StatusCode.UNAVAILABLE),  # handshake fails: no certificate
        (pki.rogue_client, grpc.StatusCode.UNAVAILABLE),  # signed by an untrusted CA
        (pki.other_client, grpc.StatusCode.PERMISSION_DENIED),  # trusted, not a listed caller
    ]
    for client, expected in cases:
        channel = tls_channel(mtls_embedder.address, pki.ca, client)
        try:
            error = code_of(partial(model_info, channel))
            assert error.code() == expected, (client, error)
            if expected == grpc.StatusCode.PERMISSION_DENIED:
                assert "other-caller" in error.details()
        finally:
            channel.close()


def test_security_settings_from_env_files_and_flags(tmp_path, pki):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# callers\n{TOKEN}\n{OTHER_TOKEN}\n")
    env = {
        "RIS_EMBEDDER_TLS_CERT": str(pki.server.cert),
        "RIS_EMBEDDER_TLS_KEY": str(pki.server.key),
        "RIS_EMBEDDER_TOKENS_FILE": str(token_file),
    }
    config = from_args(["--tls-client-ca", str(pki.ca)], env=env)
    assert config.allowed_tokens() == [TOKEN, OTHER_TOKEN]
    assert config.server_tls().mutual
    assert TOKEN not in repr(from_args([], env={"RIS_EMBEDDER_TOKENS": TOKEN}))
    bad = [
        ({"RIS_EMBEDDER_TLS_CERT": str(pki.server.cert)}, "tls_cert and tls_key"),
        ({"RIS_EMBEDDER_TLS_CLIENT_CA": str(pki.ca)}, "needs tls_cert"),
        ({"RIS_EMBEDDER_TOKENS": "short"}, "shorter than"),
        ({"RIS_EMBEDDER_TOKENS_FILE": str(tmp_path / "absent")}, "cannot read"),
        ({"RIS_EMBEDDER_CLIENT_NAMES": "x"}, "mutual TLS"),
    ]
    for env_vars, message in bad:
        with pytest.raises(ConfigError, match=message):
            from_args([], env=env_vars)


def test_unreadable_certificate_is_a_config_error(model_path, tmp_path, pki):
    config = EmbedderConfig(
        port=0,
        model_paths=[model_path],
        provider="cpu",
        tls_cert=str(tmp_path / "missing.crt"),
        tls_key=str(pki.server.key),
    )
    with pytest.raises(ConfigError, match=r"missing\.crt"):
        EmbedderServer(config)


def test_open_non_loopback_bind_is_warned_once(caplog):
    caplog.set_level(logging.WARNING, logger="ris.common.tls")
    warn_if_open("embedder", "127.0.0.1", ServerTls(), checks_callers=False)
    assert not caplog.records
    warn_if_open("embedder", "0.0.0.0", ServerTls(), checks_callers=False)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "no tokens" in messages[0] and "without TLS" in messages[1]


def test_bearer_parsing_and_redaction():
    assert bearer_token([("authorization", f"Bearer {TOKEN}")]) == TOKEN
    assert bearer_token([("authorization", f"bearer   {TOKEN} ")]) == TOKEN
    assert bearer_token([("authorization", TOKEN)]) is None
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("x-other", "Bearer abc")]) is None
    assert redact("header authorization: Bearer abc.def-123 sent") == (
        "header authorization: Bearer *** sent"
    )


def test_subprocess_stderr_never_shows_the_token(model_path, tmp_path, pki):
    """The real entry point, token from a file: refusals logged, token nowhere in its output."""
    token_file = tmp_path / "embedder.tokens"
    token_file.write_text(TOKEN + "\n")
    env = {
        **os.environ,
        "RIS_EMBEDDER_TOKENS_FILE": str(token_file),
        "RIS_EMBEDDER_TLS_CERT": str(pki.server.cert),
        "RIS_EMBEDDER_TLS_KEY": str(pki.server.key),
        "RIS_EMBEDDER_TEXT_MODEL": "off",
    }
    args = [sys.executable, "-m", "ris.embedder", "--port", "0", "--model", str(model_path)]
    args += ["--provider", "cpu", "--intra-op-threads", "1", "--log-level", "DEBUG"]
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "embedder listening on 127.0.0.1:PORT ..."
        assert "listening on" in line, line
        address = line.split("listening on ", 1)[1].split()[0]
        channel = tls_channel(address, pki.ca)
        try:
            for token in (OTHER_TOKEN, TOKEN + "x", None):
                assert code_of(partial(model_info, channel, token)).code() == (
                    grpc.StatusCode.UNAUTHENTICATED
                )
            assert model_info(channel, TOKEN).default_model.dim == SERVED_DIM
        finally:
            channel.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err[-2000:]
    assert "unknown token" in err
    assert TOKEN not in err and OTHER_TOKEN not in err
