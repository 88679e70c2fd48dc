"""scripts/replay_dockerfile.py (ris.tools.dockerfile_replay): what it reads from the real
Dockerfiles, and that a replayed image sees only what its Dockerfile copies (CI's replay-images
phase runs the real images)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ris.tools import dockerfile_replay as replay

ROOT = Path(__file__).resolve().parent.parent


# Every folder the wheel maps into the ris namespace (pyproject.toml's package-dir): one
# distribution, so each image copies them all and its extra picks the dependencies.
PACKAGE_FOLDERS = {
    "protos",
    "common",
    "client",
    "cli",
    "launcher",
    "tools",
    "embedder_service",
    "search_service",
}


@pytest.mark.parametrize(
    ("name", "extra", "packages"),
    [
        ("embedder", "embedder-gpu,text", PACKAGE_FOLDERS),
        ("search", "search", PACKAGE_FOLDERS),
    ],
)
def test_final_stage_of_each_image(name: str, extra: str, packages: set[str]) -> None:
    stage = replay.parse_final_stage(ROOT / "docker" / f"{name}.Dockerfile")
    copied = {Path(source).parts[0] for sources, _ in stage.copies for source in sources}
    assert packages | {"pyproject.toml", "constraints.txt", "scripts"} <= copied
    # Installed from the constraints, --no-cache-dir dropped so the replay uses the pip cache.
    assert stage.pip_installs == [["-c", "constraints.txt", f".[{extra}]"]]
    assert stage.cmd == ["python", "-m", f"ris.{name}"]
    assert stage.healthcheck[:2] == ["python", "scripts/grpc_health_probe.py"]
    port = int(stage.healthcheck[2].rsplit(":", 1)[1])
    assert port in stage.exposed and stage.env[f"RIS_{name.upper()}_PORT"] == str(port)
    assert stage.start_period_s > 0 and stage.workdir == "/app"


def test_build_stage_feeds_only_through_copy_from() -> None:
    stage = replay.parse_final_stage(ROOT / "docker" / "embedder.Dockerfile")
    assert any("--from=model" in s for s in stage.skipped)
    assert not any("torch" in word for args in stage.pip_installs for word in args)


def test_pip_options_that_need_the_network_or_disable_the_cache_are_dropped() -> None:
    pips, others = replay._pip_commands(
        "pip install --no-cache-dir --extra-index-url https://x.test/whl -c c.txt '.[a]' "
        "&& python -m pip install --no-deps b && python scripts/export.py"
    )
    assert pips == [["-c", "c.txt", ".[a]"], ["--no-deps", "b"]]
    assert others == ["python scripts/export.py"]


def test_a_folder_the_dockerfile_does_not_copy_is_not_importable(tmp_path: Path) -> None:
    """The test's own PYTHONPATH (the checkout) must not leak into the replayed container."""
    program = "import os; assert os.path.isfile('client/client.py'); import ris.common"
    dockerfile = tmp_path / "x.Dockerfile"
    dockerfile.write_text(
        "FROM python:3.11-slim\nWORKDIR /app\nCOPY client ./client\nEXPOSE 50099\n"
        'HEALTHCHECK --start-period=1s CMD ["python", "-c", "raise SystemExit(1)"]\n'
        f'CMD ["python", "-c", "{program}"]\n'
    )
    compose = tmp_path / "compose.yml"
    compose.write_text(f"services:\n  x:\n    build:\n      dockerfile: {dockerfile}\n")
    with pytest.raises(replay.ReplayError, match="No module named 'ris'"):
        replay.replay_services(["x"], compose, [], [], sys.executable, tmp_path / "scratch")


def test_a_copy_source_that_does_not_exist_fails(tmp_path: Path) -> None:
    dockerfile = tmp_path / "x.Dockerfile"
    dockerfile.write_text('FROM a\nCOPY no_such_dir ./x\nHEALTHCHECK CMD ["true"]\nCMD ["true"]\n')
    stage = replay.parse_final_stage(dockerfile)
    with pytest.raises(replay.ReplayError, match="COPY no_such_dir"):
        replay.build_tree(stage, tmp_path / "root")
