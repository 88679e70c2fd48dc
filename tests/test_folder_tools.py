"""Folder tools never lose what exists (issue 37): files that cannot be read are failures, never
removals; names that are not UTF-8 ingest and sync under escaped ids; every photo format the
embedder reads is picked up; client-side reindex reads only under the source roots; the ingest
progress bar counts what the service answered for. Against the real services (embedder with the
real model, search service on Milvus Lite) on loopback, except the scripted progress check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from PIL import Image
from search_fixtures import live_client, serving

from ris.api import common_pb2, search_pb2, search_pb2_grpc
from ris.client import IngestItem, RisClient, operations
from ris.client.config import ClientConfig
from ris.client.ingest import CallAttempts
from ris.client.sources import IMAGE_SUFFIXES, from_folder, from_glob
from ris.common.names import name_bytes, name_path, name_text
from ris.launcher.serve import Services

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534


@pytest.fixture(scope="module")
def services(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    base = tmp_path_factory.getbasetemp()  # item images: served from the test's folders
    with serving(model_path, tmp_path_factory.mktemp("milvus"), allowed_roots=base) as running:
        yield running


@pytest.fixture(scope="module")
def ris(services: Services) -> Iterator[RisClient]:
    with live_client(services.address) as client:
        yield client


@pytest.fixture(scope="module")
def photos(caltech: Path) -> list[Path]:
    return sorted((caltech / "train" / "Leopards").glob("*.jpg"))[:6]


def cli(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ris.cli", *args, "--address", services.address],
        cwd=ROOT,
        env={**os.environ, "RIS_RETRIES": "3"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# Runs `ris` as an unprivileged user: imports first (the interpreter may live where that user
# cannot read), then drops root's privileges for good, then runs the command.
AS_USER = """
import os, sys
from ris.cli.main import main
uid = int(sys.argv[1])
if os.geteuid() != uid:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
sys.exit(main(sys.argv[2:]))
"""


def cli_unprivileged(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    """`ris` run by a user a chmod 000 file is really unreadable for: this user when not root,
    else nobody (root reads any file whatever its mode)."""
    uid = os.geteuid() or NOBODY
    command = [sys.executable, "-c", AS_USER, str(uid), *args, "--address", services.address]
    env = {**os.environ, "RIS_RETRIES": "3", "HOME": tempfile.gettempdir()}
    return subprocess.run(
        command, cwd="/", env=env, capture_output=True, text=True, timeout=300, check=False
    )


# -- ids for names that are not UTF-8 ------------------------------------------------------------


def test_name_text_escapes_only_names_that_are_not_utf8_and_goes_back() -> None:
    names = [b"caf\xe9.jpg", b"\xff\xfe/a\\b\x80.png", b"x\xed\xa0\x80.jpg", b"\\x41\xe9.jpg"]
    for raw in names:
        text = name_text(raw)
        assert text.encode("utf-8")  # valid text: the service takes it as an id
        assert name_text(os.fsdecode(raw)) == text  # same from a str path (surrogateescape)
        assert name_bytes(text) == raw
        assert name_path(text) == Path(os.fsdecode(raw))
    assert name_text(b"caf\xe9.jpg") == "caf\\xe9.jpg"
    assert name_text(b"a\\b\xff") == "a\\x5cb\\xff"  # a backslash of an escaped name is escaped
    for valid in ["café.jpg", "a\\b.jpg", "caf%E9.jpg", "100%.png", "\\x41.jpg", "日本/写真.jpg"]:
        assert name_text(valid) == valid  # ids already stored keep matching
        assert name_bytes(valid) == valid.encode("utf-8")


# -- formats -----------------------------------------------------------------------------------


def test_every_format_the_embedder_reads_is_picked_up_by_folders_globs_and_sync(
    tmp_path: Path,
) -> None:
    """HEIC/HEIF (iPhones) and AVIF among them; the scan only looks at names (their decoding is
    the embedder's, tested there), so these files need not be real images here."""
    from ris.cli.sync import scan

    wanted = ["a.avif", "b.HEIC", "c.heif", "d.jfif", "e.jpe", "f.jpg", "g.png", "h.webp"]
    for name in [*wanted, "notes.txt", "movie.mov"]:
        (tmp_path / name).write_bytes(b"x")
    assert {".avif", ".heic", ".heif"} <= IMAGE_SUFFIXES
    assert sorted(i.id for i in from_folder(tmp_path).items) == wanted
    assert sorted(i.id for i in from_glob(f"{tmp_path}/*").items) == wanted
    items, scanned = scan(tmp_path, str(tmp_path), show_progress=False)
    assert sorted(i.id for i in items) == wanted and scanned.problems == []


# -- ingest and sync -----------------------------------------------------------------------------


def test_names_that_are_not_utf8_ingest_and_sync_under_escaped_ids(
    ris: RisClient, services: Services, photos: list[Path], tmp_path: Path
) -> None:
    """An old camera card's Latin-1 names: ingested and synced (dry run too) under ids escaping
    their bytes, the same on every run; a name whose id would be too long fails alone, named.
    An AVIF made here is ingested like the JPEGs."""
    card = os.fsencode(tmp_path / "card")
    os.makedirs(card + b"/\xc9t\xe9")  # "Été" in Latin-1: a label that is not UTF-8 either
    shutil.copy(photos[0], os.fsdecode(card + b"/caf\xe9.jpg"))
    shutil.copy(photos[1], os.fsdecode(card + b"/\xc9t\xe9/plage.jpg"))
    shutil.copy(photos[2], os.fsdecode(card + b"/ok.jpg"))
    Image.open(photos[3]).save(os.fsdecode(card + b"/pic.avif"))
    too_long = card + b"/" + b"\xe9" * 200 + b".jpg"  # 204 bytes on disk, 804 as an id (> 512)
    shutil.copy(photos[4], os.fsdecode(too_long))
    folder = os.fsdecode(card)
    expected = sorted(["caf\\xe9.jpg", "\\xc9t\\xe9/plage.jpg", "ok.jpg", "pic.avif"])

    done = cli(services, "ingest", "card", folder, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "4 stored, 0 failed, 1 skipped of 5" in done.stdout
    assert f"{name_text(too_long)}: id longer than 512 bytes" in done.stderr  # named
    stored = {item.id: item for item in ris.iter_items("card")}
    assert sorted(stored) == expected
    beach = stored["\\xc9t\\xe9/plage.jpg"]
    assert beach.label == "\\xc9t\\xe9"
    assert name_path(beach.uri) == Path(os.fsdecode(card + b"/\xc9t\xe9/plage.jpg")).resolve()
    assert os.fsencode(name_path("caf\\xe9.jpg")) == b"caf\xe9.jpg"  # the id gives the name back
    with grpc.insecure_channel(services.address) as channel:  # the service reads it back too
        request = search_pb2.GetItemImageRequest(collection="card", id=beach.id)
        image = search_pb2_grpc.SearchServiceStub(channel).GetItemImage(request, timeout=30)
    assert image.data == photos[1].read_bytes()

    first = cli(services, "sync", "card_sync", folder, "--no-progress")
    assert first.returncode == 1  # the name that can never be an id
    assert "added 4, updated 0, removed 0, unchanged 0, failed 1" in first.stdout
    plan = cli(services, "sync", "card_sync", folder, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "plan: add 0, update 0, remove 0, unchanged 4, cannot sync 1" in plan.stdout
    again = cli(services, "sync", "card_sync", folder, "--no-progress")
    assert "added 0, updated 0, removed 0, unchanged 4, failed 1" in again.stdout
    assert sorted(i.id for i in ris.iter_items("card_sync")) == expected


def test_sync_keeps_the_items_of_files_and_folders_it_cannot_read(
    ris: RisClient, services: Services, photos: list[Path]
) -> None:
    """A file made unreadable (chmod 000) and a folder made unlistable exist still: the sync
    names them as failures, exits 1 and removes nothing. The unreadable run is `ris sync` in a
    process that has dropped to an unprivileged user (root would read them anyway); the folder
    sits outside pytest's private temp dir so that user can reach it."""
    name = "unreadable"
    folder = Path(tempfile.mkdtemp(prefix="ris-unreadable-"))
    folder.chmod(0o755)
    try:
        for sub, photo in [("a", photos[0]), ("a", photos[1]), ("b", photos[2])]:
            (folder / sub).mkdir(mode=0o755, exist_ok=True)
            shutil.copy(photo, folder / sub / photo.name)
        first = cli(services, "sync", name, str(folder), "--no-progress")
        assert "added 3" in first.stdout, first.stderr
        ids = sorted(i.id for i in ris.iter_items(name))
        locked = folder / "a" / photos[0].name
        locked.chmod(0)
        (folder / "b").chmod(0)

        plan = cli_unprivileged(services, "sync", name, str(folder), "--dry-run")
        assert "plan: add 0, update 0, remove 0, unchanged 1, cannot sync 2" in plan.stdout, (
            plan.stderr
        )
        assert f"keep    a/{photos[0].name}" in plan.stdout
        assert f"keep    b/{photos[2].name}" in plan.stdout
        done = cli_unprivileged(services, "sync", name, str(folder), "--no-progress")
        assert done.returncode == 1
        assert "added 0, updated 0, removed 0, unchanged 1, failed 2" in done.stdout
        assert f"failed {locked}: cannot read: Permission denied" in done.stderr
        assert f"failed {folder / 'b'}: cannot list folder: Permission denied" in done.stderr
        assert sorted(i.id for i in ris.iter_items(name)) == ids  # nothing removed
    finally:
        (folder / "b").chmod(0o755)
        (folder / "a" / photos[0].name).chmod(0o644)
        shutil.rmtree(folder)


# -- reindex -----------------------------------------------------------------------------------


def test_reindex_reads_sources_only_under_the_source_roots(
    ris: RisClient, services: Services, photos: list[Path], tmp_path: Path
) -> None:
    """A writer stores items whose uris point out of the synced folder (/proc/self/environ, a
    private photo, a `..` path, a link leading out), stamped with the folder's sync root: reindex
    refuses each, reads and sends none of them, and re-embeds the synced items."""
    from ris.cli.reindex import reindex
    from ris.cli.sync import ROOT_KEY

    album, private = tmp_path / "album", tmp_path / "private"
    album.mkdir()
    private.mkdir()
    for photo in photos[:2]:
        shutil.copy(photo, album / photo.name)
    secret = private / "secret.jpg"
    shutil.copy(photos[2], secret)
    assert "added 2" in cli(services, "sync", "re_album", str(album), "--no-progress").stdout
    root = str(album.resolve())
    (album / "link.jpg").symlink_to(secret)
    hostile = {
        "env": "/proc/self/environ",
        "outside": str(secret),
        "dotdot": f"{root}/../private/secret.jpg",
        "link": f"{root}/link.jpg",
    }
    data = photos[3].read_bytes()
    items = [
        IngestItem(key, data=data, display_uri=uri, metadata={ROOT_KEY: root})
        for key, uri in hostile.items()
    ]
    assert ris.ingest("re_album", items).stored == len(hostile)

    done = reindex(ris, "re_album", "re_album_new")
    assert done.stored == 2 and done.failures == []
    refused = {line.split(":")[0]: line for line in done.missing}
    assert sorted(refused) == sorted(hostile)
    for key, uri in hostile.items():
        assert refused[key] == f"{key}: source {uri} is outside the source roots ({root}): not read"
    synced = sorted(p.name for p in photos[:2])
    assert sorted(i.id for i in ris.iter_items("re_album_new")) == synced

    named = cli(
        services, "collections", "reindex", "re_album", "--into", "re_private",
        "--source-root", str(private),
    )  # fmt: skip
    assert named.returncode == 1  # the album's own items and env are outside private/
    assert "3 stored" in named.stdout, named.stderr
    assert sorted(i.id for i in ris.iter_items("re_private")) == ["dotdot", "link", "outside"]

    ris.create_collection("re_plain")
    ris.ingest("re_plain", [IngestItem("p", path=photos[0])])
    with pytest.raises(ValueError, match="re_plain has no sync root: name the folders"):
        reindex(ris, "re_plain", "re_plain_new")


# -- progress ----------------------------------------------------------------------------------


def test_ingest_progress_counts_items_the_service_answered_for() -> None:
    """Scripted calls (client/operations.py is sans I/O): when a call's messages are all sent
    but its answer has not come, the bar still shows only the earlier calls' answered items; a
    failed attempt moves nothing."""
    info = search_pb2.ServiceInfo(
        limits=search_pb2.ServiceLimits(max_queries=8, max_item_bytes=1000),
        model=common_pb2.ModelInfo(name="m"),
    )
    shown: list[int] = []
    failed_once = False

    def answer(step: Any) -> Any:
        nonlocal failed_once
        if isinstance(step, operations.Probe):
            return info, None
        assert isinstance(step, CallAttempts)
        if not failed_once:  # the first attempt dies after sending everything
            failed_once = True
            with pytest.raises(grpc.RpcError), step.attempt() as stream:
                first = stream.next_request()
                assert first is not None
                list(step.follow(first))
                raise grpc.RpcError()
            assert step.bar.n == 0
        with step.attempt() as stream:
            first = stream.next_request()
            assert first is not None
            list(step.follow(first))  # every message of the call sent
        shown.append(step.bar.n)
        sent = len(step.stream.call.items)
        return search_pb2.IngestResponse(received=sent, stored=sent)

    items = [IngestItem(f"i{n}", data=b"x" * 10) for n in range(5)]
    ingest = operations.ingest(
        operations.Session(ClientConfig()), "c", items, items_per_call=3, show_progress=True
    )
    summary = operations.drive(ingest, answer)
    assert summary.stored == 5
    assert shown == [0, 3]  # items answered for before each call's answer, never those in flight
