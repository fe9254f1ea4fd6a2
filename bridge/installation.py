"""How this very installation of the bridge is started: the command a client config must run.

A desktop client starts the bridge with a command line of its own, without the
user's shell profile (no `~/.local/bin` or Homebrew on its PATH). The command
written into a client config must therefore start *this* installation, by an
absolute path:

- installed from the package index: `uvx alloy-mcp-bridge` (uvx by its absolute
  path), which also keeps the bridge up to date;
- a checkout or a local wheel (`pip install -e .`, `uv run`, a wheel file): the
  absolute path of this environment's `alloy-mcp-bridge` executable, or
  `uvx --from <checkout>` when asked for uvx.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

DISTRIBUTION = "alloy-mcp-bridge"
Launcher = Literal["auto", "uvx", "path"]


@dataclass(frozen=True)
class LaunchCommand:
    """The command and arguments that start the bridge, and what the user should know about them."""

    command: str
    args: tuple[str, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Installation:
    """Where the running bridge came from."""

    from_index: bool  # installed from a package index (no direct URL recorded)
    source: Path | None  # the checkout or wheel it was installed from, when local
    executable: Path | None  # this environment's `alloy-mcp-bridge` script
    ephemeral: bool  # an environment uvx made in its cache (it may vanish)


def current_installation() -> Installation:
    """Inspect the running installation (its distribution metadata and environment)."""
    source: Path | None = None
    from_index = True
    try:
        direct = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:  # running from a bare checkout on sys.path
        direct = json.dumps({"url": Path(__file__).resolve().parent.parent.as_uri(), "dir_info": {}})
    if direct:
        from_index = False
        url = json.loads(direct).get("url", "")
        parts = urlsplit(url)
        if parts.scheme == "file":
            source = Path(unquote(parts.path))
            if sys.platform == "win32" and str(source).startswith("\\"):
                source = Path(str(source).lstrip("\\"))
    return Installation(from_index=from_index, source=source, executable=_script_path(),
                        ephemeral=_is_uv_cache(Path(sys.prefix)))


def _script_path() -> Path | None:
    scripts = Path(sysconfig.get_path("scripts"))
    for name in (DISTRIBUTION, f"{DISTRIBUTION}.exe"):
        candidate = scripts / name
        if candidate.is_file():
            return _absolute(candidate)
    return None


_CACHE_FOLDER = re.compile(r"(archive|builds)-v\d+")


def _is_uv_cache(prefix: Path) -> bool:
    """An environment in uv's cache: `~/.cache/uv/…`, or `…/uv/[cache/]archive-v0/…` (any OS)."""
    text = "/" + str(prefix).replace("\\", "/").lower().strip("/") + "/"
    if "/.cache/uv/" in text:
        return True
    _, found, after = text.partition("/uv/")
    return bool(found) and any(_CACHE_FOLDER.fullmatch(part) for part in after.split("/"))


def _absolute(path: str | Path) -> Path:
    """`path` made absolute without resolving symlinks: a venv's `python` must stay the venv's (resolving it
    gives the base interpreter, without the bridge), and Homebrew's `uvx` must survive `brew upgrade`."""
    return Path(os.path.abspath(path))


def launch_command(launcher: Launcher = "auto", installation: Installation | None = None) -> LaunchCommand:
    """The command a client config should run to start this installation.

    Raises:
        LookupError: the requested launcher cannot start this installation (e.g. uvx is not installed).
    """
    found = installation or current_installation()
    uvx = shutil.which("uvx")
    if launcher == "auto":
        launcher = "uvx" if (found.from_index or found.ephemeral) and uvx else "path"
    if launcher == "uvx":
        if uvx is None:
            raise LookupError("uvx is not on PATH; install uv (https://docs.astral.sh/uv/) or use --launcher path")
        notes = ("the entry runs uvx by its absolute path: desktop clients do not read your shell profile",)
        if found.from_index or found.source is None:
            return LaunchCommand(str(_absolute(uvx)), (DISTRIBUTION,), notes)
        return LaunchCommand(str(_absolute(uvx)), ("--from", str(found.source), DISTRIBUTION),
                             (*notes, f"uvx builds the bridge from {found.source}; keep that path in place"))
    if found.ephemeral:
        raise LookupError("this bridge runs from uvx's cache, which may be cleaned up; use --launcher uvx")
    if found.executable is not None:
        return LaunchCommand(str(found.executable), (), (
            "the entry runs this installation by its absolute path: desktop clients do not read your shell "
            "profile; run `config` again if you move or reinstall it",))
    return LaunchCommand(str(_absolute(sys.executable)), ("-m", "bridge"), (
        "the entry runs this Python by its absolute path with -m bridge",))
