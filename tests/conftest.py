"""Fixtures: a real remote MCP server on 127.0.0.1, and the bridge driven through the SDK's stdio client.

Every bridge started through these fixtures writes its stderr to a file; after
each test, every such file (and any log file the test used) is scanned for
every secret the tests use. One hit fails the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = Path(__file__).resolve().parent.parent

SERVER_ID = "srv_test"
API_KEY = "ak_live_TESTSECRET_5f3c9a1d"
ACCESS_TOKEN = "tok_TESTSECRET_91b2c4e7"
USER_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnX1RFU1RTRUNSRVRfand0"
USER_ID = "user-42"
ROTATED_TOKENS = ("eyJ.ROTATEDSECRET_A.sig1", "eyJ.ROTATEDSECRET_B.sig2")
SECRETS = (API_KEY, ACCESS_TOKEN, USER_TOKEN, *ROTATED_TOKENS)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the remote -----------------------------------------------------------------------------


@dataclass
class RemoteServer:
    """A `tests.remote_server` subprocess and its control API."""

    args: list[str] = field(default_factory=list)
    port: int = 0
    process: subprocess.Popen[str] | None = None
    scheme: str = "http"

    def start(self) -> RemoteServer:
        cmd = [sys.executable, "-m", "tests.remote_server", "--port", str(self.port), "--server-id", SERVER_ID,
               "--api-key", API_KEY, "--token", ACCESS_TOKEN, *self.args]
        self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"test server failed to start: {line!r}")
        self.port = int(line.split()[1])
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                self.state()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("test server did not become ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Kill the process and start a new one on the same port (all sessions forgotten)."""
        self.stop()
        self.start()

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp/{SERVER_ID}"

    @property
    def token_url(self) -> str:
        return f"{self.base}/mcp/{SERVER_ID}/{ACCESS_TOKEN}"

    def _control(self, command: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload or {}).encode()
        request = urllib.request.Request(f"{self.scheme}://127.0.0.1:{self.port}/_control/{command}", data=data,
                                         method="POST")
        # The test's own control channel to its own loopback server; the bridge verifies TLS properly.
        context = ssl._create_unverified_context() if self.scheme == "https" else None  # noqa: S323
        with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
            return json.loads(response.read())

    def state(self) -> dict[str, Any]:
        return self._control("state")

    def add_rule(self, action: dict[str, Any], *, rpc: str | None = None, tool: str | None = None,
                 http: str | None = None, times: int = 1) -> None:
        self._control("rules", {"rules": [{"action": action, "rpc": rpc, "tool": tool, "http": http,
                                           "times": times}]})

    def clear(self) -> None:
        self._control("clear")

    def reset(self) -> None:
        self._control("clear")
        self._control("reset")

    def expire_sessions(self) -> None:
        self._control("expire")

    def notify(self, kind: str, **extra: Any) -> None:
        self._control("notify", {"kind": kind, **extra})

    def accept_user_tokens(self, *tokens: str) -> None:
        """From now on, only these user JWTs are valid (the others are "revoked")."""
        self._control("user_tokens", {"accept": list(tokens)})

    def set_latency(self, seconds: float) -> None:
        self._control("latency", {"seconds": seconds})

    def requests(self, rpc: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.state()["requests"] if rpc is None or r["rpc"] == rpc]

    def executions(self) -> dict[str, int]:
        return self.state()["executions"]


