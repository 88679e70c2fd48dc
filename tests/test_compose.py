"""The deployment files, checked without a Docker engine: structure, pins, health, GPU, env."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ris.embedder import config as embedder_config
from ris.search import config as search_config

ROOT = Path(__file__).resolve().parent.parent
_SUBST = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that understands compose's `!reset` merge tag."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)


def load(name: str) -> dict[str, Any]:
    return yaml.load((ROOT / name).read_text(), Loader=_ComposeLoader)


def substitute(value: str) -> str:
    """Apply compose's ${VAR:-default} with an empty environment, as a fresh deployment would."""
    return _SUBST.sub(lambda m: m.group(2) or "", value)


def service_env(compose: dict[str, Any], service: str) -> dict[str, str]:
    env = compose["services"][service].get("environment", {})
    return {k: substitute(str(v)) for k, v in env.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("docker-compose.yml")


def test_services_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"etcd", "minio", "standalone", "embedder", "search"}
    assert services["standalone"]["depends_on"] == {
        "etcd": {"condition": "service_healthy"},
        "minio": {"condition": "service_healthy"},
    }
    assert services["search"]["depends_on"] == {
        "standalone": {"condition": "service_healthy"},
        "embedder": {"condition": "service_healthy"},
    }


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and check["test"][0] == "CMD", f"{name} has no exec health check"
    for name, port in (("embedder", 50051), ("search", 50052)):
        test = compose["services"][name]["healthcheck"]["test"]
        assert test[1:3] == ["python", "scripts/grpc_health_probe.py"]
        assert test[3] == f"127.0.0.1:{port}"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: image {image!r} is not pinned"
    assert compose["services"]["standalone"]["image"].startswith("milvusdb/milvus:v2.")


def test_embedder_reserves_a_gpu_and_cpu_override_removes_it(compose: dict[str, Any]) -> None:
    devices = compose["services"]["embedder"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    cpu = load("docker-compose.cpu.yml")["services"]["embedder"]
    assert cpu["deploy"] is None  # !reset
    assert cpu["environment"]["RIS_EMBEDDER_PROVIDER"] == "cpu"


def test_published_ports_are_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), f"{name} publishes {mapping} beyond loopback"


def test_embedder_env_is_known_and_valid(compose: dict[str, Any]) -> None:
    env = service_env(compose, "embedder")
    fields = dataclasses.fields(embedder_config.EmbedderConfig)
    known = {embedder_config.ENV_PREFIX + f.name.upper() for f in fields}
    known.add(embedder_config.ENV_PREFIX + "MODEL")
    assert set(env) <= known, f"unknown variables: {set(env) - known}"
    config = embedder_config.from_env(env).validate()
    assert (config.host, config.port) == ("0.0.0.0", 50051)
    assert config.provider == "tensorrt" and config.allow_fallback
    assert str(config.model_paths[0]) == "/models/resnet50.onnx"
    cpu_env = env | load("docker-compose.cpu.yml")["services"]["embedder"]["environment"]
    assert embedder_config.from_env(cpu_env).validate().provider == "cpu"


def test_search_env_is_known_and_valid(compose: dict[str, Any]) -> None:
    env = service_env(compose, "search")
    known = set(search_config._ENV.values())
    assert set(env) <= known, f"unknown variables: {set(env) - known}"
    config = search_config.from_env(env).validate()
    assert config.embedder_addresses == ["embedder:50051"]
    assert not config.is_milvus_lite
    assert config.milvus_target() == "http://standalone:19530"
    assert config.port == 50052


def test_dockerfiles_run_as_non_root_with_grpc_health_check() -> None:
    for name in ("embedder", "search"):
        text = (ROOT / "docker" / f"{name}.Dockerfile").read_text()
        assert re.search(r"^USER ris$", text, re.MULTILINE), name
        assert "HEALTHCHECK" in text and "grpc_health_probe.py" in text, name
        final_stage = text.rsplit("\nFROM ", 1)[-1]
        assert "USER ris" in final_stage, f"{name}: the final stage must drop root"
    assert "nvidia/cuda:" in (ROOT / "docker" / "embedder.Dockerfile").read_text()
