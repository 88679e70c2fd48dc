"""Search service parts without a server: filters, index sizing, config, paths, write batches."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ris.common.errors import InvalidArgument
from ris.search.config import ConfigError, SearchConfig, from_args, from_env
from ris.search.filters import build_filter, combine, quote
from ris.search.indexing import (
    index_size_warning,
    nlist_for,
    nprobe_for,
    plan_index,
    search_params,
    segment_rows,
)
from ris.search.paths import SourceError, read_image_file, resolve
from ris.search.store_connection import client_kwargs
from ris.search.store_schema import (
    MAX_WRITE_BYTES,
    CollectionMeta,
    Record,
    check_record_fields,
    collection_properties,
    meta_from,
    validate_name,
    write_batches,
)

# -- filters -------------------------------------------------------------------------------


def _unquote(literal: str) -> str:
    """Read a literal back the way Milvus' parser does (escapes: \\" \\\\ \\n \\r \\t)."""
    assert literal[0] == literal[-1] == '"'
    out, i, body = [], 0, literal[1:-1]
    table = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
    while i < len(body):
        if body[i] == "\\":
            out.append(table[body[i + 1]])
            i += 2
        else:
            assert body[i] != '"', "unescaped quote ends the literal early"
            out.append(body[i])
            i += 1
    return "".join(out)


@given(st.text(max_size=40))
def test_quote_round_trips_any_text(value: str) -> None:
    literal = quote(value)
    assert _unquote(literal) == value
    assert "\n" not in literal and "\r" not in literal


def test_build_filter_shapes() -> None:
    assert build_filter() == ""
    assert build_filter(ids=["a"]) == 'id == "a"'
    assert build_filter(labels=["x", "y", "x"]) == 'label in ["x", "y"]'
    expr = build_filter(ids=["a", "b"], labels=["cat"], metadata={"k": 'v"1', "a": "2"})
    assert expr == (
        '(id in ["a", "b"]) and (label == "cat") and (metadata["a"] == "2") and '
        '(metadata["k"] == "v\\"1")'
    )
    assert combine("", 'a == "1"') == 'a == "1"'
    assert combine('a == "1"', 'b == "2"') == '(a == "1") and (b == "2")'
    for key in ["", "a\x01", "tab\t", "del\x7f"]:
        with pytest.raises(InvalidArgument):
            build_filter(metadata={key: "x"})
        with pytest.raises(InvalidArgument):
            check_record_fields("id", "", "", {key: "x"})
    assert build_filter(metadata={"k": "any\x01value"}) == 'metadata["k"] == "any\x01value"'


# -- index sizing --------------------------------------------------------------------------


def test_ivf_nlist_follows_the_data() -> None:
    assert nlist_for(1_000) == 126
    assert nlist_for(10) == 16  # floor
    assert nlist_for(1_000_000) == 4000
    assert nlist_for(10**12) == 16384  # ceiling
    plan = plan_index("ivf_flat", {"expected_rows": "1000"}, "AUTOINDEX")
    assert plan.index_type == "IVF_FLAT" and plan.build_params == {"nlist": 126}
    assert search_params(plan, 10) == {"nprobe": 15}
    explicit = plan_index("IVF_SQ8", {"nlist": "64", "nprobe": "64"}, "AUTOINDEX")
    assert search_params(explicit, 10) == {"nprobe": 64}


def test_ivf_nlist_follows_one_segment_not_the_whole_collection() -> None:
    # Milvus trains an IVF index per sealed segment (512 MB: ~65k rows at 2048-d).
    assert 64_000 < segment_rows(2048) < 65_536 and segment_rows(512) > 3 * segment_rows(2048)
    assert nlist_for(1_000, 2048) == 126  # below one segment: as before
    assert nlist_for(1_000_000, 2048) == nlist_for(10**8, 2048) == 1020
    plan = plan_index("IVF_SQ8", {"expected_rows": "1000000"}, "AUTOINDEX", dim=2048)
    assert plan.build_params == {"nlist": 1020} and search_params(plan, 10) == {"nprobe": 80}
    assert plan_index("IVF_SQ8", {"nlist": "4096"}, "AUTOINDEX", dim=2048).build_params == {
        "nlist": 4096  # given: kept
    }
    warning = index_size_warning(plan_index("IVF_FLAT", {}, "AUTOINDEX"), 10**6, dim=2048)
    assert warning and "(nlist 1020)" in warning
    assert index_size_warning(plan, 10**7, dim=2048) is None


