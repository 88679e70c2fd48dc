"""Type-check the ris namespace, scripts and tests with mypy (the test command's types phase).

The wheel maps folders into one namespace (pyproject.toml's package-dir: client/ is ris.client,
and so on). mypy does not follow the import hook of an editable install, so this builds the same
mapping as a tree of links under .cache/typecheck and points mypy at it; paths in its report are
the repository's own.

Usage: python scripts/typecheck.py [extra mypy args]
       python scripts/typecheck.py --links-only   # only build the tree and print its path: the
                                                  # namespace where nothing installs ris (the
                                                  # GPU check's machine, scripts/gpu_check.sh)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".cache" / "typecheck"


def package_dirs() -> dict[str, str]:
    """pyproject.toml's package-dir: dotted package name -> folder."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return mapping


def link_tree(mapping: dict[str, str]) -> dict[str, str]:
    """The namespace as links into the checkout; returns link prefix -> real prefix."""
    shown: dict[str, str] = {}
    for package, folder in mapping.items():
        link = TREE.joinpath(*package.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(ROOT / folder, link.parent)
        if link.is_symlink() and os.readlink(link) != target:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
        shown[f"{link.relative_to(ROOT)}/"] = f"{folder}/"
    return shown


def run(args: list[str], shown: dict[str, str]) -> int:
    env = {**os.environ, "MYPYPATH": str(TREE)}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    report = done.stdout + done.stderr
    for link, real in sorted(shown.items(), key=lambda kv: -len(kv[0])):
        report = report.replace(link, real)
    print(report, end="")
    return done.returncode


def main() -> int:
    shown = link_tree(package_dirs())
    extra = sys.argv[1:]
    if extra == ["--links-only"]:
        print(TREE)
        return 0
    namespace = run(["-p", "ris", *extra], shown)
    tools = run(["scripts", "tests", *extra], shown)
    return namespace or tools


if __name__ == "__main__":
    sys.exit(main())
