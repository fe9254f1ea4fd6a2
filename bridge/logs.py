"""Logging to stderr (and optionally a file), with secrets redacted at the handler.

Redaction happens on the fully formatted record, traceback included, so it
does not matter which logger wrote it (ours, httpx2, httpcore, the SDK) or
how a secret got into the text (a URL, a header dump, an exception message).
Uncaught exceptions and warnings are routed through the same handlers.

One `SecretList` is the single source of what to hide: the log handlers and
the error messages the bridge writes to the desktop read the same list, and a
secret learned at run time (a rotated user token) joins it for both at once.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

REDACTED = "***"
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"  # the pid tells copies apart
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Loggers that log full URLs (and with them a token URL's secret) at INFO; quiet unless debugging.
_CHATTY = ("httpx2", "httpx", "mcp")
# Loggers that narrate every socket operation; never useful in a bridge log.
_NOISY = ("httpcore2", "httpcore", "hpack")


class SecretList:
    """Every value that must never be shown, longest first so no secret is half-masked by a shorter one."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.values: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Hide each of `secrets` from now on, in every spelling it may be shown in (see `secret_forms`)."""
        self.values = tuple(sorted({*self.values, *secret_forms(secrets)}, key=len, reverse=True))

    def redact(self, text: str) -> str:
        return redact(text, self.values)

    def shorten(self, text: str, limit: int = 300) -> str:
        """`text` for a message: secrets redacted first, then cut to `limit` (a secret never half-shows)."""
        text = self.redact(text)
        return text if len(text) <= limit else text[:limit] + "…"

    def redact_value(self, value: Any) -> Any:
        """A JSON value with every secret redacted in every string (keys included)."""
        if not self.values:
            return value
        if isinstance(value, str):
            return redact(value, self.values)
        if isinstance(value, list):
            return [self.redact_value(item) for item in value]
        if isinstance(value, dict):
            return {self.redact_value(key): self.redact_value(item) for key, item in value.items()}
        return value

    def __repr__(self) -> str:
        return f"SecretList({len(self.values)} values)"


def secret_forms(secrets: Iterable[str]) -> tuple[str, ...]:
    """Each secret in every spelling it may be shown in, longest first (redaction order).

    As given; URL-encoded (upper- and lower-case percent escapes); decoded, when it was written
    URL-encoded; and JSON-escaped.
    """
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        spellings = {secret, unquote(secret)}
        for spelling in list(spellings):
            encoded = quote(spelling, safe="")
            spellings |= {encoded, _PERCENT_ESCAPE.sub(lambda m: m.group().lower(), encoded),
                          _PERCENT_ESCAPE.sub(lambda m: m.group().upper(), spelling),
                          _PERCENT_ESCAPE.sub(lambda m: m.group().lower(), spelling)}
        for spelling in spellings:
            if spelling:
                forms.add(spelling)
                forms.add(json.dumps(spelling)[1:-1])
    return tuple(sorted(forms, key=len, reverse=True))


class RedactingFormatter(logging.Formatter):
    """A formatter that replaces every known secret in the finished text with `***`."""

    def __init__(self, secrets: SecretList | Iterable[str] = (), fmt: str = _FORMAT) -> None:
        super().__init__(fmt)
        self._secrets = secrets if isinstance(secrets, SecretList) else SecretList(secrets)

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets.values

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        # The message may carry the remote's words: a line break in them must not forge a log line.
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return self._secrets.redact(super().format(record))


_CONTROLS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def escape_controls(text: str) -> str:
    """Control characters and line separators written as escapes (`\\n`, `\\x1b`), so text from outside
    can neither forge a log line nor drive a terminal."""
    if _CONTROLS.search(text) is None:
        return text
    return _CONTROLS.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `***`."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def create_log_file(path: Path) -> None:
    """Create the log file (and its folder) readable by the user only, unless it exists; raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(descriptor)


def configure_logging(level: str = "info", log_file: Path | None = None, secrets: SecretList | None = None,
                      max_bytes: int = 10 * 1024 * 1024, backups: int = 3) -> None:
    """Install the bridge's handlers on the root logger: stderr always, a file when asked.

    Never touches stdout, which carries only JSON-RPC.
    """
    formatter = RedactingFormatter(secrets if secrets is not None else SecretList())
    # Text from outside may hold what the console cannot encode (a lone surrogate, or any non-ASCII on a
    # legacy Windows code page): it is escaped, never a logging error.
    reconfigure = getattr(sys.stderr, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(_PrivateRotatingFileHandler(log_file, maxBytes=max_bytes, backupCount=backups,
                                                    encoding="utf-8", errors="backslashreplace"))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    numeric = _LEVELS.get(level, logging.INFO)
    root.setLevel(numeric)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    sys.excepthook = _log_uncaught


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Size-rotated log files, each new one created readable by the user only."""

    def _open(self):  # type: ignore[no-untyped-def]
        create_log_file(Path(self.baseFilename))
        return super()._open()


def _log_uncaught(exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
    logging.getLogger(__name__).critical("uncaught exception", exc_info=(exc_type, exc, tb))
