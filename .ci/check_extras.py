"""Every extra named installs what it declares and its modules import, in this interpreter.

Reads ris's own metadata (pyproject.toml as installed), follows `ris[...]` self-references,
checks that each requirement is installed at a version its range accepts, then imports the
modules each extra exists for. Usage: python .ci/check_extras.py server export dev
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import PackageNotFoundError, distribution, version

from packaging.requirements import Requirement

# What each extra is for, as modules that must import with it installed.
MODULES = {
    "service": ["grpc_health.v1.health", "grpc_reflection.v1alpha.reflection", "prometheus_client"],
    "embedder": ["onnxruntime", "ris.embedder.server"],
    "embedder-gpu": ["onnxruntime", "ris.embedder.server"],
    "text": ["onnx", "ris.embedder.text_worker"],
    "search": ["pymilvus", "milvus_lite", "ris.search.server"],
    "gateway": ["uvicorn", "h11", "ris.gateway.protocol"],
    "server": ["ris.launcher.serve"],
    "server-gpu": ["ris.launcher.serve"],
    "export": ["torch", "onnx", "onnxscript"],
    "dev": ["grpc_tools.protoc", "pytest", "hypothesis", "ruff", "mypy", "yaml", "cryptography"],
}


def requirements(extra: str, seen: set[str]) -> list[Requirement]:
    """The extra's requirements, `ris[...]` expanded (each extra once)."""
    if extra in seen:
        return []
    seen.add(extra)
    found = []
    for text in distribution("ris").requires or []:
        req = Requirement(text)
        if not req.marker or not req.marker.evaluate({"extra": extra}):
            continue
        if req.name == "ris":
            for inner in sorted(req.extras):
                found += requirements(inner, seen)
        else:
            found.append(req)
    return found


def main(extras: list[str]) -> int:
    declared = set(distribution("ris").metadata.get_all("Provides-Extra") or [])
    problems = [f"ris has no extra {e!r}" for e in extras if e not in declared]
    problems += [f"{e}: no modules listed in MODULES" for e in declared if e not in MODULES]
    seen: set[str] = set()
    for extra in extras:
        for req in requirements(extra, seen):
            try:
                installed = version(req.name)
            except PackageNotFoundError:
                problems.append(f"{extra}: {req} is not installed")
                continue
            if not req.specifier.contains(installed, prereleases=True):
                problems.append(f"{extra}: {req.name} {installed} is outside {req.specifier}")
    for extra in sorted(seen):
        for module in MODULES.get(extra, []):
            try:
                importlib.import_module(module)
            except Exception as exc:
                problems.append(f"{extra}: import {module}: {type(exc).__name__}: {exc}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"extras ok: {', '.join(sorted(seen))}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
