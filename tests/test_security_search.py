"""Search service security: TLS and mutual TLS, read/write tokens, search -> embedder over mTLS
with a token, secrets kept out of logs and errors, server-side paths confined to the roots.

Real services on 127.0.0.1 (Milvus Lite), certificates generated for this session.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from certs import Pki, make_pki
from grpc_health.v1 import health_pb2, health_pb2_grpc
from search_fixtures import Photo, running_search, search_config

from ris.api import search_pb2, search_pb2_grpc
from ris.client import RisClient
from ris.client.config import ClientConfig, RetryPolicy
from ris.client.errors import PermissionDenied, Unauthenticated, Unavailable
from ris.client.types import ById, IngestItem
from ris.common.errors import ServiceError
from ris.search.config import ConfigError, SearchConfig, from_args
from ris.search.server import SearchServer

READ = "search-reader-5be81f0c"
WRITE = "search-writer-a93d7e24"
EMBEDDER = "embedder-caller-c41f6b88"
PASSWORD = "milvus-Pa55-word-71e2"
ALL_SECRETS = (READ, WRITE, EMBEDDER, PASSWORD)
ROOT = Path(__file__).resolve().parent.parent
ONE_TRY = RetryPolicy(max_attempts=1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_embedder(make_embedder, pki: Pki) -> Iterator[Any]:
    """mTLS: only the "search-service" certificate, and only with EMBEDDER as its token."""
    with make_embedder(
        tls_cert=str(pki.server.cert),
        tls_key=str(pki.server.key),
        tls_client_ca=str(pki.ca),
        client_names="search-service",
        tokens=EMBEDDER,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory, photos: list[Photo]) -> dict[str, Path]:
    """An allowed root with one photo and two symlinks pointing out; a photo outside it."""
    base = tmp_path_factory.mktemp("paths")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    shutil.copy(photos[0].path, root / "inside.jpg")
    shutil.copy(photos[1].path, outside / "secret.jpg")
    (root / "link_out.jpg").symlink_to(outside / "secret.jpg")
    (root / "dir_link").symlink_to(outside, target_is_directory=True)
    (root / "link_in.jpg").symlink_to(root / "inside.jpg")
    return {"root": root, "outside": outside}


@pytest.fixture(scope="module")
def secure_search(
    secure_embedder, pki: Pki, roots: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SearchServer]:
    """TLS, read and write tokens (write from a file), mTLS + token towards the embedder."""
    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "write").write_text(WRITE + "\n")
    (secrets / "embedder").write_text(EMBEDDER + "\n")
    config = search_config(
        secure_embedder.address,
        str(tmp_path_factory.mktemp("lite") / "ris.db"),
        allowed_roots=[roots["root"]],
        tls_cert=str(pki.server.cert),
        tls_key=str(pki.server.key),
        read_tokens=READ,
        write_tokens_file=str(secrets / "write"),
        embedder_token_file=str(secrets / "embedder"),
        embedder_tls_ca=str(pki.ca),
        embedder_tls_cert=str(pki.client.cert),
        embedder_tls_key=str(pki.client.key),
    )
    with running_search(config) as server:
        yield server


def client_for(server: SearchServer, pki: Pki, token: str | None, **env: str) -> RisClient:
    """A RisClient configured the way a user would: RIS_* environment variables."""
    variables = {"RIS_ADDRESS": f"localhost:{server.port}", "RIS_TLS_ROOT_CERT": str(pki.ca)}
    if token:
        variables["RIS_TOKEN"] = token
    variables.update(env)
    return RisClient(ClientConfig.from_env(variables, retry=ONE_TRY, timeout=120))


@pytest.fixture(scope="module")
def stocked(secure_search: SearchServer, pki: Pki, photos: list[Photo]) -> str:
    """A collection filled through the secure path (client -> search -> embedder)."""
    name = f"sec_{uuid.uuid4().hex[:8]}"
    with client_for(secure_search, pki, WRITE) as client:
        client.create_collection(name)
        items = [IngestItem(p.id, data=p.data, label=p.label) for p in photos[:6]]
        summary = client.ingest(name, items)
        assert (summary.stored, summary.failed) == (6, 0), summary.failures
    return name


def assert_no_secret(text: str) -> None:
    for secret in ALL_SECRETS:
        assert secret not in text


def test_write_token_runs_everything_over_tls(secure_search, pki, stocked, photos):
    with client_for(secure_search, pki, WRITE) as client:
        hits = client.search(stocked, photos[2].data, top_k=3).hits
        assert hits[0].id == photos[2].id
        assert client.count(stocked) == 6
        extra = f"extra_{uuid.uuid4().hex[:6]}"
        client.create_collection(extra)
        assert client.drop_collection(extra)


def test_read_token_reads_but_cannot_write(secure_search, pki, stocked, photos, caplog):
    caplog.set_level(logging.DEBUG)
    with client_for(secure_search, pki, READ) as client:
        assert client.search(stocked, ById(photos[0].id), top_k=2).hits[0].id == photos[0].id
        assert client.count(stocked) == 6
        assert [i.id for i in client.get(stocked, [photos[1].id])] == [photos[1].id]
        assert len(list(client.iter_items(stocked, page_size=4))) == 6  # ListItems reads
        assert stocked in {c.name for c in client.list_collections()}
        assert client.describe_collection(stocked).name == stocked
        attempts = [
            lambda: client.create_collection(f"nope_{uuid.uuid4().hex[:6]}"),
            lambda: client.ingest(stocked, [IngestItem("x", data=photos[0].data)]),
            lambda: client.delete(stocked, [photos[0].id]),
            lambda: client.drop_collection(stocked),
        ]
        for attempt in attempts:
            with pytest.raises(PermissionDenied, match="needs a write token") as info:
                attempt()
            assert_no_secret(str(info.value))
        assert client.count(stocked) == 6  # nothing was changed
    assert_no_secret(caplog.text)


def test_missing_or_unknown_token_is_unauthenticated(secure_search, pki, stocked, caplog):
    caplog.set_level(logging.DEBUG)
    for token in (None, "not-a-real-token-123", READ + "x", WRITE[:-1]):
        with client_for(secure_search, pki, token) as client:
            with pytest.raises(Unauthenticated) as info:
                client.count(stocked)
            assert_no_secret(str(info.value))
            if token:
                assert token not in str(info.value)
    assert "unknown token" in caplog.text
    assert_no_secret(caplog.text)
    assert "not-a-real-token-123" not in caplog.text


def test_health_is_open_and_plaintext_is_refused(secure_search, pki, stocked):
    channel = grpc.secure_channel(
        f"127.0.0.1:{secure_search.port}",
        grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes()),
    )
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()
    plain = RisClient(
        ClientConfig(address=secure_search.address, token=WRITE, retry=ONE_TRY, timeout=10)
    )
    with plain, pytest.raises(Unavailable):
        plain.count(stocked)


def test_embedder_refuses_the_search_service_without_its_token(
    secure_embedder, pki, tmp_path_factory
):
    """Same certificates, no embedder token: the refusal surfaces, naming the cause."""
    config = search_config(
        secure_embedder.address,
        str(tmp_path_factory.mktemp("lite-notoken") / "ris.db"),
        embedder_tls_ca=str(pki.ca),
        embedder_tls_cert=str(pki.client.cert),
        embedder_tls_key=str(pki.client.key),
    )
    with running_search(config) as server:
        channel = grpc.insecure_channel(server.address)
        try:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.CreateCollection(search_pb2.CreateCollectionRequest(name="c1"), timeout=30)
            assert "UNAUTHENTICATED" in info.value.details()
        finally:
            channel.close()


def test_mutual_tls_on_the_search_service(secure_embedder, pki, tmp_path_factory):
    config = search_config(
        "127.0.0.1:1",  # no embedder needed for these calls
        str(tmp_path_factory.mktemp("lite-mtls") / "ris.db"),
        tls_cert=str(pki.server.cert),
        tls_key=str(pki.server.key),
        tls_client_ca=str(pki.ca),
    )
    with running_search(config) as server:
        with client_for(
            server,
            pki,
            None,
            RIS_TLS_CLIENT_CERT=str(pki.client.cert),
            RIS_TLS_CLIENT_KEY=str(pki.client.key),
        ) as client:
            assert isinstance(client.list_collections(), list)
        for extra in (
            {},
            {
                "RIS_TLS_CLIENT_CERT": str(pki.rogue_client.cert),
                "RIS_TLS_CLIENT_KEY": str(pki.rogue_client.key),
            },
        ):
            with client_for(server, pki, None, **extra) as client, pytest.raises(Unavailable):
                client.list_collections()


# -- server-side paths ------------------------------------------------------------------------


def test_server_side_paths_stay_inside_the_roots(secure_search, pki, roots):
    root, outside = roots["root"], roots["outside"]
    cases = {
        "inside": (f"{root}/inside.jpg", 0),
        "file-uri-inside": (f"file://{root}/inside.jpg", 0),
        "symlink-inside": (f"{root}/link_in.jpg", 0),
        "dotdot": (f"{root}/../outside/secret.jpg", grpc.StatusCode.PERMISSION_DENIED),
        "dotdot-deep": (f"{root}/a/../../../../etc/passwd", grpc.StatusCode.PERMISSION_DENIED),
        "symlink-out": (f"{root}/link_out.jpg", grpc.StatusCode.PERMISSION_DENIED),
        "dir-symlink-out": (f"{root}/dir_link/secret.jpg", grpc.StatusCode.PERMISSION_DENIED),
        "file-uri-outside": (f"file://{outside}/secret.jpg", grpc.StatusCode.PERMISSION_DENIED),
        "absolute-outside": ("/etc/passwd", grpc.StatusCode.PERMISSION_DENIED),
        "unc-like": ("//other-host/share/x.jpg", grpc.StatusCode.PERMISSION_DENIED),
        "http": ("http://other-host/x.jpg", grpc.StatusCode.INVALID_ARGUMENT),
        "https": ("https://169.254.169.254/latest/meta-data", grpc.StatusCode.INVALID_ARGUMENT),
        "file-other-host": ("file://other-host/etc/passwd", grpc.StatusCode.INVALID_ARGUMENT),
        "relative": ("inside.jpg", grpc.StatusCode.INVALID_ARGUMENT),
        "nul": (f"{root}/inside.jpg\x00.png", grpc.StatusCode.INVALID_ARGUMENT),
        "directory": (f"{root}", grpc.StatusCode.INVALID_ARGUMENT),
        "missing": (f"{root}/missing.jpg", grpc.StatusCode.NOT_FOUND),
        "percent-dotdot": (f"file://{root}/%2e%2e/outside/secret.jpg", grpc.StatusCode.NOT_FOUND),
    }
    reasons = {
        grpc.StatusCode.PERMISSION_DENIED: "outside the allowed roots",
        grpc.StatusCode.INVALID_ARGUMENT: "remote URIs|absolute|NUL|not a regular file",
        grpc.StatusCode.NOT_FOUND: "no such file",
    }
    name = f"paths_{uuid.uuid4().hex[:6]}"
    channel = grpc.secure_channel(
        f"localhost:{secure_search.port}",
        grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes()),
    )
    try:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        auth = (("authorization", f"Bearer {WRITE}"),)
        stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), metadata=auth)
        items = [search_pb2.Item(id=key, uri=uri) for key, (uri, _) in cases.items()]
        response = stub.Ingest(
            iter([search_pb2.IngestRequest(collection=name, items=items)]),
            timeout=120,
            metadata=auth,
        )
        failures = {f.id: f.error for f in response.failures}
        for key, (_, expected) in cases.items():
            if expected == 0:
                assert key not in failures, (key, failures.get(key))
            else:
                assert failures[key].code == expected.value[0], (key, failures[key])
                assert re.search(reasons[expected], failures[key].message), failures[key]
        stored = stub.Count(search_pb2.CountRequest(collection=name), metadata=auth).count
        assert stored == 3 == response.stored
    finally:
        channel.close()


# -- secrets in configuration, logs and errors ------------------------------------------------


def test_secret_settings_come_from_files_and_stay_out_of_repr(tmp_path):
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "read").write_text(f"{READ}\n# comment\n")
    env = {
        "RIS_MILVUS_PASSWORD_FILE": str(tmp_path / "pw"),
        "RIS_SEARCH_READ_TOKENS_FILE": str(tmp_path / "read"),
        "RIS_SEARCH_WRITE_TOKENS": WRITE,
        "RIS_EMBEDDER_TOKEN": EMBEDDER,
    }
    config = from_args([], env=env)
    assert config.secrets().milvus_password == PASSWORD
    assert config.tokens() == ([READ], [WRITE])
    assert config.secrets().embedder_token == EMBEDDER
    assert_no_secret(repr(config) + repr(config.secrets()))
    assert_no_secret(repr(from_args(["--milvus-password", PASSWORD], env={})))
    with pytest.raises(ConfigError, match="cannot read") as info:
        from_args([], env={"RIS_SEARCH_WRITE_TOKENS_FILE": str(tmp_path / "absent")})
    with pytest.raises(ConfigError, match="shorter than"):
        from_args([], env={"RIS_SEARCH_READ_TOKENS": "abc"})
    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        from_args([], env={"RIS_SEARCH_TLS_KEY": str(tmp_path / "pw")})
    assert_no_secret(str(info.value))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_milvus_password_never_in_errors_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    port = _closed_port()
    base = SearchConfig(port=0, milvus_host="127.0.0.1", milvus_port=port, milvus_timeout_s=3)
    for config in (
        dataclasses.replace(base, milvus_user="root", milvus_password=PASSWORD),
        dataclasses.replace(base, milvus_token=f"root:{PASSWORD}"),
    ):
        with pytest.raises(ServiceError) as info:
            SearchServer(config)
        assert "Milvus unavailable" in str(info.value)
        assert_no_secret(str(info.value))
        logging.getLogger("test").exception("startup failed", exc_info=info.value)
    assert "startup failed" in caplog.text
    assert_no_secret(caplog.text)


def test_entry_point_output_never_shows_secrets(tmp_path):
    """``python -m ris.search`` failing to reach Milvus with a password and tokens set."""
    (tmp_path / "pw").write_text(PASSWORD)
    env = {
        **os.environ,
        "RIS_MILVUS_HOST": "127.0.0.1",
        "RIS_MILVUS_PORT": str(_closed_port()),
        "RIS_MILVUS_USER": "root",
        "RIS_MILVUS_PASSWORD_FILE": str(tmp_path / "pw"),
        "RIS_MILVUS_TIMEOUT_S": "3",
        "RIS_SEARCH_READ_TOKENS": READ,
        "RIS_SEARCH_WRITE_TOKENS": WRITE,
        "RIS_EMBEDDER_TOKEN": EMBEDDER,
        "RIS_SEARCH_LOG_LEVEL": "DEBUG",
    }
    result = subprocess.run(
        [sys.executable, "-m", "ris.search", "--port", "0", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and "--read-tokens" in result.stdout
    assert_no_secret(result.stdout + result.stderr)
    result = subprocess.run(
        [sys.executable, "-m", "ris.search", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "Milvus unavailable" in result.stderr, result.stderr[-2000:]
    assert_no_secret(result.stdout + result.stderr)


@pytest.mark.milvus_server
def test_wrong_milvus_password_stays_secret_on_a_real_server(milvus_secure_server, caplog):
    """A real Milvus with authentication refusing our password: the message omits it."""
    caplog.set_level(logging.DEBUG)
    server, tls = milvus_secure_server
    config = SearchConfig(
        port=0,
        milvus_uri="",
        milvus_host="127.0.0.1",
        milvus_port=server.port,
        milvus_secure=True,
        milvus_server_name=tls.server_name,
        milvus_ca_cert=str(tls.ca),
        milvus_user="root",
        milvus_password=PASSWORD,
        milvus_timeout_s=10.0,
    )
    with pytest.raises(ServiceError) as info:
        SearchServer(config)
    logging.getLogger("test").exception("startup failed", exc_info=info.value)
    assert_no_secret(str(info.value) + caplog.text)
    assert "startup failed" in caplog.text
    # Control: the same settings with the right password connect.
    SearchServer(dataclasses.replace(config, milvus_password="Milvus")).stop(grace=0)


def test_eval_and_bench_use_tls_and_the_token(secure_search, pki, stocked, photos, tmp_path):
    """`ris eval` and `ris bench` take the same connection flags as every command."""
    from ris.tools import evaluation, loadtest

    secure = ["--root-cert", str(pki.ca), "--retries", "1"]
    target = f"localhost:{secure_search.port}"

    def bench(*extra: str) -> int:
        parser = argparse.ArgumentParser()
        loadtest.add_arguments(parser)
        argv = ["--target", target, "--call", "search", "--collection", stocked]
        argv += ["--concurrency", "2", "--requests", "4", "--duration", "20", "--warmup", "0"]
        argv += ["--images", str(photos[0].path), *extra]
        return loadtest.run(parser.parse_args(argv))

    assert bench(*secure, "--token", READ) == 0
    assert bench(*secure) == 1  # no token: every call UNAUTHENTICATED

    candidates, queries = tmp_path / "candidates.csv", tmp_path / "queries.csv"
    candidates.write_text(
        "id,path,label\n" + "".join(f"{p.id},{p.path},{p.label}\n" for p in photos[:8])
    )
    queries.write_text("path,label\n" + "".join(f"{p.path},{p.label}\n" for p in photos[:2]))
    parser = argparse.ArgumentParser()
    evaluation.add_arguments(parser)
    argv = ["--address", target, *secure, "--candidates", str(candidates)]
    argv += ["--queries", str(queries), "--collection", f"ev_{uuid.uuid4().hex[:6]}"]
    argv += ["--no-progress"]
    assert evaluation.run(parser.parse_args([*argv, "--token", WRITE])) == 0
    assert evaluation.run(parser.parse_args(argv)) == 1
