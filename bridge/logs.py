"""Logging to stderr (and optionally a file), with secrets redacted at the handler.

Redaction happens on the fully formatted record, traceback included, so it
does not matter which logger wrote it (ours, httpx2, httpcore, the SDK) or
how a secret got into the text (a URL, a header dump, an exception message).
Uncaught exceptions and warnings are routed through the same handlers.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

REDACTED = "***"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Loggers that log full URLs (and with them a token URL's secret) at INFO; quiet unless debugging.
_CHATTY = ("httpx2", "httpx", "mcp")
# Loggers that narrate every socket operation; never useful in a bridge log.
_NOISY = ("httpcore2", "httpcore", "hpack")


class RedactingFormatter(logging.Formatter):
    """A formatter that replaces every known secret in the finished text with `***`."""

    def __init__(self, secrets: Iterable[str] = (), fmt: str = _FORMAT) -> None:
        super().__init__(fmt)
        self.secrets: tuple[str, ...] = ()
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        """Replace the list of secrets; longest first so no secret is half-masked by a shorter one."""
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `***`."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def configure_logging(level: str = "info", log_file: Path | None = None, secrets: Iterable[str] = ()) -> None:
    """Install the bridge's handlers on the root logger: stderr always, a file when asked.

    Never touches stdout, which carries only JSON-RPC.
    """
    formatter = RedactingFormatter(secrets)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
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


def update_secrets(secrets: Iterable[str]) -> None:
    """Teach every installed handler more secrets (after configuration is resolved)."""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(formatter, RedactingFormatter):
            formatter.set_secrets((*formatter.secrets, *secrets))


def _log_uncaught(exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
    logging.getLogger("bridge").critical("uncaught exception", exc_info=(exc_type, exc, tb))
