"""The real Milvus servers as pytest fixtures (the launchers are ris.tools.milvus_standalone).

``milvus_server``: one Milvus 2.3 standalone (PyPI ``milvus``) per test session;
``milvus25_server``: the Milvus 2.5 engine (milvus-lite 2.5.1 in ``$RIS_MILVUS25_DIR``) over
TCP; ``milvus_secure_server``: a second 2.3 standalone with TLS and authentication, per module.
Registered from tests/conftest.py with ``pytest_plugins``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ris.tools.milvus_standalone import (
    MilvusServerHandle,
    TlsFiles,
    make_tls_files,
    milvus25_binary,
    start_milvus25_server,
    start_milvus_server,
)


@pytest.fixture(scope="session")
def milvus25_server() -> Iterator[MilvusServerHandle]:
    """The Milvus 2.5 engine (milvus-lite 2.5.1) on loopback for the session."""
    binary = milvus25_binary()
    if binary is None:
        pytest.skip("RIS_MILVUS25_DIR not set (milvus-lite 2.5.1 unpacked there; CI sets it)")
    with tempfile.TemporaryDirectory(prefix="ris-milvus25-") as tmp:
        handle = start_milvus25_server(binary, Path(tmp))
        try:
            yield handle
        finally:
            handle.stop()


@pytest.fixture(scope="session")
def milvus_server() -> Iterator[MilvusServerHandle]:
    """A real Milvus standalone on loopback for the whole session (skips if not installed)."""
    pytest.importorskip("milvus", reason="PyPI milvus (milvus-server) not installed")
    with tempfile.TemporaryDirectory(prefix="ris-milvus-") as tmp:
        handle = start_milvus_server(Path(tmp))
        try:
            yield handle
        finally:
            handle.stop()


@pytest.fixture(scope="module")
def milvus_secure_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[MilvusServerHandle, TlsFiles]]:
    """A second real Milvus with TLS and authentication, for the module that asks for it."""
    pytest.importorskip("milvus", reason="PyPI milvus (milvus-server) not installed")
    tls = make_tls_files(tmp_path_factory.mktemp("milvus-tls"))
    with tempfile.TemporaryDirectory(prefix="ris-milvus-tls-") as tmp:
        handle = start_milvus_server(Path(tmp), tls=tls, auth=True)
        try:
            yield handle, tls
        finally:
            handle.stop()
