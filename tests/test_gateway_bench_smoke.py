"""scripts/bench_http.py end to end, tiny: `ris serve --http-port` under `ulimit -n 1024`,
a second each of 2 concurrent HTTP searchers and of its gRPC baseline (interleaved, 2 rounds
each), 20 idle connections; its table and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_http_runs_and_reports(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench_http.json"
    args = ["--duration", "1", "--clients", "2", "--idle", "20", "--json", str(out)]
    result = subprocess.run(
        [sys.executable, "scripts/bench_http.py", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resets" in result.stdout and "idle check" in result.stdout
    assert "HTTP/gRPC" in result.stdout
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    http, grpc = row["http"], row["grpc"]
    assert row["clients"] == 2 and http["resets"] == 0 and http["ok"] > 0
    assert grpc["resets"] == 0 and grpc["errors"] == 0 and grpc["ok"] > 0
    assert len(http["rounds"]) == len(grpc["rounds"]) == 2
    assert row["qps_ratio_http_over_grpc"] > 0 and row["p50_ratio_http_over_grpc"] > 0
    assert data["idle"]["idle_still_open"] == 20 and data["idle"]["grpc_ingest_ok"]
    assert data["idle"]["http_search_status"] == "200"
