"""The benchmark scripts run end to end at tiny sizes (real model, real services on 127.0.0.1,
real Milvus) and write JSON with the figures the lead reads; plus the vector-store bench's data
generator, exact search and size refusal as units. Timings at these sizes mean nothing: the
assertions are on counts, consistency between figures, and recall of exact search.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from embedder_fixtures import SERVED_DIM

from ris.search.indexing import nprobe_for
from ris.tools.synthetic_vectors import Dataset, MixtureDataset, exact_top_k, make_queries
from ris.tools.vector_mixture import fit_mixture, nn_distance_quantiles
from ris.tools.vector_store_sizing import INDEXES, estimate, loaded_bytes, plan_sizes

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
RUN_TIMEOUT_S = 240


def run_script(name: str, args: list[str], out: Path) -> dict[str, Any]:
    """Run scripts/<name> in its own process (it starts its own services) and read its JSON."""
    json_path = out / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args, "--json", str(json_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data: dict[str, Any] = json.loads(json_path.read_text())
    assert data["machine"]["cpus"] >= 1 and data["machine"]["when_utc"]
    return data


def photos(caltech: Path, classes: tuple[str, ...], per_class: int) -> list[str]:
    files = []
    for label in classes:
        files.extend(sorted((caltech / "train" / label).glob("*.jpg"))[:per_class])
    return [str(f) for f in files]


def test_bench_ingest_end_to_end(caltech: Path, model_path: Path, tmp_path: Path) -> None:
    images = photos(caltech, ("Leopards", "airplanes"), 4)
    data = run_script(
        "bench_ingest.py",
        ["--images", *images, "--limit", "8", "--model", str(model_path),
         "--raw-seconds", "1", "--raw-iters", "2", "--max-batch-size", "4",
         "--chunk-size", "4", "--ingest-batch-size", "4", "--repeats", "1"],
        tmp_path,
    )  # fmt: skip
    assert data["images"] == 8
    assert data["raw"]["images_per_s"] > 0 and data["raw"]["batch_size"] == 4
    naive = data["naive"]
    assert naive["images"] == naive["stored"] == 8  # one row inserted per image, all visible
    assert naive["infer_ms"]["p50"] > 0 and naive["insert_ms"]["p50"] > 0
    (run,) = data["end_to_end"]["runs"]
    assert run["stored"] == run["count_after"] == 8 and run["failed"] == 0
    assert run["augmentation_top_n"] == 3  # the headline: the server's default collection
    (plain,) = data["end_to_end_by_augmentation"]["top0"]["runs"]  # beside it, raw embeddings
    assert plain["augmentation_top_n"] == 0 and plain["stored"] == plain["count_after"] == 8
    assert run["service_embed_seconds"] > 0 and run["service_milvus_seconds"] > 0
    e2e = data["end_to_end"]["images_per_s"]
    assert data["ratios"]["e2e_to_raw"] == pytest.approx(e2e / data["raw"]["images_per_s"])
    assert data["ratios"]["e2e_to_naive"] == pytest.approx(e2e / naive["images_per_s"])
    met = data["targets"]["e2e_to_naive_met"]
    assert met == (data["ratios"]["e2e_to_naive"] >= 2.0)


@pytest.mark.parametrize("store", ["lite", pytest.param("server", marks=pytest.mark.milvus_server)])
def test_bench_search_levels_and_split(
    caltech: Path, model_path: Path, tmp_path: Path, store: str
) -> None:
    if store == "server":
        pytest.importorskip("milvus", reason="PyPI milvus (milvus-server) not installed")
    candidates = photos(caltech, ("Leopards", "Motorbikes", "sunflower"), 3)
    queries = sorted(str(p) for p in (caltech / "test").glob("*/*.jpg"))[:3]
    data = run_script(
        "bench_search.py",
        ["--images", *candidates, "--queries", *queries, "--model", str(model_path),
         "--store", store, "--concurrency", "1,2", "--requests", "6", "--duration", "20",
         "--warmup", "0.2", "--paired", "2"],
        tmp_path,
    )  # fmt: skip
    assert data["store"] == store
    assert data["ingest"]["stored"] == 9 and data["queries"] == 3
    direct = data["direct"]
    assert direct["requests"] == 6
    assert 0 < direct["embed_ms"]["p50"] <= direct["latency_ms"]["p50"]
    assert [level["concurrency"] for level in data["levels"]] == [1, 2]
    for level in data["levels"]:
        assert level["ok"] == level["requests"] == 6 and not level["errors"]
        assert level["item_errors"] == 0
        # every measured response carried the service's split, and each part fits in the total
        assert level["split_samples"] == level["ok"]
        assert 0 < level["embed_ms"]["p50"] <= level["latency_ms"]["p50"]
        assert 0 < level["milvus_ms"]["p50"] <= level["latency_ms"]["p50"]
    c1 = data["levels"][0]["latency_ms"]["p50"]
    ratio = data["ratios"]["c1_p50_over_direct_p50"]
    assert ratio == pytest.approx(c1 / direct["latency_ms"]["p50"])
    # paired: each Search followed by the same photo's direct path, differences pair by pair
    paired = data["paired_c1"]
    assert paired["pairs"] == 2
    assert paired["service_embed_ms"]["p50"] > 0 and paired["direct_embed_ms"]["p50"] > 0
    for key in ("embed_minus_direct_ms", "total_minus_direct_ms"):
        assert paired[key]["n"] == 2 and {"p50", "p90"} <= paired[key].keys()


def _vector_store_args(caltech: Path, model_path: Path, tmp_path: Path, store: str) -> list[str]:
    images = photos(caltech, ("Leopards", "Motorbikes", "airplanes", "accordion"), 4)
    return ["--images", *images, "--model", str(model_path), "--stores", store,
            "--sizes", "300", "--holdout", "4", "--queries", "8", "--nprobe", "4,16",
            "--ef", "16,64", "--cache-dir", str(tmp_path / "cache"),
            "--work-dir", str(tmp_path)]  # fmt: skip


def _check_vector_store(data: dict[str, Any], store: str, dim: int = SERVED_DIM) -> None:
    rows = data["results"]
    assert data["complete"] is True
    assert data["real_vectors"] == 16 and data["dim"] == dim and data["refused_sizes"] == []
    assert {(r["store"], r["index"]) for r in rows} == {
        (store, "FLAT"),
        (store, "IVF_FLAT"),
        (store, "HNSW"),
    }
    nlist = rows[1]["build_params"]["nlist"]
    assert [r["params"] for r in rows if r["index"] == "IVF_FLAT"] == [  # + the service default
        {"nprobe": p} for p in sorted({4, min(16, nlist), nprobe_for(nlist)})
    ]
    assert data["vectors"] == "mixture"
    assert set(data["nn_distance_quantiles"]) == {"real", "mixture"}
    assert [r["params"] for r in rows if r["index"] == "HNSW"] == [{"ef": 16}, {"ef": 64}]
    for r in rows:
        assert r["rows"] == 300 and r["queries"] == 8
        assert r["latency_ms"]["p50"] > 0 and 0 <= r["recall"] <= 1
        assert r["store_rss_mb"] > 50  # the store's process tree, measured after loading
    flat = next(r for r in rows if r["index"] == "FLAT")
    assert flat["recall"] == 1.0  # Milvus' exact search agrees with numpy's ground truth
    (verdict,) = data["verdict"]
    assert verdict["rows"] == 300 and verdict[store] is not None


def test_bench_vector_store_lite(caltech: Path, model_path: Path, tmp_path: Path) -> None:
    """At GeM pooling, as the 1M runs (2048-d instead of the served default's 3048)."""
    args = [*_vector_store_args(caltech, model_path, tmp_path, "lite"), "--pooling", "gem"]
    data = run_script("bench_vector_store.py", args, tmp_path)
    _check_vector_store(data, "lite", dim=2048)
    assert list((tmp_path / "cache").glob("embeddings-*.npy"))  # real vectors cached


@pytest.mark.milvus_server
def test_bench_vector_store_server(caltech: Path, model_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("milvus", reason="PyPI milvus (milvus-server) not installed")
    data = run_script(
        "bench_vector_store.py",
        _vector_store_args(caltech, model_path, tmp_path, "server"),
        tmp_path,
    )
    _check_vector_store(data, "server")


@pytest.mark.milvus_server
def test_bench_service_scale(model_path: Path, tmp_path: Path) -> None:
    """The whole service on a prefilled augmented collection beside a small one, alternating;
    at the pooling the 1M run uses (2048-d GeM: the mixture is fitted at the served dimension),
    1,500 rows so the prefill's last chunk is a partial one."""
    pytest.importorskip("milvus", reason="PyPI milvus (milvus-server) not installed")
    args = ["--rows", "1500", "--rounds", "2", "--ingest", "3", "--queries", "3",
            "--fit-photos", "16", "--pooling", "gem", "--model", str(model_path),
            "--cache-dir", str(tmp_path / "cache"), "--work-dir", str(tmp_path)]  # fmt: skip
    data = run_script("bench_service_scale.py", args, tmp_path)
    assert data["complete"] is True and data["prefill"]["rows"] == 1500
    prefill = data["prefill"]
    assert set(prefill["reindex_pending_rows"]) == {"scale_large__raw", "scale_large"}
    assert prefill["knn_buckets"] == 1 and prefill["knn_recall_vs_exact"] == 1.0  # one bucket
    rounds = data["rounds"]
    assert [(r["round"], r["collection"]) for r in rounds] == [
        (0, "scale_large"), (0, "scale_small"), (1, "scale_small"), (1, "scale_large"),
    ]  # fmt: skip
    assert [r["rows"] for r in rounds] == [1503, 3, 6, 1506]  # prefill + every photo stored
    for r in rounds:
        assert r["ingest"]["images"] == 3 and r["search"]["latency_ms"]["n"] == 3
        assert r["search_rss_mb"] > 0 and r["milvus_rss_mb"] > 0
    assert data["scale_large"]["search_p50_ms"] > 0
    assert data["memory"]["dim"] == 2048 and 0 < data["memory"]["need_gib"] < 5


@pytest.mark.milvus_server
def test_bench_search_consistency(model_path: Path, tmp_path: Path) -> None:
    """Two search services over one Milvus, one reading Strong, one Session, interleaved: every
    query answered by both, with the same ranking (nothing is written meanwhile)."""
    pytest.importorskip("milvus", reason="PyPI milvus (milvus-server) not installed")
    args = ["--ingest", "6", "--queries", "4", "--rounds", "1", "--time-tick-ms", "50",
            "--model", str(model_path), "--work-dir", str(tmp_path)]  # fmt: skip
    data = run_script("bench_search_consistency.py", args, tmp_path)
    assert data["complete"] is True and data["collection_rows"] == 6
    assert data["calls_per_level"] == 4 and data["same_ranking_fraction"] == 1.0
    assert {level: stats["n"] for level, stats in data["latency_ms"].items()} == {
        "Strong": 4,
        "Session": 4,
    }


# -- units of the vector-store bench -----------------------------------------------------------


def _base(count: int = 20, dim: int = 64) -> np.ndarray:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((count, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_dataset_is_real_rows_then_noisy_unit_copies_regenerated_identically() -> None:
    base = _base()
    data = Dataset(base, size=2500, noise=0.5, seed=3)
    chunks = list(data.chunks())
    assert [len(ids) for ids, _ in chunks] == [1000, 1000, 500]
    ids, vectors = chunks[0]
    assert ids[0] == 0 and ids[-1] == 999
    np.testing.assert_array_equal(vectors[: len(base)], base)  # the real vectors come first
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    again = data.chunk(1)[1]
    np.testing.assert_array_equal(again, chunks[1][1])  # same chunk, same rows, every pass
    # noisy copies stay near a real vector (noise norm 0.5 -> cosine ~0.9), not uniform noise
    nearest = (chunks[2][1] @ base.T).max(axis=1)
    assert nearest.min() > 0.75
    other_seed = Dataset(base, size=2500, noise=0.5, seed=4).chunk(1)[1]
    assert not np.array_equal(other_seed, again)


def test_exact_top_k_matches_brute_force_over_all_rows() -> None:
    base = _base()
    data = Dataset(base, size=2300, noise=0.5, seed=1)
    queries = make_queries(base[:3], 5, noise=0.3, seed=1)
    everything = np.concatenate([v for _, v in data.chunks()])
    expected = np.argsort(-(queries @ everything.T), axis=1)[:, :10]
    np.testing.assert_array_equal(exact_top_k(data, queries, 10), expected)


def test_mixture_rows_are_unit_seeded_and_as_crowded_as_the_real_ones() -> None:
    """The mixture fitted to clustered 'real' vectors: real rows first, unit-length draws,
    chunk c identical on regeneration, and nearest-neighbour distances like the real set's
    (a plain isotropic Gaussian would be far sparser)."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((8, 256))
    real = np.concatenate([c + 0.4 * rng.standard_normal((60, 256)) for c in centres])
    real = (real / np.linalg.norm(real, axis=1, keepdims=True)).astype(np.float32)
    mixture = fit_mixture(real, dims=32, components=8, seed=0)
    data = MixtureDataset(real, size=2100, mixture=mixture, seed=2)
    ids, first = data.chunk(0)
    assert ids[0] == 0 and len(ids) == 1000
    np.testing.assert_array_equal(first[: len(real)], real)
    _, again = MixtureDataset(real, 2100, mixture, seed=2).chunk(1)
    np.testing.assert_array_equal(data.chunk(1)[1], again)
    np.testing.assert_allclose(np.linalg.norm(again, axis=1), 1.0, atol=1e-5)
    got = nn_distance_quantiles(mixture.sample(len(real), np.random.default_rng(1)))
    want = nn_distance_quantiles(real)
    noise = rng.standard_normal(real.shape)
    sparse = nn_distance_quantiles(noise / np.linalg.norm(noise, axis=1, keepdims=True))
    assert abs(got["q50"] - want["q50"]) < 0.15 * want["q50"]
    assert sparse["q50"] > 1.3 * want["q50"]  # the check can tell a wrong distribution apart


def test_memory_estimate_follows_the_index() -> None:
    sq8 = estimate(1_000_000, 2048, ["server"], ["IVF_SQ8"])
    flat = estimate(1_000_000, 2048, ["server"], ["FLAT"])
    assert sq8["loaded_index_gib"]["IVF_SQ8"] == pytest.approx(1.92, abs=0.02)
    assert flat["loaded_index_gib"]["FLAT"] == pytest.approx(7.64, abs=0.02)
    assert sq8["peak_memory_gib"] < 6.5 < flat["peak_memory_gib"] < 14
    # loaded, once built: 8.1 GiB was measured for a million 2048-d HNSW rows
    assert 8.1 < loaded_bytes("HNSW", 1_000_000, 2048) / 2**30 < 8.8


def test_sizes_that_do_not_fit_are_refused_unless_forced() -> None:
    args = argparse.Namespace(
        store_list=["lite", "server"], indexes=list(INDEXES), queries=200, search_seconds=120
    )
    est = estimate(1_000_000, 2048, args.store_list, args.indexes)
    assert est["raw_vectors_gib"] == pytest.approx(7.63, abs=0.01)
    available = 10 * 2**30
    run, refused = plan_sizes([10_000, 1_000_000], 2048, args, available, force=False)
    assert (run, refused) == ([10_000], [1_000_000])
    run, refused = plan_sizes([10_000, 1_000_000], 2048, args, available, force=True)
    assert (run, refused) == ([10_000, 1_000_000], [])
