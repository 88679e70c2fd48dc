"""The embedder serves image models with ONNX Runtime alone: `onnx` (the export side) is not
importable in these processes, as in an install of the `embedder` extra without `text`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Runs `python -m ris.embedder ARGS` with every `import onnx` failing.
_NO_ONNX = (
    "import runpy, sys; sys.modules['onnx'] = None; sys.argv[0] = 'ris.embedder'; "
    "runpy.run_module('ris.embedder', run_name='__main__', alter_sys=True)"
)
START_TIMEOUT_S = 120.0


def _embedder(model: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIS_")}
    command = [sys.executable, "-c", _NO_ONNX, "--model", str(model), "--port", "0", *args]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_image_model_serves_without_onnx(model_path: Path) -> None:
    process = _embedder(model_path, "--text-model", "off", "--metrics-port", "0")
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        lines = []
        for line in process.stdout:  # ends when the process exits
            lines.append(line)
            if line.startswith("embedder listening on") or time.monotonic() > deadline:
                break
        assert lines and lines[-1].startswith("embedder listening on"), "".join(lines)[-3000:]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_concepts_text_model_without_onnx_names_the_extra(model_path: Path) -> None:
    text_model = model_path.parent / "minilm"
    if not (text_model / "model.onnx").exists():
        pytest.fail(f"{text_model} missing: run python scripts/export_text_model.py")
    process = _embedder(model_path, "--text-model", str(text_model), "--metrics-port", "0")
    output, _ = process.communicate(timeout=START_TIMEOUT_S)
    assert process.returncode != 0, output[-3000:]
    assert "needs the onnx package" in output and "ris[text]" in output, output[-3000:]
