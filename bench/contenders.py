"""The contenders: how each one is launched and connected to by the SDK's client.

- `direct`: the SDK's own Streamable HTTP client talking to the server (the physical floor);
- `ours`: the SDK's stdio client → `python -m bridge` → the server;
- peers, when installed by `bench/install_peers.sh` into `bench/.peers/`: `mcp-remote` (npm),
  `mcp-stdio` and `mcp-proxy` (PyPI, each in its own venv).

Every contender speaks the `initialize` handshake era (`mode="legacy"`), the path every stdio bridge takes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

PEERS = Path(__file__).resolve().parent / ".peers"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Session:
    """A connected client, and the bridge process behind it (None for `direct`)."""

    client: Client
    process: psutil.Process | None = None

    def peak_rss_mib(self) -> float | None:
        """Peak resident memory of the bridge process (VmHWM), children included."""
        if self.process is None:
            return None
        total = 0.0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                with open(f"/proc/{proc.pid}/status") as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            total += int(line.split()[1]) / 1024
            except OSError:
                continue
        return total

    def cpu_seconds(self) -> float | None:
        """User + system CPU time used so far by the bridge process and every descendant.

        Each live process counts its own time plus `children_user`/`children_system` (psutil): the time of
        children it has already waited for, so a helper that exits between two readings is not lost.
        """
        if self.process is None:
            return None
        total = 0.0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:  # exited between listing and reading: its time is now its parent's
                continue
            total += _own_cpu_seconds(proc.pid, times) + times.children_user + times.children_system
        return total


def _own_cpu_seconds(pid: int, times: Any) -> float:
    """A process's own user + system time (all its threads, live and exited).

    psutil reads /proc/<pid>/stat, which counts in clock ticks (10 ms): too coarse for a few hundred calls of
    a fraction of a millisecond each. On Linux the process's CPU clock gives the same total in nanoseconds
    (`clock_gettime` on the clock id `clock_getcpuclockid(pid)` would return).
    """
    if sys.platform == "linux":
        try:
            return time.clock_gettime((~pid << 3) | 2)  # CPUCLOCK_SCHED of the whole process
        except OSError:
            pass
    return float(times.user + times.system)


@dataclass
class Contender:
    name: str
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    version: str = ""

    @property
    def is_direct(self) -> bool:
        return not self.command

    @contextlib.asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[Session]:
        if self.is_direct:
            # The SDK caps one SSE event at 1 MiB by default; lift it so big results can be measured.
            async with Client(streamable_http_client(url, max_sse_event_size=None), mode="legacy") as client:
                yield Session(client)
            return
        before = {p.pid for p in psutil.Process().children()}
        params = StdioServerParameters(command=self.command[0], args=[*self.command[1:], *self._url_args(url)],
                                       env={**self.env, **self._url_env(url)}, cwd=str(ROOT))
        with open(os.devnull, "w") as errlog:
            async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
                spawned = [p for p in psutil.Process().children() if p.pid not in before]
                yield Session(client, spawned[0] if spawned else None)

    def _url_args(self, url: str) -> list[str]:
        return [] if self.name == "ours" else self._peer_args(url)

    def _url_env(self, url: str) -> dict[str, str]:
        return {"ALLOY_MCP_URL": url} if self.name == "ours" else {}

    def _peer_args(self, url: str) -> list[str]:
        if self.name == "mcp-remote":
            return [url, "--allow-http", "--transport", "http-only", "--silent"]
        if self.name == "mcp-proxy":
            return ["--transport", "streamablehttp", url]
        return [url]


def ours() -> Contender:
    return Contender("ours", [sys.executable, "-m", "bridge"], {"ALLOY_LOG_LEVEL": "warning"})


def direct() -> Contender:
    return Contender("direct")


def available_peers() -> tuple[list[Contender], list[str]]:
    """The peers installed in bench/.peers, and a note for each one that is not."""
    peers: list[Contender] = []
    notes: list[str] = []
    node = shutil.which("node")
    remote_js = PEERS / "node" / "node_modules" / "mcp-remote" / "dist" / "proxy.js"
    if node and remote_js.exists():
        version = _run([node, "-p", f"require('{PEERS}/node/node_modules/mcp-remote/package.json').version"])
        peers.append(Contender("mcp-remote", [node, str(remote_js)], {}, version))
    else:
        notes.append("mcp-remote not installed (run bash bench/install_peers.sh)")
    for name in ("mcp-stdio", "mcp-proxy"):
        exe = PEERS / name / "bin" / name
        if exe.exists():
            version = _run([str(PEERS / name / "bin" / "python"), "-c",
                            f"import importlib.metadata as m; print(m.version('{name}'))"])
            peers.append(Contender(name, [str(exe)], {}, version))
        else:
            notes.append(f"{name} not installed (run bash bench/install_peers.sh)")
    return peers, notes


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
