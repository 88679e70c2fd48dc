"""Grouping by count and bytes at every hop, at the default limits, without a network: the
search service's embedder calls (search_service/batching.py) and the client's messages
(client/limits.py, client/ingest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from ris.api import search_pb2
from ris.client.ingest import CallStream, IngestCall
from ris.client.limits import Limits, search_calls
from ris.client.types import IngestItem
from ris.search.batching import IMAGE_OVERHEAD, EmbedLimits, Grouper, split
from ris.search.config import ConfigError, SearchConfig
from ris.search.embedder_client import ModelRef

MIB = 1024 * 1024
PHONE = int(2.7 * MIB)  # a 12 MP JPEG
DEFAULT_MODEL = ModelRef("m", "v", 2048, max_images_per_request=64, max_request_bytes=64 * MIB)
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


def test_default_ingest_batches_of_phone_photos_fit_the_embedders_limit() -> None:
    """The issue's case: 32 photos of ~2.7 MB (86 MB) were one 64 MiB message. Now each group
    stays within embed_batch_bytes (16 MiB), far under the limit, and nothing is left out."""
    config = SearchConfig()
    limits = EmbedLimits.for_model(DEFAULT_MODEL, config, config.ingest_batch_size)
    assert (limits.max_images, limits.target_bytes) == (32, 16 * MIB)
    sizes = [PHONE if i % 5 else 40_000 for i in range(100)]
    rejected: list[tuple[int, str]] = []
    grouper = Grouper(range(100), sizes.__getitem__, limits, lambda *r: rejected.append(r))
    groups = list(grouper.groups())
    assert [i for g in groups for i in g] == list(range(100)) and not rejected
    for group in groups:
        assert len(group) <= 32
        assert sum(sizes[i] + IMAGE_OVERHEAD for i in group) <= 16 * MIB


def test_an_image_larger_than_the_target_goes_alone_and_one_over_the_limit_fails_alone() -> None:
    limits = EmbedLimits.for_model(DEFAULT_MODEL, SearchConfig(), 32)
    sizes = {"a": 1000, "big": 40 * MIB, "b": 1000, "huge": 64 * MIB, "c": 1000}
    groups, oversize = split(list(sizes), sizes.__getitem__, limits)
    assert groups == [["a"], ["big"], ["b", "c"]]
    assert [item for item, _ in oversize] == ["huge"]
    assert "the search service's max_message_bytes = 67108864 bytes" in oversize[0][1]


def test_the_smaller_of_the_two_services_limits_wins() -> None:
    small = ModelRef("m", "v", 8, max_images_per_request=16, max_request_bytes=2 * MIB)
    limits = EmbedLimits.for_model(small, SearchConfig(), 256)
    assert limits.max_images == 16 and limits.max_item_bytes < 2 * MIB
    assert "the embedder's max_message_bytes = 2097152 bytes" in (limits.too_big(2 * MIB) or "")
    unreported = ModelRef("m", "v", 8)  # an older embedder: our own limit applies
    assert EmbedLimits.for_model(unreported, SearchConfig(), 32).max_item_bytes < 64 * MIB


def test_grouper_rest_yields_what_was_not_handed_out() -> None:
    limits = EmbedLimits(max_images=2, target_bytes=10_000, max_item_bytes=10_000, limit_name="x")
    grouper = Grouper(iter(range(5)), lambda _: 6000, limits, lambda *_: None)
    assert grouper.take() == [0]  # 1 did not fit: carried to the next group
    assert list(grouper.rest()) == [1, 2, 3, 4]


def test_config_refuses_files_larger_than_a_message() -> None:
    with pytest.raises(ConfigError, match="max_file_bytes must be <= max_message_bytes"):
        SearchConfig(max_file_bytes=65 * MIB).validate()
    with pytest.raises(ConfigError, match="embed_batch_bytes"):
        SearchConfig(embed_batch_bytes=10).validate()


def test_client_search_calls_split_by_count_and_bytes() -> None:
    limits = Limits(max_message_bytes=8 * MIB, max_item_bytes=4 * MIB, max_queries=256)
    queries = [search_pb2.Query(id=f"q{i}") for i in range(300)]
    calls, oversize = search_calls(queries, limits)
    assert [len(c) for c in calls] == [256, 44] and not oversize
    images = [search_pb2.Query(image=bytes(n)) for n in (3 * MIB, 3 * MIB, 5 * MIB, 3 * MIB, 10)]
    calls, oversize = search_calls(images, limits)
    assert calls == [[0, 1], [3, 4]]  # 3 + 3 MiB fit one 8 MiB message, a third does not
    assert list(oversize) == [2] and "query 2 is 5242880 bytes" in oversize[2]


def test_client_limits_take_the_smaller_of_each() -> None:
    ours = Limits.local(64 * MIB)
    theirs = search_pb2.ServiceLimits(max_message_bytes=32 * MIB, max_item_bytes=8 * MIB)
    merged = ours.with_service(theirs)
    assert (merged.max_message_bytes, merged.max_item_bytes, merged.max_queries) == (
        32 * MIB,
        8 * MIB,
        256,
    )
    assert "service's limit" in (merged.too_big("x", 9 * MIB) or "")


def test_an_oversize_file_fails_locally_without_being_read(tmp_path: Path) -> None:
    huge = tmp_path / "huge.bmp"
    with huge.open("wb") as handle:  # sparse: 100 MB on paper, nothing on disk
        handle.truncate(100 * MIB)
    small = tmp_path / "small.jpg"
    small.write_bytes(b"\xff\xd8" + bytes(1000))
    items = [IngestItem(id="small", path=small), IngestItem(id="huge", path=huge)]
    limits = Limits.local(64 * MIB)
    stream = CallStream("c", IngestCall(0, items), 32, 3 * MIB, limits)
    requests = list(stream.requests())
    assert [item.id for r in requests for item in r.items] == ["small"]
    (failure,) = stream.local_failures
    assert (failure.id, failure.position, failure.code) == ("huge", 1, RESOURCE_EXHAUSTED)
    assert os.path.getsize(huge) == 100 * MIB
