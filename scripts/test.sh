#!/usr/bin/env bash
# The test command: lint, formatting, types, then the whole test suite (extra args go to pytest).
# Needs the dev extra (pip install -e '.[server,export,dev]'); exports the model if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

phase() {
  local name=$1
  shift
  local start=$SECONDS
  echo "== $name: $*"
  "$@"
  echo "== $name: ok in $((SECONDS - start))s"
}

phase lint "$PY" -m ruff check .
phase format "$PY" -m ruff format --check .
phase types "$PY" -m mypy client embedder_service search_service scripts tests
phase model scripts/ensure_model.sh

start=$SECONDS
echo "== tests: $PY -m pytest -q $*"
set +e
"$PY" -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "== tests: no tests were collected: that is a failure" >&2
  exit 1
fi
echo "== tests: exit $rc in $((SECONDS - start))s"
exit "$rc"
