"""Whole-collection tools through the client and the `ris` CLI, against the real services
(embedder with the real model, search service on Milvus Lite, `ris.launcher.serve.Services` on
loopback): score thresholds, listing and export, folder sync, duplicates."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from embedder_fixtures import SERVED_DIM
from search_fixtures import live_client, serving

from ris.client import AsyncRisClient, ById, IngestItem, RisClient
from ris.launcher.serve import Services

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("Leopards", "Motorbikes", "accordion")
PER_CLASS = 3
COLLECTION = "tools_photos"


@pytest.fixture(scope="module")
def services(
    model_path: Path, folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    """Both services; server-side reads (item images) allowed inside ``folder`` only."""
    with serving(model_path, tmp_path_factory.mktemp("milvus"), allowed_roots=folder) as running:
        yield running


@pytest.fixture(scope="module")
def ris(services: Services) -> Iterator[RisClient]:
    with live_client(services.address) as client:
        yield client


def cli(services: Services, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ris.cli", *args, "--address", services.address],
        cwd=ROOT,
        env={**os.environ, "RIS_RETRIES": "3"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def folder(caltech: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PER_CLASS real photos per class, one subfolder per class."""
    root = tmp_path_factory.mktemp("photos")
    for cls in CLASSES:
        (root / cls).mkdir()
        for i in range(1, PER_CLASS + 1):
            name = f"image_{i:04d}.jpg"
            shutil.copy(caltech / "train" / cls / name, root / cls / name)
    return root


@pytest.fixture(scope="module")
def ingested(ris: RisClient, folder: Path) -> str:
    ris.create_collection(COLLECTION, exist_ok=True)
    summary = ris.ingest_folder(COLLECTION, folder)
    assert summary.stored == len(CLASSES) * PER_CLASS and summary.failed == 0
    return COLLECTION


# -- score threshold -----------------------------------------------------------------------


