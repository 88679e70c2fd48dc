"""Milvus Lite's limit told to the user: a Lite collection past ``lite_warn_rows`` is logged
once and described with a warning naming what to run instead (real service, real embedder,
real Milvus Lite); the size check costs one count per CHECK_EVERY rows."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from search_fixtures import Photo, ingest, item_of, running_search, search_client, search_config

from ris.api import search_pb2
from ris.cli.main import describe_line
from ris.client.convert import collection_info
from ris.search.lite_limit import CHECK_EVERY, LiteSizeWatch


def test_size_is_counted_once_per_thousand_rows_and_warned_once() -> None:
    counts: list[int] = []
    watch = LiteSizeWatch(limit=50_000)

    def count() -> int:
        counts.append(1)
        return 1000 * len(counts) * 30  # 30k, 60k, ...

    for _ in range(3 * CHECK_EVERY // 100):
        watch.written("c", 100, count)
    assert len(counts) == 2  # 30k: under, then 60k: warned and never counted again
    assert watch.warnings("c", 49_999) == []
    assert "Milvus server" in watch.warnings("c", 60_000)[0]
    assert LiteSizeWatch(limit=0).warnings("c", 10**9) == []  # 0 = never


def test_lite_collection_past_the_limit_is_warned_in_log_and_describe(
    embedder_server, photos: list[Photo], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = search_config(embedder_server.address, str(tmp_path / "lite.db"), lite_warn_rows=4)
    caplog.set_level(logging.WARNING, logger="ris.search.lite_limit")
    with running_search(config) as server, search_client(server.address) as stub:
        stub.CreateCollection(search_pb2.CreateCollectionRequest(name="grows"))
        describe = search_pb2.DescribeCollectionRequest(name="grows")
        assert ingest(stub, "grows", [item_of(p) for p in photos[:4]]).stored == 4
        assert list(stub.DescribeCollection(describe).warnings) == []
        assert not caplog.records
        for part in (photos[4:6], photos[6:8]):
            assert ingest(stub, "grows", [item_of(p) for p in part]).stored == len(part)
        assert len(caplog.records) == 1  # logged once, on the write that crossed the limit
        info = stub.DescribeCollection(describe)
        (warning,) = info.warnings
        assert "8 rows on Milvus Lite, past 4" in warning and "RIS_MILVUS_URI" in warning
        assert f"warning: {warning}" in describe_line(collection_info(info))
        assert len(caplog.records) == 1
