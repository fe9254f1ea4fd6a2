"""Secrets kept outside the configuration: read from a file, or printed by a secret manager's command.

A file is the Docker / Kubernetes / password-manager-mount way to hand a process
a secret; a command (`op read op://vault/alloy/key`, `vault kv get -field=key …`)
keeps it in a manager altogether. Neither the secret nor a command's output is
ever logged: a failing command is reported by its exit status and the first line
of its stderr.
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys
from pathlib import Path

COMMAND_TIMEOUT = 30.0


class SecretCommandError(Exception):
    """A secret command failed: the message says how (exit status, first stderr line), never its output."""


def read_secret_file(path: Path) -> str:
    """A secret kept in a file: its content without the surrounding whitespace (a trailing newline is normal).

    Raises OSError when the file cannot be read, UnicodeDecodeError when it is not UTF-8 text.
    """
    return path.read_text(encoding="utf-8").strip()


def split_command(command: str) -> list[str]:
    """The command's words, split like a shell would (without running one)."""
    return shlex.split(command, posix=sys.platform != "win32")


def run_secret_command(command: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run `command` (no shell) and return its stdout, stripped.

    Raises:
        SecretCommandError: it could not start, timed out, exited non-zero, or printed nothing.
    """
    try:
        words = split_command(command)
    except ValueError as exc:
        raise SecretCommandError(f"cannot be split into words ({exc})") from None
    if not words:
        raise SecretCommandError("is empty")
    try:
        result = subprocess.run(words, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise SecretCommandError(f"{words[0]!r} was not found (use its absolute path)") from None
    except subprocess.TimeoutExpired:
        raise SecretCommandError(f"did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise SecretCommandError(f"could not start ({type(exc).__name__})") from None
    if result.returncode != 0:
        first = result.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
        said = f": {first[0][:200]}" if first else ""
        raise SecretCommandError(f"exited with status {result.returncode}{said}")
    value = result.stdout.decode("utf-8", "replace").strip()
    if not value:
        raise SecretCommandError("printed nothing")
    return value


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (seconds since the epoch), read without verifying it; None if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None
