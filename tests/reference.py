"""Reference MCP software nobody here wrote: the official `server-everything` and the MCP Inspector CLI.

Installed from `tests/npm/package.json` (pinned, with a lockfile) by `.ci/run`:
`npm ci --prefix tests/npm`. Tests that need them skip when they are missing —
except in CI (`CI=true`), where a missing install is a failure, so the suite can
never pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

NPM_DIR = Path(__file__).resolve().parent / "npm"
MODULES = NPM_DIR / "node_modules"
EVERYTHING = MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
INSPECTOR = MODULES / ".bin" / "mcp-inspector"


def require_reference_software() -> None:
    """Skip (or, in CI, fail) when node or the npm packages are not installed."""
    missing = [str(p) for p in (EVERYTHING, INSPECTOR) if not p.exists()]
    if shutil.which("node") is None:
        missing.append("node")
    if not missing:
        return
    message = f"reference MCP software missing ({', '.join(missing)}); run: npm ci --prefix tests/npm"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def everything_server(mode: str = "streamableHttp") -> Iterator[str]:
    """Run server-everything on 127.0.0.1 in `streamableHttp` or `sse` mode; yield its MCP URL."""
    require_reference_software()
    port = free_port()
    process = subprocess.Popen(["node", str(EVERYTHING), mode], env={**os.environ, "PORT": str(port)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if process.poll() is not None:
                raise RuntimeError("server-everything exited at start")
            time.sleep(0.05)
        else:
            raise RuntimeError("server-everything did not start listening")
        yield f"http://127.0.0.1:{port}/{'mcp' if mode == 'streamableHttp' else 'sse'}"
    finally:
        process.kill()
        process.wait(timeout=10)
