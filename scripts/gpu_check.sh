#!/usr/bin/env bash
# The GPU check of the embedder (issue 20); docs/benchmarks.md "GPU check" gives the device calls.
#   scripts/gpu_check.sh --prepare [--dry-run]       here: wheels, fp16 model, photos, fp32 CPU
#                                                    references -> .gpu_carry/part-NN/ (56 MiB each)
#   scripts/gpu_check.sh --prepare-wheels DIR        here: only pip download the carried wheels
#   scripts/gpu_check.sh --stage                     device: keep this call's part for the last call
#   scripts/gpu_check.sh [--dry-run] [OUT]           the check; results in OUT (default $OUT)
# PYTHON picks the interpreter (default python3: on the GPU machine, the one with torch).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# The GPU machine has a bare copy of the checkout, ris not installed: import it from the
# namespace's link tree (what the wheel would install), built by scripts/typecheck.py.
if ! "$PY" -c "import ris.tools" 2>/dev/null; then
  TREE=$("$PY" "$ROOT/scripts/typecheck.py" --links-only)
  export PYTHONPATH="$TREE${PYTHONPATH:+:$PYTHONPATH}"
fi
case "${1:-}" in
  --prepare) shift; exec "$PY" "$ROOT/scripts/gpu_check.py" prepare "$@" ;;
  --prepare-wheels) shift; exec "$PY" "$ROOT/scripts/gpu_check.py" prepare-wheels "$@" ;;
  --stage) shift; exec "$PY" "$ROOT/scripts/gpu_check.py" stage "$@" ;;
  *) exec "$PY" "$ROOT/scripts/gpu_check.py" run "$@" ;;
esac
