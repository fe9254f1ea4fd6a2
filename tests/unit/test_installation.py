"""How a client config starts this installation (`bridge.installation`)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from bridge import installation
from bridge.installation import Installation, launch_command

CHECKOUT = Installation(from_index=False, source=Path("/src/bridge"), executable=None, ephemeral=False)


@pytest.mark.parametrize(("prefix", "cached"), [
    ("/home/a/.cache/uv/archive-v0/xyz", True),
    ("C:\\Users\\a\\AppData\\Local\\uv\\cache\\archive-v0\\abc", True),
    ("/Users/a/Library/Caches/uv/builds-v0/x", True),
    ("/home/a/project/.venv", False),
    ("/home/a/.local/share/uv/tools/alloy-mcp-bridge", False),
    ("/home/a/uv/archive-viewer/.venv", False),
])
def test_an_environment_in_uvs_cache_is_recognised_on_every_os(prefix, cached):
    assert installation._is_uv_cache(Path(prefix)) is cached


def test_a_venv_python_is_kept_as_the_venvs_not_resolved_to_the_base_interpreter(tmp_path, monkeypatch):
    venv_python = tmp_path / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(venv_python))
    assert launch_command("path", CHECKOUT).command == str(venv_python)


def test_uvx_behind_a_symlink_is_kept_by_the_link_that_survives_upgrades(tmp_path, monkeypatch):
    cellar = tmp_path / "Cellar" / "uv" / "0.9.1" / "bin" / "uvx"
    cellar.parent.mkdir(parents=True)
    cellar.write_text("")
    link = tmp_path / "bin" / "uvx"
    link.parent.mkdir()
    link.symlink_to(cellar)
    monkeypatch.setattr(shutil, "which", lambda name: str(link) if name == "uvx" else None)
    assert launch_command("uvx", CHECKOUT).command == str(link)
