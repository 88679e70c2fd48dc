"""`ris model fetch` and the user model cache: what a wheel install (no scripts/, no models/) does
to get a model, and that the embedder finds it by default."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ris.cli.main import main as ris
from ris.embedder.config import DEFAULT_MODEL, EmbedderConfig, from_env, user_models_dir
from ris.embedder.export import fetch_weights

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def wheel_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without models/ and an empty user cache; returns the cache's models."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "ris" / "models"


def test_user_models_dir_follows_xdg_then_home() -> None:
    assert user_models_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/ris/models")
    assert user_models_dir({}) == Path.home() / ".cache" / "ris" / "models"


def test_default_model_is_the_checkouts_then_the_user_caches(
    wheel_user: Path, model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert EmbedderConfig().validate().model_paths == [DEFAULT_MODEL]  # neither: unchanged
    assert ris(["model", "path"]) == 1
    wheel_user.mkdir(parents=True)
    (wheel_user / "resnet50.onnx").symlink_to(model_path)
    assert EmbedderConfig().validate().model_paths == [wheel_user / "resnet50.onnx"]
    assert ris(["model", "path"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(wheel_user / "resnet50.onnx")
    explicit = from_env({"RIS_EMBEDDER_MODEL": "elsewhere.onnx"}).validate()
    assert explicit.model_paths == [Path("elsewhere.onnx")]  # a configured path is never moved
    Path("models").mkdir()
    Path(DEFAULT_MODEL).symlink_to(model_path)  # a checkout's models/ wins over the cache
    assert EmbedderConfig().validate().model_paths == [DEFAULT_MODEL]


def test_ris_model_fetch_exports_into_the_user_cache(
    wheel_user: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the npm tarball already cached (npm off PATH, so nothing is fetched), the export
    gives the same bytes as scripts/export_onnx.py gave models/, and a re-run keeps them."""
    tarball = fetch_weights.tarball_path(ROOT / "models")
    if not tarball.exists():
        pytest.fail(f"{tarball} missing: run python scripts/fetch_weights.py")
    seeded = fetch_weights.tarball_path(wheel_user)
    seeded.parent.mkdir(parents=True)
    seeded.symlink_to(tarball)
    monkeypatch.setenv("PATH", f"{wheel_user / 'no-npm-here'}{os.pathsep}/usr/bin:/bin")
    assert ris(["model", "fetch", "--no-fp16", "--check-images", "4"]) == 0
    exported = wheel_user / "resnet50.onnx"
    assert fetch_weights.sha256_file(exported) == fetch_weights.sha256_file(model_path)
    assert EmbedderConfig().validate().model_paths == [exported]
    mtime = exported.stat().st_mtime_ns
    assert ris(["model", "fetch"]) == 0  # already there and readable: kept as it is
    assert exported.stat().st_mtime_ns == mtime


DEBIAN_PYTHON = Path("/usr/bin/python3")


@pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="no system Python at /usr/bin/python3")
def test_weights_unpack_on_the_system_python(tmp_path: Path) -> None:
    """The README's first command unpacks the npm tarball with the system's own Python: on
    Debian 12 that is 3.11.2, whose tarfile has no ``filter=`` (3.11.4+). The module is
    stdlib-only, so it is loaded from its file there and unpacks a cached tarball for real."""
    tarball = fetch_weights.tarball_path(ROOT / "models")
    if not tarball.exists():
        pytest.fail(f"{tarball} missing: run python scripts/fetch_weights.py")
    models = tmp_path / "models"
    fetch_weights.tarball_path(models).parent.mkdir(parents=True)
    fetch_weights.tarball_path(models).symlink_to(tarball)
    script = (
        "import importlib.util, sys, tarfile\n"
        "spec = importlib.util.spec_from_file_location('fw', sys.argv[1])\n"
        "fw = importlib.util.module_from_spec(spec); spec.loader.exec_module(fw)\n"
        "pkg = fw.ensure_package(__import__('pathlib').Path(sys.argv[2]))\n"
        "fw.verify_package(pkg)\n"
        "print(sys.version.split()[0], hasattr(tarfile, 'data_filter'))\n"
    )
    module = ROOT / "embedder_service" / "export" / "fetch_weights.py"
    result = subprocess.run(
        [str(DEBIAN_PYTHON), "-c", script, str(module), str(models)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    unpacked = fetch_weights.package_dir(models)
    assert (unpacked / fetch_weights.CHECKSUMS_NAME).exists()
    modes = {p.stat().st_mode & 0o7777 for p in unpacked.rglob("*") if p.is_file()}
    assert all(mode & 0o022 == 0 for mode in modes), sorted(map(oct, modes))
