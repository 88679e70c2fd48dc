#!/usr/bin/env bash
# The test command: lint, formatting, types, then the whole test suite (extra args go to pytest).
# Needs the dev extra (scripts/quickstart.sh installs it); exports the model if missing.
# Runs in the same environment as scripts/quickstart.sh: $PYTHON when set (CI), else .venv
# (RIS_VENV), made when missing (see scripts/venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ris_venv
if ! "$PY" -c 'import pytest, ruff, mypy, ris.embedder, ris.search' 2>/dev/null; then
  ris_install  # a fresh .venv: what scripts/quickstart.sh would have installed
fi

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
phase types "$PY" scripts/typecheck.py
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