def test_min_score_sync_async_and_cli(ris: RisClient, services: Services, ingested: str) -> None:
    query = ById("Leopards/image_0001.jpg")
    full = ris.search(ingested, query, top_k=9, expansion=False, exclude_self=True)
    threshold = (full.hits[1].score + full.hits[2].score) / 2
    cut = ris.search(
        ingested, query, top_k=9, expansion=False, exclude_self=True, min_score=threshold
    )
    assert [h.id for h in cut.hits] == [h.id for h in full.hits[:2]]

    async def run() -> list[str]:
        async with AsyncRisClient(address=services.address, timeout=60) as aris:
            result = await aris.search(
                ingested, query, top_k=9, expansion=False, exclude_self=True, min_score=threshold
            )
            return [h.id for h in result.hits]

    assert asyncio.run(run()) == [h.id for h in cut.hits]
    shown = cli(
        services, "search", ingested, query.id, "--by-id", "--exclude-self", "--json",
        "--no-page", "--min-score", "0.99",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[0]["hits"] == []  # no other photo is that close


# -- listing and export --------------------------------------------------------------------


def test_iter_items_sync_and_async(ris: RisClient, services: Services, ingested: str) -> None:
    expected = sorted(ris_ids(ris, ingested))
    assert [i.id for i in ris.iter_items(ingested, page_size=2)] == expected
    with_vectors = list(ris.iter_items(ingested, page_size=4, include_vectors=True))
    assert all(len(i.vector or []) == SERVED_DIM for i in with_vectors)
    labelled = [i.id for i in ris.iter_items(ingested, labels=["accordion"], page_size=1)]
    assert labelled == [i for i in expected if i.startswith("accordion/")]

    async def run() -> list[str]:
        async with AsyncRisClient(address=services.address, timeout=60) as aris:
            return [i.id async for i in aris.iter_items(ingested, page_size=3)]

    assert asyncio.run(run()) == expected


def ris_ids(ris: RisClient, collection: str) -> list[str]:
    return [i.id for i in ris.get(collection, limit=1000)]


def test_export_cli_writes_jsonl(services: Services, ingested: str, tmp_path: Path) -> None:
    out = tmp_path / "export.jsonl"
    done = cli(services, "collections", "export", ingested, "--out", str(out), "--vectors")
    assert done.returncode == 0, done.stderr
    assert f"exported {len(CLASSES) * PER_CLASS} items" in done.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == sorted(r["id"] for r in records)
    assert len(records) == len(CLASSES) * PER_CLASS
    first = records[0]
    assert first["label"] == first["id"].split("/")[0] and len(first["vector"]) == SERVED_DIM
    assert not (tmp_path / "export.jsonl.partial").exists()


# -- folder sync ---------------------------------------------------------------------------


def _copy(caltech: Path, folder: Path, cls: str, numbers: range) -> None:
    (folder / cls).mkdir(parents=True, exist_ok=True)
    for i in numbers:
        name = f"image_{i:04d}.jpg"
        shutil.copy(caltech / "train" / cls / name, folder / cls / name)


def _synced_state(ris: RisClient, collection: str, folder: Path) -> dict[str, str]:
    """id -> stored hash of the items this folder's sync holds (asserting their metadata)."""
    from ris.cli.sync import HASH_KEY, ROOT_KEY, file_sha256

    root = str(folder.resolve())
    state = {}
    for item in ris.iter_items(collection, metadata={ROOT_KEY: root}):
        assert item.label == (item.id.split("/")[0] if "/" in item.id else "")
        state[item.id] = item.metadata[HASH_KEY]
    files = {p.relative_to(folder).as_posix(): file_sha256(p) for p in folder.rglob("*.jpg")}
    assert state == files  # exactly the folder: nothing missing, extra or stale
    return state


def test_sync_adds_updates_removes_and_is_idempotent(
    ris: RisClient, services: Services, caltech: Path, tmp_path: Path
) -> None:
    name, folder = "sync_basic", tmp_path / "album"
    _copy(caltech, folder, "Leopards", range(1, 4))
    _copy(caltech, folder, "accordion", range(1, 4))
    ris.create_collection(name)
    other = caltech / "train" / "airplanes" / "image_0001.jpg"
    ris.ingest(name, [IngestItem(id="elsewhere.jpg", path=other, label="x")])

    first = cli(services, "sync", name, str(folder), "--no-progress")
    assert first.returncode == 0, first.stderr
    assert "added 6, updated 0, removed 0, unchanged 0, failed 0" in first.stdout
    _synced_state(ris, name, folder)

    again = cli(services, "sync", name, str(folder), "--no-progress")
    assert "added 0, updated 0, removed 0, unchanged 6, failed 0" in again.stdout
    assert "nothing changed" in again.stdout

    # change the folder: 2 files gone, 1 replaced by another photo, 2 new, 1 corrupt
    (folder / "Leopards" / "image_0002.jpg").unlink()
    (folder / "accordion" / "image_0003.jpg").unlink()
    shutil.copy(
        caltech / "train" / "Leopards" / "image_0009.jpg", folder / "Leopards" / "image_0001.jpg"
    )
    _copy(caltech, folder, "Motorbikes", range(1, 3))
    before = ris.count(name)
    plan = cli(services, "sync", name, str(folder), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "plan: add 2, update 1, remove 2, unchanged 3" in plan.stdout
    assert "update  Leopards/image_0001.jpg" in plan.stdout
    assert "remove  accordion/image_0003.jpg" in plan.stdout
    assert ris.count(name) == before  # a dry run changes nothing

    (folder / "Motorbikes" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    done = cli(services, "sync", name, str(folder), "--no-progress")
    assert done.returncode == 1  # the broken file
    assert "added 2, updated 1, removed 2, unchanged 3, failed 1" in done.stdout
    assert "broken.jpg" in done.stderr
    (folder / "Motorbikes" / "broken.jpg").unlink()
    state = _synced_state(ris, name, folder)
    assert len(state) == 6 and ris.count(name) == 7  # + the item the sync did not write
    assert ris.get(name, ["elsewhere.jpg"])[0].label == "x"
    replaced = ris.search(  # raw: the stored blends of an augmented collection are not 1
        name, folder / "Leopards" / "image_0001.jpg", top_k=1, expansion=False, space="raw"
    )
    assert replaced.hits[0].id == "Leopards/image_0001.jpg" and replaced.hits[0].score > 0.99

    # an id stored by other means is not taken over unless asked
    shutil.copy(other, folder / "elsewhere.jpg")
    taken = cli(services, "sync", name, str(folder), "--no-progress")
    assert taken.returncode == 1 and "failed 1" in taken.stdout and "--adopt" in taken.stderr
    adopted = cli(services, "sync", name, str(folder), "--no-progress", "--adopt")
    assert "updated 1" in adopted.stdout and adopted.returncode == 0
    assert len(_synced_state(ris, name, folder)) == 7 and ris.count(name) == 7


def test_sync_killed_mid_run_then_rerun_is_exact(
    ris: RisClient, services: Services, caltech: Path, tmp_path: Path
) -> None:
    """SIGKILL once some of the adds are stored (one image per call), then run again: the
    final state is exactly the folder, the second run adds only what the first did not."""
    name, folder = "sync_killed", tmp_path / "album"
    _copy(caltech, folder, "Leopards", range(1, 7))
    _copy(caltech, folder, "airplanes", range(1, 7))
    ris.create_collection(name)
    ris.ingest(name, [IngestItem(id="keep.jpg", path=folder / "Leopards" / "image_0001.jpg")])
    cmd = [sys.executable, "-m", "ris.cli", "sync", name, str(folder), "--no-progress"]
    cmd += ["--items-per-call", "1", "--address", services.address]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stored_before_kill = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            stored_before_kill = ris.count(name) - 1
            if stored_before_kill >= 2:
                process.kill()
                break
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
    assert 2 <= stored_before_kill < 12, "the kill did not land mid-run"
    rerun = cli(services, "sync", name, str(folder), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    added = int(rerun.stdout.split("added ")[1].split(",")[0])
    unchanged = int(rerun.stdout.split("unchanged ")[1].split(",")[0])
    assert added + unchanged == 12 and unchanged >= stored_before_kill
    assert len(_synced_state(ris, name, folder)) == 12
    assert ris.count(name) == 13  # no duplicate, and the other item kept


# -- duplicates ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_copies(ris: RisClient, caltech: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Six distinct photos, an exact copy of one (other id, same bytes) and a brightened copy
    of another (the copy-detection edit)."""
    from ris.tools.copy_edits import make_copy

    name = "dedup_photos"
    photos = [caltech / "train" / c / "image_0001.jpg" for c in ("Leopards", "Motorbikes")]
    photos += [caltech / "train" / c / "image_0002.jpg" for c in ("accordion", "airplanes")]
    photos += [caltech / "train" / c / "image_0003.jpg" for c in ("sunflower", "Faces")]
    items = [IngestItem(id=f"p{i}", path=p) for i, p in enumerate(photos)]
    items.append(IngestItem(id="p0_same", data=photos[0].read_bytes()))
    items.append(
        IngestItem(id="p3_bright", data=make_copy(photos[3].read_bytes(), "brightness", 0, "x"))
    )
    ris.create_collection(name)
    assert ris.ingest(name, items).stored == len(items)
    return name


def test_dedup_finds_exact_and_near_copies(
    ris: RisClient, services: Services, with_copies: str
) -> None:
    from ris.cli.dedup import duplicate_pairs, find_duplicates, group_pairs

    groups = find_duplicates(ris, with_copies, 0.9)
    assert [(g.ids, g.exact) for g in groups] == [
        (["p0", "p0_same"], True),
        (["p3", "p3_bright"], False),
    ]
    assert groups[0].pairs[0].score >= 0.9999 and 0.9 <= groups[1].pairs[0].score < 0.9999
    # small pages (many listing and search calls) find the same pairs
    paged = group_pairs(duplicate_pairs(ris, with_copies, 0.9, page_size=3))
    assert [g.as_dict() for g in paged] == [g.as_dict() for g in groups]

    shown = cli(services, "dedup", with_copies, "--threshold", "0.9", "--json", "--no-progress")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == [g.as_dict() for g in groups]
    text = cli(services, "dedup", with_copies, "--no-progress")
    assert "group 1: 2 items, exact duplicates" in text.stdout and "p3_bright" in text.stdout
    strict = cli(services, "dedup", with_copies, "--threshold", "1.01", "--no-progress")
    assert "0 groups" in strict.stdout


def test_ingest_skips_or_flags_near_duplicates(
    ris: RisClient, services: Services, with_copies: str, caltech: Path, tmp_path: Path
) -> None:
    from ris.cli.dedup import DUPLICATE_OF_KEY

    folder = tmp_path / "more"
    folder.mkdir()
    shutil.copy(caltech / "train" / "Leopards" / "image_0001.jpg", folder / "again.jpg")  # = p0
    shutil.copy(caltech / "train" / "Leopards" / "image_0007.jpg", folder / "new.jpg")
    before = ris.count(with_copies)
    skipped = cli(services, "ingest", with_copies, str(folder), "--duplicates", "skip")
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped again.jpg: near-duplicate of p0" in skipped.stdout
    assert ris.count(with_copies) == before + 1 and not ris.get(with_copies, ["again.jpg"])

    flagged = cli(services, "ingest", with_copies, str(folder), "--duplicates", "flag")
    assert "flagged again.jpg: near-duplicate of p0" in flagged.stdout
    stored = ris.get(with_copies, ["again.jpg", "new.jpg"])
    assert [i.id for i in stored] == ["again.jpg", "new.jpg"]
    assert stored[0].metadata[DUPLICATE_OF_KEY] in ("p0", "p0_same")
    assert DUPLICATE_OF_KEY not in stored[1].metadata  # re-sent under its own id: not a copy
    ris.delete(with_copies, ["again.jpg", "new.jpg"])


# -- HTTP/JSON gateway ---------------------------------------------------------------------


def http_call(
    port: int, method: str, path: str, body: bytes = b"", **headers: str
) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body or None, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def gateway(services: Services) -> Iterator[int]:
    from ris.client.config import ClientConfig
    from ris.gateway.app import Gateway

    running = Gateway(ClientConfig(address=services.address, timeout=120)).start()
    yield running.port
    running.stop()


def test_http_search_returns_the_grpc_results(
    ris: RisClient, gateway: int, ingested: str, folder: Path
) -> None:
    status, listed = http_call(gateway, "GET", "/v1/collections")
    assert status == 200 and ingested in [c["name"] for c in listed["collections"]]
    status, info = http_call(gateway, "GET", f"/v1/collections/{ingested}")
    assert status == 200 and info["count"] == str(len(CLASSES) * PER_CLASS)  # int64: a string

    photo = folder / "Motorbikes" / "image_0002.jpg"
    grpc_hits = ris.search(ingested, photo, top_k=4).hits
    status, found = http_call(
        gateway,
        "POST",
        f"/v1/collections/{ingested}:search?top_k=4",
        photo.read_bytes(),
        **{"Content-Type": "image/jpeg"},
    )
    assert status == 200, found
    hits = found["results"][0]["hits"]
    assert [h["id"] for h in hits] == [h.id for h in grpc_hits]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in grpc_hits], abs=1e-5)
    assert hits[0]["label"] == "Motorbikes"

    body = {"queries": [{"id": "Leopards/image_0001.jpg"}], "top_k": 5, "exclude_self": True,
            "min_score": 0.5, "filter": {"labels": ["Leopards"]}}  # fmt: skip
    status, found = http_call(
        gateway,
        "POST",
        f"/v1/collections/{ingested}:search",
        json.dumps(body).encode(),
        **{"Content-Type": "application/json"},
    )
    assert status == 200, found
    ids = [h["id"] for h in found["results"][0]["hits"]]
    assert ids and all(i.startswith("Leopards/") and i != "Leopards/image_0001.jpg" for i in ids)


SEARCH, BAD = "/v1/collections/{c}:search", "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status", "code"),
    [
        ("GET", "/v1/collections/no_such_thing", b"", "", 404, "NOT_FOUND"),
        ("GET", "/v2/else", b"", "", 404, "NOT_FOUND"),
        ("POST", SEARCH, b"{not json", "application/json", 400, BAD),
        (
            "POST",
            SEARCH,
            b'{"top_k": 5000, "queries": [{"id": "x"}]}',
            "application/json",
            400,
            BAD,
        ),
        ("POST", SEARCH, b"abc", "text/plain", 400, BAD),
        ("POST", SEARCH + "?top_k=x", b"abc", "image/png", 400, BAD),
    ],
)
def test_http_errors_are_json_with_the_grpc_code(
    gateway: int, ingested: str, method, path, body, content_type, status, code
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    got, payload = http_call(gateway, method, path.format(c=ingested), body, **headers)
    assert got == status and payload["error"]["status"] == code, payload
    assert payload["error"]["message"]


def test_http_body_over_the_limit_is_refused_unread(gateway: int, ingested: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gateway, timeout=30)
    try:
        connection.putrequest("POST", f"/v1/collections/{ingested}:search")
        connection.putheader("Content-Type", "image/jpeg")
        connection.putheader("Content-Length", str(1 << 40))
        connection.endheaders()
        reply = connection.getresponse()
        payload = json.loads(reply.read())
        assert reply.status == 413 and payload["error"]["status"] == "RESOURCE_EXHAUSTED"
        assert "over the limit" in payload["error"]["message"]
        assert reply.getheader("Connection") == "close"
    finally:
        connection.close()


def test_http_uses_the_services_tokens(services: Services, tmp_path: Path) -> None:
    """A search service with tokens: the gateway forwards the caller's bearer token and holds
    none of its own."""
    from search_fixtures import running_search, search_config

    from ris.client.config import ClientConfig
    from ris.gateway.app import Gateway

    config = search_config(
        services.embedder_address, str(tmp_path / "m.db"), read_tokens="reader-tok-123"
    )
    with running_search(config) as secured:
        running = Gateway(ClientConfig(address=secured.address, timeout=60)).start()
        try:
            status, payload = http_call(running.port, "GET", "/v1/collections")
            assert status == 401 and payload["error"]["status"] == "UNAUTHENTICATED"
            status, payload = http_call(
                running.port, "GET", "/v1/collections", Authorization="Bearer wrong"
            )
            assert status == 401
            status, payload = http_call(
                running.port, "GET", "/v1/collections", Authorization="Bearer reader-tok-123"
            )
            assert status == 200 and payload == {"collections": []}
        finally:
            running.stop()


def test_http_page_and_item_images(gateway: int, ingested: str, with_copies: str, folder: Path):
    page = urllib.request.urlopen(f"http://127.0.0.1:{gateway}/", timeout=30)
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b"<title>ris" in page.read()

    item = "Leopards/image_0002.jpg"
    quoted = urllib.parse.quote(item, safe="")
    url = f"http://127.0.0.1:{gateway}/v1/collections/{ingested}/items/{quoted}:image"
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.headers["Content-Type"] == "image/jpeg"
        assert reply.read() == (folder / item).read_bytes()
    # confined like server-side ingest: an item stored from a path outside the allowed roots
    # gets the one answer of every refusal (search_service/images.py), as a missing file does
    status, payload = http_call(gateway, "GET", f"/v1/collections/{with_copies}/items/p1:image")
    assert status == 404 and payload["error"]["status"] == "NOT_FOUND"
    status, payload = http_call(gateway, "GET", f"/v1/collections/{ingested}/items/nope.jpg:image")
    assert status == 404 and payload["error"]["status"] == "NOT_FOUND"


CHROMIUM = Path(os.environ.get("RIS_CHROMIUM", "/usr/bin/chromium"))


def test_web_page_in_headless_chromium(
    gateway: int, ingested: str, folder: Path, tmp_path: Path
) -> None:
    """The page in a real browser: pick a photo, search, see the hits with scores, labels and
    images. RIS_SCREENSHOT=path keeps the screenshot (docs/web_page.png was made so)."""
    # CI installs both (.ci/run), so there a missing browser fails instead of skipping.
    missing = pytest.fail if os.environ.get("CI") else pytest.skip
    try:
        from playwright import sync_api
    except ImportError:
        missing("playwright not installed (dev extra)")
    if not CHROMIUM.exists():
        missing(f"no chromium at {CHROMIUM} (set RIS_CHROMIUM; Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(f"http://127.0.0.1:{gateway}/")
            page.wait_for_selector(f"#collection option[value={ingested}]", state="attached")
            page.select_option("#collection", ingested)
            page.set_input_files("#file", str(folder / "Motorbikes" / "image_0003.jpg"))
            page.fill("#topk", "6")
            page.click("#go")
            page.wait_for_selector(".hit img", timeout=60_000)
            labels = page.locator(".hit .label").all_inner_texts()
            scores = [float(s) for s in page.locator(".hit .score").all_inner_texts()]
            assert len(labels) == 6 and labels[0].strip() == "Motorbikes"
            # near duplicates (badged) first, then the rest by score
            dups = page.locator(".hit .dup").count()
            assert scores[dups:] == sorted(scores[dups:], reverse=True) and scores[0] > 0.5
            assert page.locator("#status").inner_text() == "6 hits"
            page.wait_for_function("document.querySelectorAll('.hit img').length === 6")
            shot = tmp_path / "web_page.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("RIS_SCREENSHOT"):
                shutil.copy(shot, os.environ["RIS_SCREENSHOT"])
        finally:
            browser.close()


def test_ris_serve_with_http_port(services: Services, tmp_path: Path) -> None:
    """`ris serve --http-port`: the page and API next to the gRPC service (a second search
    service on the module's embedder, so no second model load)."""
    from ris.tools.harness import free_port

    port, http_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "ris.cli", "serve", "--port", str(port), "--http-port"]
    cmd += [str(http_port), "--embedder-address", services.embedder_address]
    cmd += ["--milvus-uri", str(tmp_path / "m.db")]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        status, payload = 0, None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status, payload = http_call(http_port, "GET", "/v1/collections")
                break
            except (ConnectionError, urllib.error.URLError):
                time.sleep(0.2)
        assert status == 200 and payload == {"collections": []}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


# -- reindex -----------------------------------------------------------------------------------


def test_reindex_re_embeds_every_item_and_resumes(
    ris: RisClient, folder: Path, tmp_path: Path
) -> None:
    """Every item comes back under its id, label, metadata and uri, embedded again from its
    file (raw vectors equal the source's: same model, same photo); a second run sends nothing;
    a source file gone is reported and the old collection keeps everything."""
    from ris.cli.reindex import reindex

    photos = tmp_path / "photos"
    shutil.copytree(folder / "Leopards", photos)
    ris.create_collection("re_src", augmentation_top_n=0)
    items = [
        IngestItem(id=p.name, path=p, label="cat", metadata={"k": p.stem})
        for p in sorted(photos.iterdir())
    ]
    assert ris.ingest("re_src", items).stored == PER_CLASS

    roots = [photos]  # a plain ingest records no sync root: the folder to read from is named
    first = reindex(ris, "re_src", "re_dst", source_root=roots)
    assert (first.listed, first.already, first.stored, first.complete) == (PER_CLASS, 0, 3, True)
    src = {i.id: i for i in ris.iter_items("re_src", include_vectors=True)}
    dst = {i.id: i for i in ris.iter_items("re_dst", include_vectors=True)}
    assert dst.keys() == src.keys()
    for key, item in dst.items():
        assert (item.label, dict(item.metadata), item.uri) == ("cat", {"k": key[:-4]}, src[key].uri)
        cosine = sum(a * b for a, b in zip(item.vector or [], src[key].vector or [], strict=True))
        assert cosine > 0.999, key

    again = reindex(ris, "re_src", "re_dst", source_root=roots)
    assert (again.already, again.stored, again.complete) == (PER_CLASS, 0, True)

    gone = sorted(photos.iterdir())[0]
    gone.unlink()
    partial = reindex(ris, "re_src", "re_other", source_root=roots)
    assert partial.stored == PER_CLASS - 1 and not partial.complete
    assert partial.missing == [f"{gone.name}: source {gone} is not a readable file here "
                               "(try --server-side)"]  # fmt: skip
    assert ris.count("re_src") == PER_CLASS  # nothing lost
    with pytest.raises(ValueError, match="other than the source"):
        reindex(ris, "re_src", "re_src")


def test_reindex_cli_server_side(services: Services, ingested: str, ris: RisClient) -> None:
    """The service reads the sources itself (inside its allowed roots); exit 0, counts equal."""
    done = cli(services, "collections", "reindex", ingested, "--into", "re_cli", "--server-side")
    assert done.returncode == 0, done.stderr
    assert f"re_cli holds {len(CLASSES) * PER_CLASS} of {len(CLASSES) * PER_CLASS}" in done.stdout
    assert sorted(i.id for i in ris.iter_items("re_cli")) == sorted(ris_ids(ris, ingested))
    assert ris.describe_collection("re_cli").augmentation_top_n == (
        ris.describe_collection(ingested).augmentation_top_n
    )
