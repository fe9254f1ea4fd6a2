"""Where OAuth tokens live: one folder per remote under the user's config directory (no SDK import here)."""

from __future__ import annotations

import hashlib
from pathlib import Path

APP = "alloy-mcp-bridge"


def default_directory() -> Path:
    """`<the user's config dir>/alloy-mcp-bridge/oauth`."""
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP, appauthor=False)) / "oauth"


def oauth_directory(configured: Path | None) -> Path:
    return configured.expanduser() if configured is not None else default_directory()


def store_path(directory: Path, resource_url: str) -> Path:
    """The folder of one remote's tokens: named by a hash of its URL (no secret in a file name)."""
    return directory / hashlib.sha256(resource_url.encode()).hexdigest()[:16]


def has_tokens(directory: Path, resource_url: str) -> bool:
    return (store_path(directory, resource_url) / "oauth.json").is_file()