class Notifications:
    """A client `message_handler` that records server notifications of one type."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.seen: list[Any] = []
        self.arrived = anyio.Event()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, self.kind):
            self.seen.append(message)
            self.arrived.set()

    async def wait(self, timeout: float = 10.0) -> None:
        with anyio.fail_after(timeout):
            await self.arrived.wait()

    @property
    def uris(self) -> list[str]:
        return [str(message.params.uri) for message in self.seen]


async def notify_until(server: RemoteServer, arrived: anyio.Event, kind: str, timeout: float = 10.0,
                       **extra: Any) -> None:
    """Ask the server to notify until the desktop saw it (a stream being re-opened may miss the first one)."""
    with anyio.fail_after(timeout):
        while not arrived.is_set():
            server.notify(kind, **extra)
            with anyio.move_on_after(0.25):
                await arrived.wait()


@contextlib.contextmanager
def running_remote(*args: str, scheme: str = "http") -> Iterator[RemoteServer]:
    server = RemoteServer(list(args), scheme=scheme).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def shared_remote() -> Iterator[RemoteServer]:
    with running_remote() as server:
        yield server


@pytest.fixture
def remote(shared_remote: RemoteServer) -> RemoteServer:
    """The shared test server, with rules and counters reset for this test."""
    shared_remote.reset()
    return shared_remote


# --- the bridge -----------------------------------------------------------------------------

_stderr_files: list[Path] = []


def bridge_env(remote: RemoteServer | None = None, **overrides: str | None) -> dict[str, str]:
    """Environment for a bridge talking to `remote` with Alloy-style header auth."""
    env: dict[str, str] = {"ALLOY_LOG_LEVEL": "debug", "ALLOY_CONNECT_TIMEOUT": "3", "ALLOY_READ_TIMEOUT": "20",
                           "ALLOY_RETRY_BUDGET": "5"}
    if remote is not None:
        env.update({"ALLOY_MCP_URL": remote.url, "ALLOY_API_KEY": API_KEY, "ALLOY_USER_ID": USER_ID})
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def bridge_command() -> list[str]:
    return [sys.executable, "-m", "bridge"]


@dataclass
class BridgeRun:
    """One bridge process: its stderr file, and what the test observed."""

    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@contextlib.asynccontextmanager
async def open_bridge(tmp_path: Path, env: dict[str, str], *, args: list[str] | None = None,
                      **client_options: Any) -> AsyncIterator[tuple[Client, BridgeRun]]:
    """Launch the bridge as a subprocess and connect the SDK's Client to it over stdio."""
    stderr_path = tmp_path / f"bridge-stderr-{len(_stderr_files)}.log"
    _stderr_files.append(stderr_path)
    params = StdioServerParameters(command=bridge_command()[0], args=[*bridge_command()[1:], *(args or [])],
                                   env=env, cwd=str(tmp_path))
    run = BridgeRun(stderr_path)
    with stderr_path.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), **client_options) as client:
            yield client, run
        errlog.flush()


@pytest.fixture(autouse=True)
def no_secret_in_bridge_output(tmp_path: Path) -> Iterator[None]:
    """After each test: no secret in any bridge stderr or log file the test produced."""
    start = len(_stderr_files)
    yield
    files = _stderr_files[start:] + sorted(tmp_path.glob("**/*.log"))
    for path in files:
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        for secret in SECRETS:
            assert secret not in text, f"secret leaked into {path.name}"


# --- raw stdio driving (for hostile input) ---------------------------------------------------


@dataclass
class RawBridge:
    """A bridge process driven with raw bytes on stdin (no SDK client in between)."""

    process: anyio.abc.Process
    stderr_path: Path
    buffer: bytes = b""

    async def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(data)

    async def send_json(self, payload: Any) -> None:
        await self.send(json.dumps(payload).encode() + b"\n")

    async def read_message(self, timeout: float = 10) -> Any:
        """The next stdout line, parsed (fails the test if stdout is not JSON)."""
        assert self.process.stdout is not None
        with anyio.fail_after(timeout):
            while b"\n" not in self.buffer:
                chunk = await self.process.stdout.receive()
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    async def read_until(self, predicate: Any, timeout: float = 10) -> Any:
        with anyio.fail_after(timeout):
            while True:
                message = await self.read_message(timeout)
                if predicate(message):
                    return message

    async def request(self, request_id: Any, method: str, params: dict[str, Any] | None = None,
                      timeout: float = 10) -> Any:
        payload: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            payload["params"] = params
        await self.send_json(payload)
        return await self.read_until(lambda m: m.get("id") == request_id and "method" not in m, timeout)

    async def initialize(self) -> Any:
        answer = await self.request("init", "initialize", {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}})
        await self.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@contextlib.asynccontextmanager
async def raw_bridge(tmp_path: Path, env: dict[str, str], args: list[str] | None = None) -> AsyncIterator[RawBridge]:
    stderr_path = tmp_path / f"bridge-stderr-{len(_stderr_files)}.log"
    _stderr_files.append(stderr_path)
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("ALLOY_")}, **env}
    with stderr_path.open("wb") as errlog:
        process = await anyio.open_process([*bridge_command(), *(args or [])], env=full_env, cwd=str(tmp_path),
                                           stderr=errlog)
        raw = RawBridge(process, stderr_path)
        try:
            yield raw
        finally:
            with contextlib.suppress(Exception):
                assert process.stdin is not None
                await process.stdin.aclose()
            with anyio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
