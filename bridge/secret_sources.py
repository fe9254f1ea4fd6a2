"""Secrets kept outside the configuration: read from a file (later: a secret manager's command).

A file is the Docker / Kubernetes / password-manager way to hand a process a
secret without putting it in the client's config file or the environment.
"""

from __future__ import annotations

from pathlib import Path


def read_secret_file(path: Path) -> str:
    """A secret kept in a file: its content without the surrounding whitespace (a trailing newline is normal).

    Raises OSError when the file cannot be read, UnicodeDecodeError when it is not UTF-8 text.
    """
    return path.read_text(encoding="utf-8").strip()
