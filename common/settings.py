"""Pieces of configuration parsing both services share: the error type and boolean text."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A setting is out of range or unknown; raised before anything starts."""


def parse_bool(text: str) -> bool:
    """1/true/yes/on and 0/false/no/off (any case; empty = false); anything else is an error."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"not a boolean: {text!r}")


def require(checks: Iterable[tuple[bool, str]]) -> None:
    """Raise ConfigError with the message of the first failed check."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
