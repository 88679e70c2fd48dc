"""The near-duplicate guard (search_service/near_duplicates.py): its ranking rule, and the real
services with the gem_softmax embedder, where an edited copy's original loses to another class
without the guard and comes first, flagged, with it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from embedder_fixtures import embedder_config, running_embedder
from search_fixtures import running_search, search_config

from ris.client import IngestItem, RisClient
from ris.embedder.config import EmbedderConfig
from ris.search.near_duplicates import promote, visual_part
from ris.search.store_schema import Hit
from ris.tools.copy_edits import make_copy


def _hit(i: str, score: float) -> Hit:
    return Hit(i, score, "", "", {})


def test_near_duplicates_come_first_by_visual_similarity_the_rest_keep_their_order() -> None:
    dims = 2
    query = np.array([1.0, 0.0, 0.9])  # visual part [1, 0]; the last value is "semantic"
    stored = {
        "a": np.array([0.0, 1.0, 0.9]),  # visual 0: a look-alike by class only
        "b": np.array([0.8, 0.6, 0.0]),  # visual 0.8
        "c": np.array([0.6, 0.8, 0.1]),  # visual 0.6: below the threshold
        "d": np.array([5.0, 0.5, 0.0]),  # visual ~0.995 (scale does not matter)
    }
    hits = [_hit("a", 0.9), _hit("b", 0.8), _hit("c", 0.7), _hit("d", 0.6), _hit("e", 0.5)]
    out = promote(hits, query, stored, dims, threshold=0.7)
    assert [h.id for h in out] == ["d", "b", "a", "c", "e"]  # "e": no stored vector, kept
    assert [h.near_duplicate for h in out] == [True, True, False, False, False]
    assert [h.score for h in out] == [0.6, 0.8, 0.9, 0.7, 0.5]  # scores are not rewritten
    visual = [h.visual_score for h in out]
    assert visual[:4] == pytest.approx([0.995037, 0.8, 0.0, 0.6]) and visual[4] is None
    none_close = promote(hits, query, stored, dims, threshold=0.999)
    assert [h.id for h in none_close] == [h.id for h in hits]  # order kept
    assert not any(h.near_duplicate for h in none_close)
    np.testing.assert_allclose(visual_part([3.0, 4.0, 100.0], 2), [0.6, 0.8])


HEN, RIVAL = "n01514859_hen.JPEG", "n01833805_hummingbird.JPEG"


@pytest.fixture(scope="module")
def gallery(imagenet_sample: Path) -> list[tuple[str, Path]]:
    """The hen, the photo that outranks its edited copy in the gem_softmax space, and others."""
    with (imagenet_sample / "labels.csv").open(newline="") as fh:
        paths = [imagenet_sample / row["path"] for row in csv.DictReader(fh)]
    chosen = [p for p in paths if p.name in (HEN, RIVAL)] + paths[:10]
    return [(p.stem, p) for p in dict.fromkeys(chosen)]


def test_the_original_of_an_edited_copy_comes_first_only_with_the_guard(
    model_path: Path, gallery: list[tuple[str, Path]], tmp_path: Path
) -> None:
    hen = next(p for _, p in gallery if p.name == HEN)
    # The deterministic "combo" edit (crop, colour, text...) of the copy-detection benchmark.
    copy = make_copy(hen.read_bytes(), "combo", 0, "orig_0004")
    assert EmbedderConfig.pooling == "gem_softmax"  # the shipped default is what this serves
    config = embedder_config(model_path, pooling="gem_softmax", metrics_port=None)
    top: dict[float, list[tuple[str, float, bool]]] = {}
    with running_embedder(config) as embedder:
        for threshold in (0.0, 0.7):  # off, then the default
            search = search_config(
                embedder.address,
                str(tmp_path / f"guard-{threshold}.db"),
                near_duplicate_threshold=threshold,
            )
            with (
                running_search(search) as server,
                RisClient(address=server.address, timeout=120) as ris,
            ):
                ris.create_collection("photos", augmentation_top_n=0)
                items = [IngestItem(name, path=path) for name, path in gallery]
                assert ris.ingest("photos", items).stored == len(gallery)
                assert ris.describe_collection("photos").dim == 3048
                hits = ris.search("photos", copy, top_k=5, expansion=False).hits
                top[threshold] = [(h.id, h.score, h.near_duplicate) for h in hits]
    off, on = top[0.0], top[0.7]
    assert off[0][0] == Path(RIVAL).stem and off[1][0] == Path(HEN).stem  # the failure
    assert not any(flag for _, _, flag in off)
    assert on[0][0] == Path(HEN).stem and on[0][2]  # guarded: first, flagged
    assert on[0][1] < on[1][1]  # ranked above a higher-scoring look-alike, scores kept
    assert [h for h in on[1:] if h[2]] == []  # the rival is no near duplicate
    assert all(h.visual_score is not None for h in hits)  # every hit scored (depth 50 > 5)
    assert {h[0] for h in on} == {h[0] for h in off}  # re-ranked, nothing dropped or added


def test_the_lite_vector_cache_never_outlives_a_write() -> None:
    from ris.search.vector_cache import VectorCache

    cache = VectorCache(max_bytes=3 * 16)  # three 4-float vectors
    v = {i: np.full(4, float(n), np.float32) for n, i in enumerate("abcd")}
    before = cache.generation("c")
    cache.put_many("c", {"a": v["a"], "b": v["b"]}, before)
    found, missing = cache.get_many("c", ["a", "b", "x"])
    assert set(found) == {"a", "b"} and missing == ["x"]
    # A read that began before a write is not kept: the write's vector would be shadowed.
    started = cache.generation("c")
    cache.invalidate("c", ["a"])
    cache.put_many("c", {"a": v["a"]}, started)
    assert cache.get_many("c", ["a"]) == ({}, ["a"])
    # Bounded: the least recently used goes first.
    now = cache.generation("c")
    cache.get_many("c", ["b"])
    cache.put_many("c", {"c": v["c"], "d": v["d"]}, now)
    cache.put_many("c", {"a": v["a"]}, now)
    assert set(cache.get_many("c", ["a", "b", "c", "d"])[0]) == {"a", "c", "d"}
    cache.forget("c")
    assert cache.get_many("c", ["a", "c", "d"])[1] == ["a", "c", "d"]
    assert cache.get_many("other", ["a"])[1] == ["a"]  # per collection
