"""`ris` end to end, as a user runs it: `ris serve` in a subprocess (embedder + search service on
Milvus Lite), then `ris ingest` of a folder of real photos, `ris search` writing the results
page, `ris collections`, `ris demo --use-running`, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from embedder_fixtures import SERVED_DIM
from PIL import Image

from ris.client import RisClient
from ris.tools.harness import free_port

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("Leopards", "Motorbikes", "accordion", "airplanes")
PER_CLASS = 5


def ris(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RIS_RETRIES": "3"}
    return subprocess.run(
        [sys.executable, "-m", "ris.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port, embedder_port = free_port(), free_port()
    milvus = tmp_path_factory.mktemp("milvus") / "ris.db"
    log = (tmp_path_factory.mktemp("log") / "serve.log").open("w+")
    cmd = [sys.executable, "-m", "ris.cli", "serve", "--port", str(port)]
    cmd += ["--embedder-port", str(embedder_port), "--model", str(model_path)]
    cmd += ["--provider", "cpu", "--milvus-uri", str(milvus)]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    address = f"127.0.0.1:{port}"
    try:
        with RisClient(address=address) as client:
            client.wait_ready(timeout=180)
        yield address
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.seek(0)
        print(log.read())  # shown by pytest when a test fails
        log.close()


@pytest.fixture(scope="module")
def photos(caltech: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 real photos, one folder per class (the label), plus a text file to be ignored."""
    folder = tmp_path_factory.mktemp("photos")
    for cls in CLASSES:
        (folder / cls).mkdir()
        for i in range(1, PER_CLASS + 1):
            name = f"image_{i:04d}.jpg"
            shutil.copy(caltech / "train" / cls / name, folder / cls / name)
    (folder / "README.txt").write_text("not an image")
    return folder


def test_cli_end_to_end(server: str, photos: Path, caltech: Path, tmp_path: Path) -> None:
    conn = ["--address", server]
    done = ris("ingest", "e2e", str(photos), "--chunk-size", "8", "--no-progress", *conn)
    assert done.returncode == 0, done.stderr
    assert f"{len(CLASSES) * PER_CLASS} stored, 0 failed" in done.stdout

    listed = ris("collections", "list", *conn)
    assert listed.returncode == 0, listed.stderr
    assert f"e2e: {len(CLASSES) * PER_CLASS} items, dim {SERVED_DIM}, COSINE" in listed.stdout

    queries = [caltech / "test" / cls / "image_0011.jpg" for cls in ("Leopards", "airplanes")]
    out = tmp_path / "results"
    found = ris("search", "e2e", *map(str, queries), "-k", "5", "--out", str(out), *conn)
    assert found.returncode == 0, found.stderr
    assert f"results page: {out / 'index.html'}" in found.stdout
    page = (out / "index.html").read_text()
    for cls in ("Leopards", "airplanes"):
        # the query's own class fills the top of its row: its training photos are on the page
        assert page.count(f"{photos / cls}/image_") >= 3, cls
    assert "score " in page and page.count("<figure>") == 2 * (1 + 5)
    with Image.open(out / "contact_sheet.png") as sheet:
        sheet.verify()
    assert len(list((out / "images").glob("*.jpg"))) == 2 * (1 + 5)

    as_json = ris("search", "e2e", str(queries[0]), "-k", "3", "--json", "--no-page", *conn)
    assert as_json.returncode == 0, as_json.stderr
    [result] = json.loads(as_json.stdout)
    assert [h["label"] for h in result["hits"]][:2] == ["Leopards", "Leopards"]

    by_id = ris(
        "search",
        "e2e",
        "Motorbikes/image_0001.jpg",
        "--by-id",
        "--exclude-self",
        "-k",
        "3",
        "--json",
        "--no-page",
        *conn,
    )
    hits = json.loads(by_id.stdout)[0]["hits"]
    assert hits[0]["label"] == "Motorbikes" and "Motorbikes/image_0001.jpg" not in [
        h["id"] for h in hits
    ]

    described = ris("collections", "describe", "e2e", "--json", *conn)
    assert json.loads(described.stdout)["count"] == len(CLASSES) * PER_CLASS

    demo_out = tmp_path / "demo"
    demo_args = ["demo", "--use-running", "--data", str(photos / "accordion")]
    demo_args += ["--collection", "demo_e2e", "--out", str(demo_out)]
    demo = ris(*demo_args, *conn)
    assert demo.returncode == 0, demo.stderr
    assert (demo_out / "index.html").is_file() and "results page:" in demo.stdout
    assert f"ingested into demo_e2e: {PER_CLASS} stored" in demo.stdout
    again = ris(*demo_args, *conn)
    assert again.returncode == 0, again.stderr
    assert f"already holds all {PER_CLASS} images" in again.stdout

    for name in ("e2e", "demo_e2e"):
        assert ris("collections", "drop", name, *conn).returncode == 0
    gone = ris("collections", "describe", "e2e", *conn)
    assert gone.returncode == 1 and "NOT_FOUND" in gone.stderr


def test_cli_reports_unreachable_server_without_traceback() -> None:
    result = ris("collections", "list", "--address", f"127.0.0.1:{free_port()}", "--retries", "2")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr and "Traceback" not in result.stderr


def test_cli_help_needs_no_server_packages() -> None:
    code = (
        "import sys; from ris.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "roots = {'torch', 'onnxruntime', 'pymilvus', 'prometheus_client'}\n"
        "rooms = ('ris.embedder', 'ris.search', 'ris.common.grpc_server')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in roots or m.startswith(rooms)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip().endswith("[]")


def test_serve_without_the_server_extra_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "for name in ('onnxruntime', 'grpc_health', 'pymilvus'):\n"
        "    sys.modules[name] = None  # as if the server extra were not installed\n"
        "from ris.cli.main import main\n"
        "sys.exit(main(['serve', '--port', '0', '--embedder-port', '0']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'ris[server]'" in result.stderr and "Traceback" not in result.stderr
