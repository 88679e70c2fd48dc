"""ClientConfig: defaults, environment, overrides, validation; channels built from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ris.client.config import DEFAULT_ADDRESS, ClientConfig, RetryPolicy


def test_defaults_without_environment() -> None:
    config = ClientConfig.from_env({})
    assert config.address == DEFAULT_ADDRESS == "127.0.0.1:50052"
    assert not config.secure
    assert config.metadata() == ()
    assert config.retry == RetryPolicy()


def test_environment_fills_every_setting(tmp_path: Path) -> None:
    env = {
        "RIS_ADDRESS": "search.internal:443",
        "RIS_TLS": "yes",
        "RIS_TLS_ROOT_CERT": str(tmp_path / "ca.pem"),
        "RIS_TLS_CLIENT_CERT": str(tmp_path / "c.pem"),
        "RIS_TLS_CLIENT_KEY": str(tmp_path / "k.pem"),
        "RIS_TLS_SERVER_NAME": "search",
        "RIS_TOKEN": "s3cret",
        "RIS_TIMEOUT": "2.5",
        "RIS_INGEST_TIMEOUT": "90",
        "RIS_RETRIES": "3",
        "RIS_RETRY_BACKOFF": "0.05",
        "RIS_RETRY_MAX_BACKOFF": "1",
    }
    config = ClientConfig.from_env(env)
    assert config.address == "search.internal:443"
    assert config.secure and config.tls
    assert config.root_cert == tmp_path / "ca.pem"
    assert config.client_key == tmp_path / "k.pem"
    assert config.server_name == "search"
    assert config.metadata() == (("authorization", "Bearer s3cret"),)
    assert (config.timeout, config.ingest_timeout) == (2.5, 90.0)
    assert config.retry == RetryPolicy(max_attempts=3, initial_backoff=0.05, max_backoff=1.0)


def test_explicit_overrides_beat_environment_and_none_means_unset() -> None:
    env = {"RIS_ADDRESS": "a:1", "RIS_TOKEN": "env", "RIS_RETRIES": "7"}
    config = ClientConfig.from_env(env, address="b:2", token=None, retries=2)
    assert config.address == "b:2"
    assert config.token == "env"
    assert config.retry.max_attempts == 2


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RIS_TIMEOUT": "soon"}, "RIS_TIMEOUT"),
        ({"RIS_TLS": "maybe"}, "RIS_TLS"),
        ({"RIS_ADDRESS": "no-port"}, "host:port"),
        ({"RIS_TLS_CLIENT_CERT": "c.pem"}, "go together"),
        ({"RIS_RETRIES": "0"}, "max_attempts"),
        ({"RIS_TIMEOUT": "0"}, "positive"),
    ],
)
def test_bad_settings_are_refused_with_their_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClientConfig.from_env(env)


def test_root_cert_alone_turns_tls_on(tmp_path: Path) -> None:
    assert ClientConfig.from_env({}, root_cert=str(tmp_path / "ca.pem")).secure
