"""scripts/gpu_check.sh keeps working without a GPU: its dry run (CPU in place of CUDA and
TensorRT, the real fp16 model against fp32 CPU references, the real server on loopback) writes
the JSON and table the GPU run will; the bundle that carries it to the GPU machine in parts is
reassembled bit for bit, names its missing parts and refuses a corrupt one; and a phase past
its limit is killed with everything it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ris.tools.gpu_check.bundle import BundleError, assemble, find_parts, stage, write_bundle
from ris.tools.gpu_check.check import run_phase

ROOT = Path(__file__).resolve().parent.parent
DRY_RUN_LIMIT_S = 60


def test_dry_run_writes_the_gpu_runs_json_and_table(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    proc = subprocess.run(
        ["scripts/gpu_check.sh", "--dry-run", "--work", str(tmp_path / "work"),
         "--model", str(model_path), str(out)],
        cwd=ROOT, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
        timeout=DRY_RUN_LIMIT_S + 30,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + log[-3000:]
    assert elapsed < DRY_RUN_LIMIT_S
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["dry_run"] is True and data["complete"] is True
    assert data["elapsed_s"] <= data["budget_s"]
    bundle = data["bundle"]
    assert bundle["parts"] >= 2  # the model alone spans several dry-run parts: reassembled
    assert bundle["manifest"]["model"] == "resnet50.fp16.onnx"
    assert bundle["manifest"]["reference_model"] == "resnet50.onnx"
    assert data["install"] is None  # a dry run carries no wheels
    phases = data["phases"]
    assert list(phases) == ["env", "cuda", "decode", "service", "tensorrt"]
    for name, phase in phases.items():
        assert phase["status"] == "ok" and phase["rc"] == 0, (name, phase)
        assert phase["seconds"] <= phase["limit_s"] + 1

    plan = data["plan"]
    cuda = phases["cuda"]
    cpu = "CPUExecutionProvider"
    assert cuda["provider"] == {**cuda["provider"], "expected": cpu, "active": cpu, "ok": True}
    assert cuda["provider"]["session_providers"] == [cpu]
    assert cuda["provider"]["precision"] == "fp16"
    accuracy = cuda["accuracy"]
    assert accuracy["images"] == 4 and accuracy["finite"] and accuracy["ok"]
    # fp16 against fp32: close, and not the same model compared with itself
    assert 0.999 <= accuracy["cosine_min"] < 1 - 1e-9
    assert [row["batch"] for row in cuda["raw"]] == plan["raw_batches"]
    for row in cuda["raw"]:
        assert row["images_per_s"] == pytest.approx(row["batch"] * 1000 / row["median_ms"])
        assert row["device_resident"]["images_per_s"] > 0 and row["iterations"] >= 1
    assert [s["batch"] for s in cuda["new_shape"]] == plan["new_shapes"]

    decode = phases["decode"]
    assert decode["images"] >= 1 and decode["one_thread_ms_per_image"] > 0
    assert set(decode["pool"]) == {"thread", "process"}

    service = phases["service"]
    assert [[lv["concurrency"], lv["batch"]] for lv in service["levels"]] == plan["service_levels"]
    for level in service["levels"]:
        assert level["ok"] == level["requests"] > 0 and not level["errors"]
        assert level["item_errors"] == 0 and level["images_per_s"] > 0
    assert "raw_after" not in service  # a GPU run only: it repeats raw ORT after the levels
    assert service["config"]["provider"] == "cpu" and service["start_s"] > 0

    trt = phases["tensorrt"]
    assert trt["stand_in"] == "cpu" and trt["provider"]["ok"] and trt["accuracy"]["ok"]
    assert trt["build"]["total_s"] > 0 and trt["reuse"]["total_s"] > 0
    assert trt["cache_reuse_speedup"] == pytest.approx(
        trt["build"]["total_s"] / trt["reuse"]["total_s"]
    )

    checks = {c["name"]: c for c in data["checks"]}
    assert checks["CPU stand-in provider first in session"]["ok"] is True
    assert checks["fp16 (CPU stand-in) vs fp32 CPU, min cosine"]["ok"] is True
    ratio = checks[f"service best / raw ORT at batch {plan['service_batch']}"]
    best = max(lv["images_per_s"] for lv in service["levels"])
    raw = next(r for r in cuda["raw"] if r["batch"] == plan["service_batch"])
    assert ratio["value"] == pytest.approx(best / raw["images_per_s"])
    assert ratio["ok"] == (ratio["value"] >= 0.8)
    assert checks["service images/s end to end (best level)"]["ok"] is None  # no target on CPU
    summary = data["summary"]
    assert 0 < summary["decode_share_serial"] < 1

    table = (out / "gpu_check.txt").read_text()
    assert table.strip() in proc.stdout  # printed last, and kept
    assert "DRY RUN" in table and "complete: True" in table
    for name in phases:
        assert f"\n{name} " in table
    assert table.count("PASS") >= 4


def _files(root: Path, sizes: dict[str, int]) -> list[tuple[Path, str]]:
    rng = np.random.default_rng(0)
    members = []
    for name, size in sizes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.bytes(size))
        members.append((path, name))
    return members


def test_bundle_parts_reassemble_name_the_missing_and_refuse_corruption(tmp_path: Path) -> None:
    members = _files(tmp_path / "src", {"models/m.onnx": 2_500_000, "photos/a.jpg": 70_000})
    carry, stage_dir = tmp_path / "carry", tmp_path / "stage"
    index = write_bundle(carry, members, part_bytes=1 << 20)
    assert index["parts"] == 3 and index["members"] == ["models/m.onnx", "photos/a.jpg"]
    assert all((carry / f"part-{i:02d}" / "parts.json").exists() for i in range(3))

    # one device call per part: each stages its part; the last finds them all
    staged = None
    for i in range(3):
        call = tmp_path / f"call{i}"
        (call / f"part-{i:02d}").parent.mkdir()
        (carry / f"part-{i:02d}").rename(call / f"part-{i:02d}")
        staged = stage(call, stage_dir)
        assert staged is not None and sorted(staged.found) == list(range(i + 1))
        assert staged.missing == list(range(i + 1, 3))
    assert staged is not None and staged.complete
    dest = assemble(staged, tmp_path / "bundle")
    for path, name in members:
        assert (dest / name).read_bytes() == path.read_bytes()

    # a missing part is named, and nothing is extracted
    partial = find_parts([tmp_path / "call0", tmp_path / "call2"])
    assert partial is not None and partial.missing == [1]
    with pytest.raises(BundleError, match=r"missing \[1\]"):
        assemble(partial, tmp_path / "never")
    assert not (tmp_path / "never").exists()

    # a changed byte in one part fails that part's checksum
    part1 = stage_dir / "part-01" / "bundle.01"
    data = bytearray(part1.read_bytes())
    data[100] ^= 0xFF
    part1.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="part 1 is corrupt"):
        assemble(staged, tmp_path / "bad")

    # a newer bundle carried in this call wins over stale staged parts of an older one
    newer = write_bundle(tmp_path / "new", _files(tmp_path / "src2", {"x": 10}), 1 << 20)
    found = find_parts([tmp_path / "new", stage_dir])
    assert found is not None and found.bundle == newer["bundle"] and found.complete


def test_missing_parts_stop_the_run_with_their_numbers(tmp_path: Path) -> None:
    carry = tmp_path / "carry"
    write_bundle(carry, _files(tmp_path / "src", {"big": 2_200_000}), part_bytes=1 << 20)
    (carry / "part-02" / "parts.json").unlink()  # part 2 never arrived
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "run", "--carry-dir", str(carry),
         "--stage-dir", str(tmp_path / "stage"), "--work", str(tmp_path / "work"), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "missing [2]" in proc.stderr
    data = json.loads((out / "gpu_check.json").read_text())
    assert "missing [2]" in data["bundle"]["error"] and data["complete"] is False


def _state(pid: int) -> str:
    """The process' state letter, or "gone" (a killed orphan may linger as a zombie)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return "gone"
    return next(line.split()[1] for line in status.splitlines() if line.startswith("State:"))


def test_a_phase_past_its_limit_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    log = tmp_path / "log"
    started = time.monotonic()
    status, rc, seconds = run_phase("hang", [sys.executable, "-c", script], 2.0, log, {})
    assert status == "timeout" and rc is None
    assert 2.0 <= seconds < 10 and time.monotonic() - started < 10
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _state(child) not in ("gone", "Z") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(child) in ("gone", "Z")
    assert "== hang: timeout" in log.read_text()