def test_a_collection_reads_back_the_index_it_was_built_with() -> None:
    """The built nlist is a property: a later sizing rule must not change how an existing
    collection is searched; collections from before that property re-plan by the old rule."""
    plan = plan_index("IVF_FLAT", {"expected_rows": "1000000"}, "AUTOINDEX", dim=2048)
    props = collection_properties(CollectionMeta("c", 2048, "COSINE", plan))
    fields = [{"name": "embedding", "params": {"dim": 2048}}]
    described = {"fields": fields, "properties": props}
    assert meta_from("c", described, lambda: "COSINE").index.build_params == {"nlist": 1020}
    del props["ris.index_build"]
    assert meta_from("c", described, lambda: "COSINE").index.build_params == {"nlist": 4000}
    props["ris.index_build"] = "[1, 2]"  # hand-edited nonsense: re-planned
    assert meta_from("c", described, lambda: "COSINE").index.build_params == {"nlist": 4000}


def test_ivf_nprobe_scales_with_nlist_and_outgrown_indexes_are_flagged() -> None:
    # 1/8 of the clusters on small indexes, 2.5*sqrt(nlist) on large ones (not a fixed cap).
    assert [nprobe_for(n) for n in (16, 126, 400, 1265, 4000, 16384)] == [8, 15, 50, 89, 159, 320]
    at_1m = plan_index("IVF_SQ8", {"expected_rows": "1000000"}, "AUTOINDEX")
    assert search_params(at_1m, 10) == {"nprobe": 159}
    assert index_size_warning(at_1m, 1_000_000) is None
    default = plan_index("IVF_FLAT", {}, "AUTOINDEX")  # sized for 10k: nlist 400
    assert index_size_warning(default, 30_000) is None  # 4*sqrt(n) = 693 < 2 * 400
    warning = index_size_warning(default, 1_000_000)
    assert warning and "nlist 400" in warning and "expected_rows=1000000 (nlist 4000)" in warning
    assert index_size_warning(plan_index("HNSW", {}, "AUTOINDEX"), 10**8) is None


def test_hnsw_and_defaults() -> None:
    plan = plan_index("HNSW", {}, "AUTOINDEX")
    assert plan.build_params == {"M": 16, "efConstruction": 200}
    assert search_params(plan, 10) == {"ef": 64}
    assert search_params(plan, 100) == {"ef": 200}  # ef >= top_k
    assert plan_index("", {}, "AUTOINDEX").index_type == "AUTOINDEX"
    assert plan_index("", {}, "FLAT").index_type == "FLAT"
    for kind, params in [
        ("NOPE", {}),
        ("HNSW", {"nlist": "8"}),
        ("FLAT", {"M": "8"}),
        ("HNSW", {"M": "0"}),
        ("IVF_FLAT", {"nlist": "x"}),
    ]:
        with pytest.raises(InvalidArgument):
            plan_index(kind, params, "AUTOINDEX")


# -- config --------------------------------------------------------------------------------


def test_config_env_then_flags() -> None:
    env = {
        "RIS_MILVUS_URI": "http://127.0.0.1:19530",
        "RIS_MILVUS_SECURE": "true",
        "RIS_EMBEDDER_ADDRESS": "127.0.0.1:1,127.0.0.1:2",
        "RIS_SEARCH_ALLOWED_ROOTS": os.pathsep.join(["/data/a", "/data/b"]),
        "RIS_SEARCH_METRICS_PORT": "0",
        "RIS_SEARCH_PORT": "6000",
    }
    cfg = from_env(env)
    assert cfg.milvus_secure and cfg.metrics_port == 0 and cfg.port == 6000
    assert cfg.embedder_addresses == ["127.0.0.1:1", "127.0.0.1:2"]
    assert cfg.allowed_roots == [Path("/data/a"), Path("/data/b")]
    flagged = from_args(["--port", "7000", "--milvus-db-name", "ris"], env=env)
    assert (flagged.port, flagged.milvus_db_name, flagged.milvus_secure) == (7000, "ris", True)
    with pytest.raises(ConfigError):
        from_args(["--port", "99999"], env={})
    with pytest.raises(ConfigError):
        from_env({"RIS_MILVUS_SECURE": "perhaps"})


def test_search_consistency_is_one_of_milvus_levels() -> None:
    assert SearchConfig().milvus_search_consistency == "Session"
    strong = from_env({"RIS_MILVUS_SEARCH_CONSISTENCY": "Strong"})
    assert strong.validate().milvus_search_consistency == "Strong"
    flagged = from_args(["--milvus-search-consistency", "Bounded"], env={})
    assert flagged.milvus_search_consistency == "Bounded"
    with pytest.raises(ConfigError, match="milvus_search_consistency must be one of Strong"):
        from_args(["--milvus-search-consistency", "strongest"], env={})


