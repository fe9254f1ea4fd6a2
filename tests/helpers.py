"""Test helpers: a real remote MCP server on 127.0.0.1, and the bridge driven through the SDK's stdio client
or with raw bytes.

Every bridge started through these helpers writes its stderr to a file listed in
`stderr_files`; after each test, `conftest.py` scans every such file (and any
log file the test used) for every secret the tests use. One hit fails the test.
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
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

ROOT = Path(__file__).resolve().parent.parent

SERVER_ID = "srv_test"
API_KEY = "ak_live_TESTSECRET_5f3c9a1d"
ACCESS_TOKEN = "tok_TESTSECRET_91b2c4e7"
USER_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnX1RFU1RTRUNSRVRfand0"
USER_ID = "user-42"
ROTATED_TOKENS = ("eyJ.ROTATEDSECRET_A.sig1", "eyJ.ROTATEDSECRET_B.sig2")
SECRETS = (API_KEY, ACCESS_TOKEN, USER_TOKEN, *ROTATED_TOKENS)


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


# --- the bridge -----------------------------------------------------------------------------

stderr_files: list[Path] = []


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
    stderr_path = tmp_path / f"bridge-stderr-{len(stderr_files)}.log"
    stderr_files.append(stderr_path)
    params = StdioServerParameters(command=bridge_command()[0], args=[*bridge_command()[1:], *(args or [])],
                                   env=env, cwd=str(tmp_path))
    run = BridgeRun(stderr_path)
    with stderr_path.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), **client_options) as client:
            yield client, run
        errlog.flush()


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
    stderr_path = tmp_path / f"bridge-stderr-{len(stderr_files)}.log"
    stderr_files.append(stderr_path)
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


# --- small helpers ---------------------------------------------------------------------------

# The bridge's documented error codes (README, "Errors the desktop may see"). Pinned on purpose; do not import
# from bridge.errors: a code the bridge renumbers must fail the tests, since desktops and users rely on them.
# tests/test_faults.py::test_fault_codes_are_the_documented_ones checks the two sets stay equal.
UNREACHABLE = -32050
REMOTE_TIMEOUT = -32051
OUTCOME_UNKNOWN = -32052
AUTH_REJECTED = -32053
FORBIDDEN = -32054
NOT_FOUND = -32055
RATE_LIMITED = -32056
REMOTE_UNAVAILABLE = -32057
REMOTE_ERROR = -32058
BAD_RESPONSE = -32059
TOOL_BLOCKED = -32060
SESSION_LOST = -32061
MESSAGE_TOO_LARGE = -32062
DOCUMENTED_CODES = frozenset({UNREACHABLE, REMOTE_TIMEOUT, OUTCOME_UNKNOWN, AUTH_REJECTED, FORBIDDEN, NOT_FOUND,
                              RATE_LIMITED, REMOTE_UNAVAILABLE, REMOTE_ERROR, BAD_RESPONSE, TOOL_BLOCKED, SESSION_LOST,
                              MESSAGE_TOO_LARGE})


def text_of(result: Any) -> str:
    """The text of a tool result's content blocks."""
    return "".join(getattr(block, "text", "") for block in result.content)


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy (the tests' only way to wait on another process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await anyio.sleep(interval)
    raise AssertionError("condition not met in time")


async def connect_error(tmp_path: Path, env: dict[str, str]) -> MCPError:
    """The MCPError the SDK client raises when connecting through the bridge fails."""
    try:
        async with open_bridge(tmp_path, env):
            pass
    except BaseException as exc:  # noqa: BLE001 - unwrap the client's exception groups
        found = _find_mcp_error(exc)
        if found is not None:
            return found
        raise
    raise AssertionError("connecting unexpectedly succeeded")


def _find_mcp_error(exc: BaseException) -> MCPError | None:
    if isinstance(exc, MCPError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _find_mcp_error(inner)
        if found is not None:
            return found
    return _find_mcp_error(exc.__cause__) if exc.__cause__ is not None else None


# --- in-process pieces (tests/unit) ------------------------------------------------------------


class MemorySink:
    """A `Sink` that records what an upstream delivers and fails, for in-process transport tests."""

    def __init__(self) -> None:
        from bridge.inflight import InFlightTable

        self.inflight = InFlightTable()
        self.delivered: list[Any] = []
        self.failed: list[tuple[Any, Any]] = []
        self._changed = anyio.Event()

    async def deliver(self, message: Any) -> None:
        if message.is_answer and message.id is not None:
            if self.inflight.answer(message.id) is None:
                return
        self.delivered.append(message)
        self._changed.set()

    async def fail(self, pending: Any, failure: Any) -> None:
        if self.inflight.settle(pending):
            self.failed.append((pending, failure))
            self._changed.set()

    def is_open(self, pending: Any) -> bool:
        return self.inflight.get(pending.id) is pending

    def ask(self, upstream: Any, request_id: Any, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send a desktop request through `upstream`, tracked like the relay would."""
        from bridge.inflight import Pending
        from bridge.messages import build_request

        pending = Pending(build_request(request_id, method, params))
        self.inflight.add(pending)
        upstream.send(pending.message, pending)
        return pending

    def answered(self, request_id: Any) -> Any:
        """The answer (or failure) for `request_id`, or None."""
        for message in self.delivered:
            if message.is_answer and message.id == request_id:
                return message
        for pending, failure in self.failed:
            if pending.id == request_id:
                return failure
        return None

    async def wait_answered(self, *request_ids: Any, timeout: float = 5.0) -> list[Any]:
        with anyio.fail_after(timeout):
            while any(self.answered(i) is None for i in request_ids):
                changed = self._changed = anyio.Event()
                await changed.wait()
        return [self.answered(i) for i in request_ids]


@contextlib.asynccontextmanager
async def memory_http(handler: Any, **settings: Any) -> AsyncIterator[Any]:
    """A `RemoteHttp` whose remote is `handler(request) -> httpx2.Response` (sync or async), in memory."""
    import httpx2

    from bridge.endpoint import resolve_endpoint
    from bridge.http import RemoteHttp
    from bridge.logs import SecretList
    from bridge.settings import BridgeSettings

    options = {"mcp_url": "http://127.0.0.1:9/mcp/memory", "connect_timeout": 1, "read_timeout": 5, **settings}
    bridge_settings = BridgeSettings(**options)
    endpoint = resolve_endpoint(bridge_settings)
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler), headers=endpoint.headers) as client:
        yield RemoteHttp(client, bridge_settings, endpoint, SecretList(endpoint.secrets))


def jsonrpc_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    """An httpx2 JSON response for in-memory remotes."""
    import httpx2

    return httpx2.Response(status, json=body, headers=headers)
