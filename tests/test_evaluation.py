"""Retrieval metrics on hand-computed cases, CSV parsing, one small eval through the services."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from ris.tools.evaluation import (
    add_arguments,
    average_precision_at_k,
    hit_ratio,
    read_candidates,
    read_queries,
    recall_at_k,
    relevant_sets,
    score_rankings,
    towhee_ap,
)

# ranked a x b y c with relevant {a, b, c, d}: hits at ranks 1, 3, 5 -> precisions 1, 2/3, 3/5.
RANKED = ["a", "x", "b", "y", "c"]
RELEVANT = {"a", "b", "c", "d"}
PREC_SUM = 1 + 2 / 3 + 3 / 5


def test_towhee_ap_divides_by_hits() -> None:
    assert towhee_ap(RANKED, RELEVANT, k=5) == pytest.approx(PREC_SUM / 3)


def test_standard_ap_divides_by_min_k_relevant() -> None:
    assert average_precision_at_k(RANKED, RELEVANT, k=5) == pytest.approx(PREC_SUM / 4)
    # k smaller than the relevant count: the divisor is k.
    assert average_precision_at_k(RANKED, RELEVANT, k=3) == pytest.approx((1 + 2 / 3) / 3)


def test_single_early_hit_is_where_the_two_aps_differ() -> None:
    relevant = {f"r{i}" for i in range(10)}
    ranked = ["r0", *(f"n{i}" for i in range(9))]
    assert towhee_ap(ranked, relevant) == pytest.approx(1.0)
    assert average_precision_at_k(ranked, relevant) == pytest.approx(0.1)
    assert hit_ratio(ranked, relevant) == pytest.approx(0.1)


def test_perfect_list_scores_one_everywhere() -> None:
    relevant = {str(i) for i in range(10)}
    ranked = [str(i) for i in range(10)]
    assert towhee_ap(ranked, relevant) == 1.0
    assert average_precision_at_k(ranked, relevant) == 1.0
    assert hit_ratio(ranked, relevant) == 1.0
    assert recall_at_k(ranked, relevant, 1) == 1.0


def test_hits_beyond_k_and_misses() -> None:
    ranked = ["x", "y", "a"]
    assert towhee_ap(ranked, {"a"}, k=2) == 0.0
    assert hit_ratio(ranked, {"a"}, k=2) == 0.0
    assert recall_at_k(ranked, {"a"}, 2) == 0.0
    assert recall_at_k(ranked, {"a"}, 3) == 1.0
    assert towhee_ap(ranked, {"a"}, k=3) == pytest.approx(1 / 3)
    assert towhee_ap([], {"a"}) == 0.0
    assert average_precision_at_k(ranked, set()) == 0.0


def test_duplicate_ids_in_a_ranking_count_once() -> None:
    assert towhee_ap(["a", "a", "b"], {"a", "b"}, k=3) == pytest.approx((1 + 2 / 3) / 2)
    assert hit_ratio(["a", "a"], {"a", "b"}) == pytest.approx(0.5)


def test_score_rankings_averages_and_skips_queries_without_relevant() -> None:
    rankings = [RANKED, ["x", "a"], ["q"]]
    relevants = [RELEVANT, {"a"}, set()]
    s = score_rankings(rankings, relevants, k=5)
    assert s.n_scored == 2
    assert s.map_at_10_towhee == pytest.approx((PREC_SUM / 3 + 0.5) / 2)
    assert s.ap_at_10 == pytest.approx((PREC_SUM / 4 + 0.5) / 2)
    assert s.hit_ratio == pytest.approx((0.75 + 1.0) / 2)
    assert s.recall_at_1 == pytest.approx(0.5)
    assert s.recall_at_10 == pytest.approx(1.0)
    with pytest.raises(ValueError):
        score_rankings([RANKED], [])


def test_relevant_sets_by_label() -> None:
    sets = relevant_sets(["cat", "dog", "owl"], ["1", "2", "3"], ["cat", "dog", "cat"])
    assert sets == [{"1", "3"}, {"2"}, set()]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_paths_resolve_against_the_csv_folder(tmp_path: Path) -> None:
    sub = tmp_path / "data"
    sub.mkdir()
    cands = read_candidates(
        _write(sub / "c.csv", "id,path,label\n0,train/a.jpg,cat\n\n1,/abs/b.jpg, dog \n")
    )
    assert [(c.id, c.path, c.label) for c in cands] == [
        ("0", sub / "train" / "a.jpg", "cat"),
        ("1", Path("/abs/b.jpg"), "dog"),
    ]
    queries = read_queries(_write(sub / "q.csv", "path,label\ntest/a.jpg,cat\n"))
    assert [(q.path, q.label) for q in queries] == [(sub / "test" / "a.jpg", "cat")]


def test_csv_errors_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing column"):
        read_candidates(_write(tmp_path / "a.csv", "path,label\nx.jpg,cat\n"))
    with pytest.raises(ValueError, match="duplicate id"):
        read_candidates(_write(tmp_path / "b.csv", "id,path,label\n1,x.jpg,a\n1,y.jpg,b\n"))


def test_real_caltech_csvs_parse(caltech: Path) -> None:
    cands = read_candidates(caltech / "reverse_image_search.csv")
    queries = read_queries(caltech / "queries.csv")
    assert len(cands) == 1000 and len(queries) == 100
    assert all(c.path.exists() for c in cands[:5]) and queries[0].path.exists()
    rel = relevant_sets([q.label for q in queries], [c.id for c in cands], [c.label for c in cands])
    assert all(len(r) == 10 for r in rel)


def test_cli_arguments_defaults(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--candidates", "c.csv", "--queries", "q.csv"])
    assert args.top_k == 10 and args.keep is None and args.exist_ok is False
    args = parser.parse_args(
        ["--candidates", "c.csv", "--queries", "q.csv", "--keep", "--json", str(tmp_path / "o")]
    )
    assert args.keep is True and args.json == tmp_path / "o"
    assert json.dumps(vars(args), default=str)


# ---------------------------------------------------------------------------------------------
# Through the real services (search service over the real embedder and Milvus Lite).
# ---------------------------------------------------------------------------------------------

EVAL_CLASSES = 10
EVAL_PER_CLASS = 3
EVAL_QUERIES = 5
REPORT_KEYS = {"map_at_10_towhee", "ap_at_10", "hit_ratio", "recall_at_1", "latency_ms_p50"}


def _small_caltech(caltech: Path, out: Path) -> tuple[Path, Path]:
    """10 classes x 3 candidates and 5 queries, as CSVs pointing at the real photos."""
    cands = read_candidates(caltech / "reverse_image_search.csv")
    labels = list(dict.fromkeys(c.label for c in cands))[:EVAL_CLASSES]
    rows = ["id,path,label"]
    for label in labels:
        rows += [f"{c.id},{c.path},{label}" for c in cands if c.label == label][:EVAL_PER_CLASS]
    queries = [q for q in read_queries(caltech / "queries.csv") if q.label in labels]
    qrows = ["path,label", *(f"{q.path},{q.label}" for q in queries[:EVAL_QUERIES])]
    return _write(out / "cands.csv", "\n".join(rows) + "\n"), _write(
        out / "queries.csv", "\n".join(qrows) + "\n"
    )


def test_eval_through_the_services(
    search_server: Any, caltech: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ris.api import search_pb2, search_pb2_grpc
    from ris.tools.evaluation import run

    cands_csv, queries_csv = _small_caltech(caltech, tmp_path)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--address", search_server.address, "--candidates", str(cands_csv)]
    base += ["--queries", str(queries_csv), "--collection", "eval_test", "--no-progress"]

    out = tmp_path / "report.json"
    assert run(parser.parse_args([*base, "--json", str(out), "--keep"])) == 0
    report = json.loads(out.read_text())
    assert report.keys() >= REPORT_KEYS
    assert report["n_candidates"] == EVAL_CLASSES * EVAL_PER_CLASS
    assert report["n_queries"] == report["n_scored"] == EVAL_QUERIES
    assert report["ingest"]["stored"] == EVAL_CLASSES * EVAL_PER_CLASS
    assert report["ingest"]["failed"] == 0
    assert report["collection"]["count"] == EVAL_CLASSES * EVAL_PER_CLASS
    assert report["collection"]["dim"] == 2048 and report["collection"]["model_version"]
    for key in ("map_at_10_towhee", "ap_at_10", "hit_ratio", "recall_at_1"):
        assert 0.0 <= report[key] <= 1.0, key
    # Ten distinct Caltech classes: a working pipeline finds the right class first most times,
    # and with 3 relevant of 30 the hit ratio is at least the 10-of-30 chance level.
    assert report["recall_at_1"] >= 0.6
    assert report["map_at_10_towhee"] >= 0.6
    assert report["hit_ratio"] > 1 / 3
    assert report["ap_at_10"] <= report["map_at_10_towhee"] + 1e-9
    assert report["latency_ms_p50"] > 0
    assert "mAP@10 (Towhee)" in capsys.readouterr().out

    # Kept: a second run re-uses it (no ingest), refuses without --exist-ok, and leaves it.
    with grpc.insecure_channel(search_server.address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        assert run(parser.parse_args(base)) == 1
        assert run(parser.parse_args([*base, "--exist-ok", "--json", str(out)])) == 0
        again = json.loads(out.read_text())
        assert again["ingest"].get("skipped") is True
        assert again["map_at_10_towhee"] == pytest.approx(report["map_at_10_towhee"])
        assert run(parser.parse_args([*base, "--exist-ok", "--drop"])) == 0
        listed = stub.ListCollections(search_pb2.ListCollectionsRequest(), timeout=30)
        assert "eval_test" not in [c.name for c in listed.collections]


# ---------------------------------------------------------------------------------------------
# The offline study's descriptors and the copy-detection edits (ris.tools, pure numpy and PIL).
# ---------------------------------------------------------------------------------------------


def test_gem_spans_average_to_max_pooling() -> None:
    import numpy as np

    from ris.tools.pooled_features import gem, rmac, rmac_regions

    fm = np.random.default_rng(0).uniform(0.0, 2.0, size=(8, 7, 5))
    assert np.allclose(gem(fm, 1.0), fm.mean(axis=(1, 2)))
    assert np.allclose(gem(fm, 200.0), fm.max(axis=(1, 2)), rtol=0.02)
    regions = rmac_regions(7, 5)
    assert regions[0] == (0, 7, 0, 5)
    assert all(0 <= y0 < y1 <= 7 and 0 <= x0 < x1 <= 5 for y0, y1, x0, x1 in regions)
    assert rmac(fm).shape == (8,)


def test_pca_whitening_matches_the_covariance_eigenbasis() -> None:
    import numpy as np

    from ris.tools.descriptor_ops import Whitening, l2n

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 64)) + rng.normal(size=64)  # fewer samples than dimensions
    xn = l2n(x)
    mean = xn.mean(axis=0)
    val, vec = np.linalg.eigh(np.cov((xn - mean).T))
    order = np.argsort(val)[::-1][:10]
    expected = l2n((xn - mean) @ (vec[:, order] / val[order] ** 0.5))
    got = Whitening.fit(x, 10, power=0.5)(x)
    assert got.shape == (40, 10)
    assert np.allclose(np.abs(got), np.abs(expected), atol=1e-8)  # eigenvector signs are free


def test_query_expansion_and_dba_pull_towards_neighbours() -> None:
    import numpy as np

    from ris.tools.descriptor_ops import alpha_qe, dba, l2n, search

    db = l2n(np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    q = l2n(np.array([[1.0, 0.0, 0.05]]))
    expanded = alpha_qe(db, q, 1, 3.0)
    assert np.isclose(np.linalg.norm(expanded), 1.0)
    assert expanded[0] @ db[0] > q[0] @ db[0]  # moved towards its top neighbour
    augmented = dba(db, 1, 3.0)
    assert np.allclose(augmented[3], db[3], atol=0.05)  # no close neighbour: nearly unchanged
    idx, _ = search(db, q, 2, "cos")
    assert list(idx[0]) == [0, 1]
    idx, sim = search(db, q, 4, "l2")
    assert list(idx[0][:2]) == [0, 1] and sim[0][0] >= sim[0][1]


def test_copy_edits_are_deterministic_decodable_and_seeded() -> None:
    import io

    import numpy as np
    from PIL import Image

    from ris.tools.copy_edits import EDITS, make_copy

    buf = io.BytesIO()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    for edit in EDITS:
        first = make_copy(data, edit, 0, "k")
        assert make_copy(data, edit, 0, "k") == first, edit
        Image.open(io.BytesIO(first)).convert("RGB").load()
    assert make_copy(data, "crop", 0, "k") != make_copy(data, "crop", 1, "k")
    assert Image.open(io.BytesIO(make_copy(data, "resize", 0, "k"))).size[0] < 160
    assert Image.open(io.BytesIO(make_copy(data, "borders", 0, "k"))).size[0] > 160
