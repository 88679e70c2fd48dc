"""`ris demo` finds its collection filled under another model setting and rebuilds it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from ris.client import RisClient
from ris.search.indexing import plan_index
from ris.search.server import SearchServer
from ris.search.store_schema import CollectionMeta

ROOT = Path(__file__).resolve().parent.parent


def test_demo_rebuilds_a_collection_of_another_embedding_space(
    search_server: SearchServer, caltech: Path, tmp_path: Path
) -> None:
    model = search_server.embedder.model_info()
    weights = model.version.split("-")[0]
    name = f"demo_{uuid.uuid4().hex[:8]}"
    # As left by an earlier run whose embedder served the centre crop instead of squash.
    search_server.store.create_collection(
        CollectionMeta(
            name=name,
            dim=model.dim,
            metric="COSINE",
            index=plan_index("AUTOINDEX", {}, "AUTOINDEX"),
            model_name=model.name,
            model_version=f"{weights}-gem3-shorter_crop",
        )
    )
    data = caltech / "train" / "accordion"
    command = [sys.executable, "-m", "ris.cli", "demo", "--use-running"]
    command += ["--address", search_server.address, "--data", str(data)]
    command += ["--collection", name, "--out", str(tmp_path / "demo")]
    try:
        result = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "FAILED_PRECONDITION" in result.stdout and "shorter_crop" in result.stdout
        assert f"rebuilding the demo collection {name!r}" in result.stdout
        with RisClient(address=search_server.address) as ris:
            info = ris.describe_collection(name)
            assert info.model_version == model.version
            assert info.count == len(list(data.glob("*.jpg")))
    finally:
        with RisClient(address=search_server.address) as ris:
            ris.drop_collection(name)
