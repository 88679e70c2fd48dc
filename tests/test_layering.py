"""The house's layering, read from the code's own imports (every `import`, lazy ones included):
each room of the ris namespace imports only the rooms below it, and no modules import each
other in a circle. The rooms and their folders are pyproject.toml's package-dir."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent

# Room -> the rooms it may import (bottom to top). The client sees only the pure modules of
# ris.common (CLIENT_COMMON): it installs without the services' dependencies.
ALLOWED: dict[str, set[str]] = {
    "api": set(),
    "common": {"api"},
    "client": {"api", "common"},
    "embedder": {"api", "common"},
    "search": {"api", "common"},
    # Above the services: the harness, benchmarks and checks start and read them. ris eval
    # and ris bench themselves use the client alone (test_cli_e2e checks what they load).
    "tools": {"api", "common", "client", "embedder", "search", "gateway"},
    "gateway": {"api", "common", "client"},
    "launcher": {"api", "common", "client", "embedder", "search", "gateway"},
    "cli": {"api", "common", "client", "tools", "gateway", "launcher"},
}
CLIENT_COMMON = {"ris.common.imaging", "ris.common.names", "ris.common.status"}


def package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {
        pkg: ROOT / folder for pkg, folder in config["tool"]["setuptools"]["package-dir"].items()
    }


def modules() -> dict[str, Path]:
    """Every module of the namespace by dotted name (generated stubs included)."""
    found: dict[str, Path] = {}
    for package, folder in package_dirs().items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports(name: str, path: Path) -> Iterator[str]:
    """The ris.* modules `name` imports, resolved against what exists."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {target for target in imports(name, path) if target in known and target != name}
        for name, path in known.items()
    }


def room(module: str) -> str:
    return module.split(".")[1]


def test_every_room_has_a_rule() -> None:
    assert {pkg.split(".")[1] for pkg in package_dirs()} == set(ALLOWED)


def test_rooms_import_only_rooms_below_them() -> None:
    wrong = sorted(
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if room(target) != room(source) and room(target) not in ALLOWED[room(source)]
    )
    assert not wrong, "imports that run up the house:\n" + "\n".join(wrong)


def test_the_client_uses_only_the_pure_part_of_common() -> None:
    used = {
        t for s, ts in graph().items() if room(s) == "client" for t in ts if room(t) == "common"
    }
    assert used <= CLIENT_COMMON, sorted(used - CLIENT_COMMON)


def test_no_import_circles() -> None:
    edges = graph()
    # Package faces (__init__ re-exporting its own modules) are not circles of logic.
    for name in edges:
        edges[name] = {t for t in edges[name] if t != name.rsplit(".", 1)[0]}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_the_reader_sees_imports() -> None:
    """The test would pass on a blind reader: it must see known arrows."""
    edges = graph()
    assert "ris.client.client" in edges["ris.client"]
    assert "ris.launcher.serve" in edges["ris.cli.main"]
    assert "ris.embedder.server" in edges["ris.launcher.serve"]  # a lazy import
    assert "ris.api.search_pb2" in edges["ris.api.search_pb2_grpc"]  # a relative import
