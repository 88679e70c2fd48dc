"""Secrets (tokens, passwords) from the environment or files, and their redaction from every log.

A secret is read once at start-up, registered here, and from then on every log record created
in this process has it (and anything after ``Bearer ``) replaced by ``***`` before any handler,
formatter or test capture sees it: the record factory is wrapped, so no handler can miss it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from pathlib import Path

REDACTED = "***"
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",;]+")
# Shorter secrets are not redacted (they would mangle ordinary words); config refuses them.
MIN_SECRET_CHARS = 8

_lock = threading.Lock()
_secrets: set[str] = set()
_installed = False


class SecretError(ValueError):
    """A secret setting is unusable (unreadable file, too short); the message never holds it."""


def read_secret(value: str, file: str | Path | None = None, name: str = "secret") -> str:
    """One secret: the contents of ``file`` (stripped) when given, else ``value``."""
    if file:
        try:
            text = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"{name}: cannot read file {file}: {exc.strerror}") from None
        if not text:
            raise SecretError(f"{name}: file {file} is empty")
        return text
    return value


def read_secret_list(value: str, file: str | Path | None = None, name: str = "tokens") -> list[str]:
    """Several secrets: comma- or newline-separated, from ``file`` when given, else ``value``.

    Lines starting with ``#`` in a file are comments. Each secret must be at least
    MIN_SECRET_CHARS long, so that redaction is reliable and guessing is hard.
    """
    text = read_secret(value, file, name) if file else value
    items: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        items.extend(part.strip() for part in line.split(","))
    secrets = list(dict.fromkeys(s for s in items if s))
    for index, secret in enumerate(secrets):
        if len(secret) < MIN_SECRET_CHARS:
            raise SecretError(
                f"{name}: entry {index + 1} is shorter than {MIN_SECRET_CHARS} characters"
            )
    return secrets


def redact(text: str) -> str:
    """``text`` with every registered secret and every bearer credential replaced by ***."""
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


def register_secrets(secrets: Iterable[str]) -> None:
    """Redact these strings from all later log records of this process (idempotent)."""
    new = {s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}
    with _lock:
        _secrets.update(new)
    install_log_redaction()


def install_log_redaction() -> None:
    """Wrap the log record factory once so every record's text is redacted at creation."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it for logging's own error report
        return
    cleaned = redact(message)
    if cleaned != message or record.args:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
