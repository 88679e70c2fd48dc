#!/usr/bin/env bash
# The client as a library's user gets it, in a fresh virtualenv made the way scripts/quickstart.sh
# makes its own (scripts/venv.sh), from the interpreter given: `pip install .` with the
# dependency floors pinned (pyproject's ranges must hold at their low ends), then the stubs,
# the numpy and Pillow paths and the `ris` entry point. CI runs it with Debian's own
# /usr/bin/python3, which is externally managed (PEP 668): nothing may be installed into it.
# Usage: .ci/client_venv.sh PYTHON VENV_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=$1
VENV=$2
# The floors of [project] dependencies in pyproject.toml (grpcio/protobuf: what the stubs need).
FLOORS=(grpcio==1.85.1 protobuf==7.35.1 numpy==1.26.4 pillow==11.3.0 tqdm==4.66.0)

managed=$("$BASE" -c 'import pathlib, sysconfig
print(pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED").exists())')
echo "$BASE: $("$BASE" --version), externally managed (PEP 668): $managed"
rm -rf "$VENV"
env -u PYTHON RIS_PYTHON="$BASE" RIS_VENV="$VENV" scripts/venv.sh
rm -rf build  # setuptools reuses build/lib: a module deleted since would still reach the wheel
"$VENV/bin/python" -m pip install -q . "${FLOORS[@]}"
"$VENV/bin/ris" --help >/dev/null
# From outside the checkout: what the wheel installed, not the folders beside it.
cd /tmp
"$VENV/bin/python" - "${FLOORS[@]}" <<'PYEOF'
import io
import sys
from importlib.metadata import distribution, version
from importlib.util import find_spec

import numpy as np
from PIL import Image

from ris.client import convert
from ris.api import search_pb2
from ris.cli.results_page import thumbnail

for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    assert version(name) == wanted, (name, version(name), wanted)
query = convert.to_query(np.linspace(0, 1, 8))
assert search_pb2.Query.FromString(query.SerializeToString()) == query
png = io.BytesIO()
Image.new("RGB", (300, 200), (10, 20, 30)).save(png, format="PNG")
assert thumbnail(png.getvalue(), size=96).size == (96, 64)
# One namespace: nothing generic at the top of site-packages (a user's own client.py must
# not shadow ours).
top = {f.parts[0] for f in distribution("ris").files or []}
top = {t for t in top if t != ".." and not t.endswith(".dist-info") and t != "__pycache__"}
assert top == {"ris"}, f"the wheel installs {sorted(top)} at the top of site-packages"
server_side = [m for m in ("onnxruntime", "pymilvus", "torch", "grpc_health") if find_spec(m)]
assert not server_side, f"the client alone installed {server_side}"
print(f"client ok on {sys.executable} ({sys.version.split()[0]}) at the floors {sys.argv[1:]}")
PYEOF