def test_milvus_connection_settings() -> None:
    lite = client_kwargs(SearchConfig(milvus_uri="/tmp/x/ris.db"))
    assert lite == {"uri": "/tmp/x/ris.db", "timeout": 30.0}
    ibm = SearchConfig(
        milvus_host="abc.lakehouse.appdomain.cloud",
        milvus_port=30439,
        milvus_secure=True,
        milvus_server_name="abc.lakehouse.appdomain.cloud",
        milvus_user="ibmlhapikey",
        milvus_password="secret",
        milvus_db_name="default",
    )
    kwargs = client_kwargs(ibm)
    assert kwargs["uri"] == "https://abc.lakehouse.appdomain.cloud:30439"
    assert kwargs["secure"] is True and kwargs["server_name"] == ibm.milvus_server_name
    assert (kwargs["user"], kwargs["password"], kwargs["db_name"]) == (
        "ibmlhapikey",
        "secret",
        "default",
    )
    ca = client_kwargs(SearchConfig(milvus_uri="http://m:19530", milvus_ca_cert="/c/ca.pem"))
    assert ca["secure"] is True and ca["server_pem_path"] == "/c/ca.pem"
    token = client_kwargs(SearchConfig(milvus_uri="http://m:19530", milvus_token="root:Milvus"))
    assert token["token"] == "root:Milvus" and "secure" not in token


# -- rows ----------------------------------------------------------------------------------


def test_collection_names_and_fields() -> None:
    assert validate_name("_ok_Name9") == "_ok_Name9"
    for bad in ["", "9x", "a-b", "a b", "x" * 256, 'a"']:
        with pytest.raises(InvalidArgument):
            validate_name(bad)
    check_record_fields("id", "label", "/p.jpg", {"k": "v"})
    for args in [
        ("", "", "", {}),
        ("x" * 513, "", "", {}),
        ("é" * 300, "", "", {}),
        ("a", "l" * 1025, "", {}),
        ("a", "", "", {"": "v"}),
        ("a", "", "", {"k": "v" * 70_000}),
    ]:
        with pytest.raises(InvalidArgument):
            check_record_fields(*args)


def test_write_batches_stay_under_the_message_limit() -> None:
    dim = 2048
    records = [Record(f"id{i}", [0.0] * 4, "l", "u", {"k": "v"}) for i in range(3000)]
    batches = list(write_batches(records, dim))
    assert sum(len(b) for b in batches) == 3000
    assert [r.id for b in batches for r in b] == [r.id for r in records]  # order kept
    assert len(batches) >= 2
    assert all(len(b) * (4 * dim) < MAX_WRITE_BYTES for b in batches)
    assert list(write_batches([], dim)) == []


# -- server-side paths ---------------------------------------------------------------------


def test_paths_are_confined_to_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    inside = root / "sub" / "a.jpg"
    inside.write_bytes(b"jpeg")
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"secret")
    (root / "link_out.jpg").symlink_to(secret)
    (root / "link_in.jpg").symlink_to(inside)
    roots = [root]

    assert read_image_file(str(inside), roots, 100) == b"jpeg"
    assert read_image_file(f"file://{inside}", roots, 100) == b"jpeg"
    assert read_image_file(str(root / "link_in.jpg"), roots, 100) == b"jpeg"
    assert resolve(str(root / "sub" / ".." / "sub" / "a.jpg"), roots) == inside

    cases = {
        str(root / "link_out.jpg"): grpc.StatusCode.PERMISSION_DENIED,
        str(root / ".." / "secret.jpg"): grpc.StatusCode.PERMISSION_DENIED,
        str(secret): grpc.StatusCode.PERMISSION_DENIED,
        "sub/a.jpg": grpc.StatusCode.INVALID_ARGUMENT,
        "https://example.com/a.jpg": grpc.StatusCode.INVALID_ARGUMENT,
        "s3://bucket/a.jpg": grpc.StatusCode.INVALID_ARGUMENT,
        str(root / "missing.jpg"): grpc.StatusCode.NOT_FOUND,
        str(root / "sub"): grpc.StatusCode.INVALID_ARGUMENT,
    }
    for uri, code in cases.items():
        with pytest.raises(SourceError) as info:
            read_image_file(uri, roots, 100)
        assert info.value.code == code, uri
    with pytest.raises(SourceError) as info:
        read_image_file(str(inside), roots, 3)
    assert "too large" in str(info.value)
    with pytest.raises(SourceError) as info:
        read_image_file(str(inside), [], 100)
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_lite_unimplemented_filter_drops_only_that_record() -> None:
    import logging
    import sys

    from ris.search.store_connection import _LITE_FILTER

    def record(exc: BaseException, msg: str) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            info = sys.exc_info()
        return logging.LogRecord("grpc._server", logging.ERROR, __file__, 1, msg, None, info)

    calling = "Exception calling application: x"
    assert not _LITE_FILTER.filter(record(NotImplementedError("Method not implemented!"), calling))
    assert _LITE_FILTER.filter(record(ValueError("boom"), calling))
    assert _LITE_FILTER.filter(record(NotImplementedError("other"), calling))
