"""Replay the final stage of the images in docker-compose.yml without a Docker engine.

For each compose service named (its Dockerfile is the one compose builds it from), this reads
the Dockerfile's last stage and does what `docker build` + `docker compose up` would do to it:
copies its COPY sources into a scratch WORKDIR, runs its `pip install` steps in a fresh virtualenv,
starts its CMD there with its ENV and then the compose `environment`, and runs its HEALTHCHECK
until it passes. A Dockerfile that forgets a folder or an extra fails here, because nothing
outside the scratch tree and the venv is importable (no PYTHONPATH, cwd = the WORKDIR copy).

What cannot run without Docker is rewritten, and only that: every EXPOSEd port becomes a free
loopback port (in the environment and the health check alike), `0.0.0.0` binds become 127.0.0.1,
other services' names become 127.0.0.1, `--map` turns container paths (e.g. /models from the
build stage) into host paths, and `--set` replaces a variable for a service that is not replayed
(e.g. Milvus). Other RUN steps (apt-get, useradd, mkdir) and USER are reported, not replayed;
pip's `--no-cache-dir` and `--extra-index-url` are dropped (the local pip cache and index serve).

The command line is scripts/replay_dockerfile.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ris.tools.checkout import CHECKOUT
from ris.tools.harness import free_port

_SUBST = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")
_DROPPED_PIP_OPTIONS = {"--no-cache-dir": 0, "--extra-index-url": 1, "--index-url": 1, "-i": 1}
_COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
STOP_TIMEOUT_S = 20.0


class ReplayError(RuntimeError):
    """The image would not build or start as its Dockerfile says."""


@dataclass
class Stage:
    """The instructions of a Dockerfile's final stage that a replay needs."""

    workdir: str = "/"
    copies: list[tuple[list[str], str]] = field(default_factory=list)
    pip_installs: list[list[str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    exposed: list[int] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    start_period_s: float = 0.0
    cmd: list[str] = field(default_factory=list)


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(KEYWORD, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, args = logical.partition(" ")
        yield keyword.upper(), args.strip()
        logical = ""


def _exec_form(args: str) -> list[str]:
    return list(json.loads(args)) if args.startswith("[") else ["/bin/sh", "-c", args]


def _duration_s(value: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    match = re.fullmatch(r"([\d.]+)(ms|s|m|h)", value)
    if not match:
        raise ReplayError(f"cannot read the duration {value!r}")
    return float(match.group(1)) * units[match.group(2)]


def _parse_env(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:  # legacy form: ENV KEY value with spaces
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def _pip_commands(run: str) -> tuple[list[list[str]], list[str]]:
    """The `pip install` commands of one RUN line, and the other commands in it."""
    pips, others = [], []
    for part in re.split(r"\s*&&\s*", run):
        words = shlex.split(part)
        if words[:2] == ["pip", "install"] or words[1:4] == ["-m", "pip", "install"]:
            args, skip = [], 0
            for word in words[words.index("install") + 1 :]:
                if skip:
                    skip -= 1
                elif word in _DROPPED_PIP_OPTIONS:
                    skip = _DROPPED_PIP_OPTIONS[word]
                else:
                    args.append(word)
            pips.append(args)
        elif words:
            others.append(part)
    return pips, others


def parse_final_stage(dockerfile: Path) -> Stage:
    """Read the last FROM stage (the image that runs); earlier stages only feed COPY --from."""
    stage = Stage()
    for keyword, args in _instructions(dockerfile.read_text()):
        if keyword == "FROM":
            stage = Stage()
        elif keyword == "WORKDIR":
            stage.workdir = args
        elif keyword == "COPY":
            words = shlex.split(args)
            if any(w.startswith("--from=") for w in words):
                stage.skipped.append(f"COPY {args} (from a build stage: use --map)")
                continue
            words = [w for w in words if not w.startswith("--")]
            stage.copies.append((words[:-1], words[-1]))
        elif keyword == "RUN":
            pips, others = _pip_commands(args)
            stage.pip_installs.extend(pips)
            stage.skipped.extend(f"RUN {other}" for other in others)
        elif keyword == "ENV":
            stage.env.update(_parse_env(args))
        elif keyword == "EXPOSE":
            stage.exposed.extend(int(p.split("/")[0]) for p in args.split())
        elif keyword == "HEALTHCHECK":
            options, _, command = args.partition("CMD ")
            stage.healthcheck = _exec_form(command.strip())
            period = re.search(r"--start-period=(\S+)", options)
            stage.start_period_s = _duration_s(period.group(1)) if period else 0.0
        elif keyword == "CMD":
            stage.cmd = _exec_form(args)
        else:
            stage.skipped.append(f"{keyword} {args}")
    if not stage.cmd or not stage.healthcheck:
        raise ReplayError(f"{dockerfile}: the final stage needs a CMD and a HEALTHCHECK")
    return stage


def compose_environment(compose: dict, service: str) -> dict[str, str]:
    """The service's `environment`, ${VAR:-default} resolved as on a fresh host (no VARs set)."""
    env = compose["services"][service].get("environment", {}) or {}
    return {k: _SUBST.sub(lambda m: m.group(2) or "", str(v)) for k, v in env.items()}


def _inside(workdir: Path, target: str, base: str) -> Path:
    """Where a container path lands in the scratch root."""
    path = target if target.startswith("/") else f"{base.rstrip('/')}/{target}"
    return workdir / path.lstrip("/")


def build_tree(stage: Stage, root: Path) -> Path:
    """Apply the COPY lines to `root` (the container's /); return the WORKDIR in it."""
    for sources, target in stage.copies:
        dest = _inside(root, target, stage.workdir)
        for source in sources:
            src = CHECKOUT / source
            if not src.exists():
                raise ReplayError(f"COPY {source}: no such file in the build context")
            # Docker: a folder's contents go to the target; a file goes into a target folder
            # (a trailing / or several sources) or becomes the target.
            into_dir = target.endswith("/") or len(sources) > 1
            out = dest / src.name if into_dir and not src.is_dir() else dest
            out.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, out, ignore=_COPY_IGNORE, dirs_exist_ok=True)
            else:
                shutil.copy2(src, out)
    workdir = _inside(root, stage.workdir, "/")
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def install(stage: Stage, workdir: Path, venv: Path, python: str) -> None:
    """A fresh virtualenv and exactly the stage's pip steps, run from its WORKDIR."""
    without_pip = [] if stage.pip_installs else ["--without-pip"]
    subprocess.run([python, "-m", "venv", *without_pip, str(venv)], check=True)
    for args in stage.pip_installs:
        command = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args]
        print(f"   pip install {shlex.join(args)}", flush=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if subprocess.run(command, cwd=workdir, env=env).returncode != 0:
            raise ReplayError(f"pip install {shlex.join(args)} failed")


def _rewrite(value: str, replacements: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, new in replacements:
        value = pattern.sub(new, value)
    return "127.0.0.1" if value == "0.0.0.0" else value


@dataclass
class Replay:
    """One service: its parsed stage, scratch tree, venv and port mapping."""

    name: str
    stage: Stage
    workdir: Path
    venv: Path
    ports: dict[int, int]


def _environment(
    replay: Replay,
    compose_env: dict[str, str],
    replacements: list[tuple[re.Pattern[str], str]],
    settings: dict[str, str],
) -> dict[str, str]:
    """A clean process environment: PATH with the venv first, image ENV, then compose's."""
    env = {
        "PATH": f"{replay.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(replay.workdir),
        "LANG": "C.UTF-8",
    }
    for key, value in (replay.stage.env | compose_env).items():
        if key != "PATH":  # the image's PATH names its own venv; ours is first already
            env[key] = _rewrite(value, replacements)
    return env | settings


@contextmanager
def _running(replay: Replay, env: dict[str, str], log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            replay.stage.cmd, cwd=replay.workdir, env=env, stdout=out, stderr=out
        )
    try:
        _wait_healthy(replay, env, process, log)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT_S)
            print(f"== {replay.name}: stopped (exit {code})", flush=True)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            print(f"== {replay.name}: killed after {STOP_TIMEOUT_S:.0f} s", flush=True)


def _wait_healthy(
    replay: Replay, env: dict[str, str], process: subprocess.Popen[bytes], log: Path
) -> None:
    """Run the HEALTHCHECK every second until it passes, within its start period (+30 s)."""
    check = list(replay.stage.healthcheck)
    for old, new in replay.ports.items():
        check = [re.sub(rf"(?<!\d){old}(?!\d)", str(new), word) for word in check]
    started = time.monotonic()
    deadline = started + replay.stage.start_period_s + 30.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ReplayError(
                f"{replay.name}: CMD exited {process.returncode} before it was healthy:\n"
                + log.read_text(errors="replace")[-4000:]
            )
        probe = subprocess.run(check, cwd=replay.workdir, env=env, capture_output=True, timeout=30)
        if probe.returncode == 0:
            waited = time.monotonic() - started
            print(
                f"== {replay.name}: healthy after {waited:.1f} s: {shlex.join(check)}", flush=True
            )
            return
        time.sleep(1.0)
    raise ReplayError(
        f"{replay.name}: not healthy within {deadline - started:.0f} s:\n"
        + log.read_text(errors="replace")[-4000:]
    )


def replay_services(
    services: list[str],
    compose_file: Path,
    path_map: list[tuple[str, str]],
    settings: list[tuple[str, str]],
    python: str,
    scratch: Path,
) -> None:
    """Build, install, start and health-check each service in order; stop them all at the end."""
    compose = yaml.safe_load(compose_file.read_text())
    replays = []
    for name in services:
        build = compose["services"][name].get("build")
        if not build:
            raise ReplayError(f"compose service {name} is not built from a Dockerfile")
        dockerfile = CHECKOUT / build.get("context", ".") / build["dockerfile"]
        stage = parse_final_stage(dockerfile)
        print(f"== {name}: {dockerfile} (final stage)", flush=True)
        for skipped in stage.skipped:
            print(f"   not replayed: {skipped}", flush=True)
        started = time.monotonic()
        workdir = build_tree(stage, scratch / name / "root")
        venv = scratch / name / "venv"
        install(stage, workdir, venv, python)
        print(f"== {name}: installed in {time.monotonic() - started:.0f} s", flush=True)
        ports = {port: free_port() for port in stage.exposed}
        replays.append(Replay(name, stage, workdir, venv, ports))
    # Another service's name:port becomes its loopback port; container paths become host paths.
    replacements = [
        (re.compile(rf"\b{re.escape(r.name)}:{old}\b"), f"127.0.0.1:{new}")
        for r in replays
        for old, new in r.ports.items()
    ]
    replacements += [
        (re.compile(rf"^{re.escape(src)}(?=/|$)"), str(Path(dst).resolve()))
        for src, dst in sorted(path_map, key=lambda p: -len(p[0]))
    ]
    with ExitStack() as stack:
        for replay in replays:
            own = [(re.compile(rf"^{old}$"), str(new)) for old, new in replay.ports.items()]
            own += [(re.compile(rf"(?<=:){old}$"), str(new)) for old, new in replay.ports.items()]
            mine = {k.split(".", 1)[1]: v for k, v in settings if k.split(".", 1)[0] == replay.name}
            env = _environment(
                replay, compose_environment(compose, replay.name), replacements + own, mine
            )
            print(f"== {replay.name}: starting {shlex.join(replay.stage.cmd)}", flush=True)
            stack.enter_context(_running(replay, env, scratch / f"{replay.name}.log"))
