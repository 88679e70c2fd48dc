"""The remote path with the options a hosted Milvus (e.g. IBM watsonx.data) needs: host, port,
secure, server_name, CA certificate, user, password; against a real Milvus 2.3 with TLS and
authentication turned on."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import numpy as np
import pytest
from search_fixtures import Photo, ingest, item_of, running_search, search_client

from ris.api import search_pb2
from ris.common.errors import ServiceError
from ris.search.config import SearchConfig
from ris.search.indexing import plan_index
from ris.search.store import MilvusStore
from ris.search.store_schema import CollectionMeta, Record
from ris.tools.milvus_standalone import MilvusServerHandle, TlsFiles, make_tls_files

pytestmark = pytest.mark.milvus_server


def _hosted(server: MilvusServerHandle, tls: TlsFiles, **overrides: object) -> SearchConfig:
    """IBM-style settings: no URI, host + port + secure + server_name + user/password."""
    base = SearchConfig(
        milvus_uri="",
        milvus_host="127.0.0.1",
        milvus_port=server.port,
        milvus_secure=True,
        milvus_server_name=tls.server_name,
        milvus_ca_cert=str(tls.ca),
        milvus_user="root",
        milvus_password="Milvus",
        milvus_timeout_s=10.0,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def test_store_over_tls_with_password(milvus_secure_server) -> None:
    server, tls = milvus_secure_server
    store = MilvusStore(_hosted(server, tls))
    meta = CollectionMeta(
        f"tls_{uuid.uuid4().hex[:8]}", 8, "COSINE", plan_index("", {}, "AUTOINDEX")
    )
    try:
        store.create_collection(meta)
        vectors = np.eye(8, dtype=np.float32)
        store.upsert(meta, [Record(f"e{i}", vectors[i]) for i in range(8)])
        assert store.count(meta.name) == 8
        assert store.search(meta, [vectors[3]], top_k=1)[0][0].id == "e3"
    finally:
        store.drop_collection(meta.name)
        store.close()


@pytest.mark.parametrize("wrong", ["password", "ca"])
def test_wrong_credentials_or_ca_are_refused(
    milvus_secure_server, tmp_path: Path, wrong: str
) -> None:
    server, tls = milvus_secure_server
    if wrong == "password":
        config = _hosted(server, tls, milvus_password="not-the-password")
    else:  # a certificate from another CA: the TLS handshake must fail
        other = make_tls_files(tmp_path / "other", tls.server_name)
        config = _hosted(server, tls, milvus_ca_cert=str(other.ca), milvus_timeout_s=3.0)
    with pytest.raises(ServiceError):
        MilvusStore(config).close()


def test_service_end_to_end_over_tls(
    milvus_secure_server, embedder_server, photos: list[Photo]
) -> None:
    server, tls = milvus_secure_server
    service_config = _hosted(server, tls, port=0, embedder_address=embedder_server.address)
    name = f"tls_e2e_{uuid.uuid4().hex[:6]}"
    with running_search(service_config) as service, search_client(service.address) as stub:
        stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
        try:
            summary = ingest(stub, name, [item_of(p) for p in photos[:6]])
            assert (summary.stored, summary.failed) == (6, 0)
            hits = stub.Search(
                search_pb2.SearchRequest(
                    collection=name, queries=[search_pb2.Query(image=photos[4].data)], top_k=1
                )
            )
            assert hits.results[0].hits[0].id == photos[4].id
        finally:
            stub.DropCollection(search_pb2.DropCollectionRequest(name=name))
