"""Hostile remotes (issue 13): nothing a remote sends may crash the bridge, leak a secret, blow up memory or
hang a call.

Each test drives the bridge as a subprocess with raw stdin/stdout bytes (`raw_bridge`) against a remote of
our own on 127.0.0.1 (`tests.hostile_remote`) that misbehaves byte for byte, and asserts what a user would
notice: the desktop gets an answer (the documented error code where the issue names one), every stdout
line is strict JSON, no secret reaches stdout or stderr, the bridge keeps serving, and it exits 0 at stdin
EOF, all within bounded time.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from tests.helpers import (
    API_KEY,
    BAD_RESPONSE,
    MESSAGE_TOO_LARGE,
    OUTCOME_UNKNOWN,
    REMOTE_TIMEOUT,
    REMOTE_UNAVAILABLE,
    ROOT,
    SESSION_LOST,
    UNREACHABLE,
    USER_ID,
    USER_TOKEN,
    RawBridge,
    bridge_env,
    raw_bridge,
    wait_for,
)
from tests.hostile_remote import (
    FakeProxy,
    HostileRemote,
    Received,
    Reply,
    comments_forever,
    json_body,
    json_reply,
    rpc_error,
    rpc_result,
    sse_event,
    sse_reply,
    text_result,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]  # each test is bounded well below this

# JSON-RPC's own codes; the bridge's documented ones are pinned in tests/helpers.py (short names used here below).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
UNAVAILABLE = REMOTE_UNAVAILABLE
TOO_LARGE = MESSAGE_TOO_LARGE

TEAM_SECRET = "team_HOSTILESECRET_0c9d"  # a custom header value (ALLOY_MCP_HEADERS): a secret too
MiB = 1024 * 1024


# --- the desktop side: raw lines, each parsed strictly ---------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_BIG_LINE = 4 * MiB
_ID_NEAR_START = re.compile(rb'"id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)')
_KIND_NEAR_START = re.compile(rb'"(result|error)"\s*:')


def strict_json(line: bytes) -> Any:
    """One stdout line as a strict JSON parser (JSON.parse) sees it: UTF-8, no NaN / Infinity."""
    text = line.decode("utf-8")  # a lone surrogate written raw is not UTF-8
    if len(line) > _BIG_LINE:
        # Building the objects of a huge line would cost the test process gigabytes; check the envelope.
        assert b"NaN" not in line and b"Infinity" not in line, "non-JSON constant in a huge line"
        assert text.startswith("{") and text.rstrip().endswith("}"), "a huge line that is not a JSON object"
        head = line[:512]
        found = _ID_NEAR_START.search(head)
        request_id = json.loads(found.group(1)) if found else None
        # Whichever of "result" / "error" comes first in the raw head; never one made up.
        kinds = [(match.start(), match.group(1).decode()) for match in _KIND_NEAR_START.finditer(head)]
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "_bytes": len(line), "_head": head}
        if kinds:
            message[min(kinds)[1]] = {}
        return message
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(50_000)
        try:
            return json.loads(text, parse_constant=_reject_constant)
        finally:
            sys.setrecursionlimit(limit)


class BridgeGone(AssertionError):
    """The bridge closed stdout (it exited) while the desktop still waited for an answer."""


class Desktop:
    """The desktop end of a bridge: writes raw lines, reads every stdout line strictly."""

    def __init__(self, raw: RawBridge) -> None:
        self.raw = raw
        self.buffer = bytearray()
        self.stdout = bytearray()  # every byte the bridge wrote to stdout
        self.messages: list[Any] = []  # every stdout message, in order
        self._unclaimed: list[Any] = []

    @property
    def process(self) -> Any:
        return self.raw.process

    @property
    def stderr(self) -> str:
        return self.raw.stderr

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def send(self, data: bytes) -> None:
        await self.raw.send(data)

    async def send_json(self, payload: Any) -> None:
        await self.send(json.dumps(payload).encode() + b"\n")  # ensure_ascii: a lone surrogate as its escape

    async def next_message(self, timeout: float = 10.0) -> Any:
        assert self.process.stdout is not None
        with anyio.fail_after(timeout):
            while (end := self.buffer.find(b"\n")) < 0:
                try:
                    chunk = await self.process.stdout.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    code = await self.process.wait()
                    raise BridgeGone(f"the bridge exited with code {code} instead of answering; stderr ends:\n"
                                     + self.stderr[-3000:]) from None
                self.buffer += chunk
                self.stdout += chunk
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        message = strict_json(line)
        self.messages.append(message)
        return message

    async def answer(self, request_id: Any, timeout: float = 10.0) -> Any:
        """The answer to `request_id` (other messages are kept for later)."""
        with anyio.fail_after(timeout):
            while True:
                for message in self._unclaimed:
                    if isinstance(message, dict) and "method" not in message and message.get("id") == request_id:
                        self._unclaimed.remove(message)
                        return message
                self._unclaimed.append(await self.next_message(timeout))

    async def request(self, request_id: Any, method: str, params: dict[str, Any] | None = None,
                      timeout: float = 10.0) -> Any:
        await self.send_json(_request(request_id, method, params))
        return await self.answer(request_id, timeout)

    async def call(self, request_id: Any, tool: str, timeout: float = 10.0, **arguments: Any) -> Any:
        return await self.request(request_id, "tools/call", {"name": tool, "arguments": arguments}, timeout)

    async def initialize(self, version: str = "2025-11-25", request_id: Any = "init") -> Any:
        answer = await self.request(request_id, "initialize", _init_params(version))
        if "result" in answer:
            await self.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    async def finish(self, timeout: float = 5.0) -> int:
        """Close stdin (the desktop leaves), read stdout to its end strictly, and return the exit code."""
        assert self.process.stdin is not None and self.process.stdout is not None
        with contextlib.suppress(Exception):
            await self.process.stdin.aclose()
        with anyio.fail_after(timeout):
            while True:
                try:
                    chunk = await self.process.stdout.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                self.buffer += chunk
                self.stdout += chunk
            for line in bytes(self.buffer).splitlines():
                if line.strip():
                    self.messages.append(strict_json(line))
            self.buffer.clear()
            return await self.process.wait()


def _request(request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        payload["params"] = params
    return payload


def _init_params(version: str = "2025-11-25") -> dict[str, Any]:
    return {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "hostile-test", "version": "1"}}


def env_for(url: str, **overrides: str | None) -> dict[str, str]:
    """A bridge with Alloy-style header auth, quick timeouts and debug logs (every line scanned for secrets)."""
    base: dict[str, str | None] = {"ALLOY_MCP_URL": url, "ALLOY_API_KEY": API_KEY, "ALLOY_USER_ID": USER_ID,
                                   "ALLOY_CONNECT_TIMEOUT": "2", "ALLOY_READ_TIMEOUT": "3",
                                   "ALLOY_RETRY_BUDGET": "2"}
    base.update(overrides)
    return bridge_env(None, **base)


@contextlib.asynccontextmanager
async def desktop(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[Desktop]:
    async with raw_bridge(tmp_path, env) as raw:
        yield Desktop(raw)


def assert_error(answer: Any, *codes: int) -> dict[str, Any]:
    assert "error" in answer, f"expected an error answer, got {answer!r}"
    error = answer["error"]
    assert isinstance(error.get("message"), str) and error["message"], error
    if codes:
        assert error["code"] in codes, f"expected code {codes}, got {error}"
    return error


def echo_text(answer: Any) -> str:
    assert "result" in answer, f"expected a result, got {answer!r}"
    return "".join(block.get("text", "") for block in answer["result"]["content"])


async def still_serving(d: Desktop, request_id: Any = "still-there") -> None:
    """The bridge is alive and answers a `ping` (relayed to the remote) within a few seconds."""
    answer = await d.request(request_id, "ping", timeout=5)
    assert answer.get("result") == {}, answer
    assert d.alive


# --- Crashes --------------------------------------------------------------------------------------

_SURROGATE = b'internal \\ud800 failure'


def _surrogate_500(request: Received) -> Reply:
    return json_reply(b'{"error": {"message": "' + _SURROGATE + b'"}}', 500)


def _surrogate_400_rpc(request: Received) -> Reply:
    return json_reply(b'{"jsonrpc":"2.0","id":' + json_body(request.rpc_id) + b',"error":{"code":-32602,'
                      b'"message":"' + _SURROGATE + b'"}}', 400)


def _surrogate_503(request: Received) -> Reply:
    return json_reply(b'{"error": {"message": "' + _SURROGATE + b'"}}', 503)


@pytest.mark.parametrize("reply", [_surrogate_500, _surrogate_400_rpc, _surrogate_503],
                         ids=["500-error-object", "400-json-rpc-error", "503"])
async def test_error_message_with_a_lone_surrogate_does_not_crash_the_bridge(tmp_path, reply):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        remote.on("POST", "tools/call", reply, times=1)
        answer = await d.call(5, "echo", text="x", timeout=8)
        assert_error(answer)
        await still_serving(d)
        assert await d.finish() == 0


async def test_request_id_with_a_lone_surrogate_from_the_desktop_does_not_crash_the_bridge(tmp_path):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        remote.on("POST", "tools/call", _surrogate_500, times=1)
        # Answered by the bridge itself, and answered with the bridge's own error for a remote failure.
        discover = await d.request("\ud800-a", "server/discover", {}, timeout=5)
        failed = await d.call("\ud800-b", "echo", text="x", timeout=8)
        relayed = await d.call("\udc00-c", "echo", text="fine", timeout=5)
        assert_error(discover, -32601)
        assert_error(failed)
        assert echo_text(relayed) == "fine"
        await still_serving(d)
        assert await d.finish() == 0


def _deep(depth: int = 5000) -> bytes:
    return b"[" * depth + b"]" * depth


async def test_legacy_sse_event_nested_5000_deep_is_skipped_and_the_bridge_keeps_serving(tmp_path):
    async with HostileRemote(legacy_sse=True, sessions=False) as remote, \
            desktop(tmp_path, env_for(remote.url, ALLOY_TRANSPORT="sse")) as d:
        assert "result" in await d.initialize(), "the legacy SSE session did not start"
        remote.push_stream(sse_event(b'{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info",'
                                     b'"data":' + _deep() + b"}}", event="message"))
        # The answer comes on the same stream, after the deep event: the bridge must have survived it.
        answer = await d.call(3, "echo", text="after the deep event", timeout=8)
        assert echo_text(answer) == "after the deep event"
        assert await d.finish() == 0


async def test_legacy_sse_endpoint_event_with_a_malformed_url_is_refused_as_an_invalid_answer(tmp_path):
    async with HostileRemote(legacy_sse=True, sessions=False, endpoint_data="http://[::1") as remote, \
            desktop(tmp_path, env_for(remote.url, ALLOY_TRANSPORT="sse")) as d:
        answer = await d.request("init", "initialize", _init_params(), timeout=8)
        assert_error(answer, BAD_RESPONSE)
        assert_error(await d.request("discover", "server/discover", {}, timeout=5), -32601)  # still reading stdin
        assert d.alive
        assert await d.finish() == 0


async def test_stdin_line_nested_5000_deep_is_answered_and_the_bridge_keeps_serving(tmp_path):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        await d.send(b'{"jsonrpc":"2.0","id":7,"method":"ping","params":{"deep":' + _deep() + b"}}\n")
        answer = await d.next_message(timeout=5)
        assert_error(answer, PARSE_ERROR, INVALID_REQUEST)
        assert answer["id"] in (7, None)
        await still_serving(d)
        assert await d.finish() == 0


async def test_non_ascii_session_id_is_refused_as_an_invalid_answer_and_the_bridge_recovers(tmp_path):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        remote.on("POST", "initialize", lambda r: remote.initialize_reply(r, session_id="café".encode()), times=1)
        first = await d.request("init-1", "initialize", _init_params(), timeout=5)
        assert_error(first, BAD_RESPONSE)
        # The desktop starts over; the remote now behaves.
        second = await d.initialize(request_id="init-2")
        assert "result" in second, second
        assert echo_text(await d.call(3, "echo", text="after", timeout=5)) == "after"
        assert await d.finish() == 0


# --- Secrets --------------------------------------------------------------------------------------


def _straddling(prefix_len: int) -> str:
    return "a" * prefix_len + API_KEY + " and then some more text"


@pytest.mark.parametrize("carrier", ["json-error-message", "plain-text-body"])
async def test_a_secret_straddling_the_300_character_cut_is_redacted_not_half_shown(tmp_path, carrier):
    text = _straddling(301 - len(API_KEY))  # the cut at 300 falls on the key's last character
    if carrier == "json-error-message":
        reply = json_reply({"error": {"message": text}}, 500)
    else:
        reply = Reply(500, [("Content-Type", "text/plain")], text.encode())
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        remote.on("POST", "tools/call", reply, times=1)
        assert_error(await d.call(4, "echo", text="x", timeout=8))
        assert await d.finish() == 0
    partial = API_KEY[:-1]
    assert partial.encode() not in d.stdout, "the key minus its last character reached stdout"
    assert partial not in d.stderr, "the key minus its last character reached stderr"


def _echo_headers_error(status: int, carrier: str):
    def reply(request: Received) -> Reply:
        data = {"youSent": dict(request.headers)}
        error = rpc_error(request.rpc_id, -32602, "bad request: see data", data)
        if carrier == "sse":
            return sse_reply(sse_event(error, event="message"))
        return json_reply(error, status)

    return reply


@pytest.mark.parametrize("status,carrier", [(400, "json"), (200, "json"), (200, "sse")],
                         ids=["4xx-body", "200-json-body", "sse-event"])
async def test_secrets_echoed_in_a_json_rpc_error_are_redacted_everywhere_in_the_message(tmp_path, status, carrier):
    env = env_for("", ALLOY_USER_TOKEN=USER_TOKEN, ALLOY_MCP_HEADERS=json.dumps({"X-Team": TEAM_SECRET}))
    async with HostileRemote() as remote:
        env["ALLOY_MCP_URL"] = remote.url
        async with desktop(tmp_path, env) as d:
            await d.initialize()
            remote.on("POST", "tools/call", _echo_headers_error(status, carrier), times=1)
            error = assert_error(await d.call(4, "echo", text="x", timeout=8))
            assert "bad request" in error["message"]
            for secret in (API_KEY, USER_TOKEN, TEAM_SECRET):
                assert secret.encode() not in d.stdout, "a secret the remote echoed in error.data reached stdout"
            # A tool *result* is the remote's business: it passes unchanged.
            remote.on("POST", "tools/call", lambda r: json_reply(rpc_result(r.rpc_id, text_result(
                f"your key is {r.headers['authorization']}"))), times=1)
            assert echo_text(await d.call(5, "echo", text="x", timeout=5)) == f"your key is Bearer {API_KEY}"
            assert await d.finish() == 0
    assert TEAM_SECRET not in d.stderr


async def test_token_url_with_a_lower_case_percent_escape_is_masked_in_every_log_line(tmp_path):
    token_tail = "PCTSECRET_77aa41"
    async with HostileRemote() as remote:
        url = f"{remote.base}/mcp/srv_test/tok%7c{token_tail}"
        env = env_for(url, ALLOY_API_KEY=None, ALLOY_USER_ID=None, ALLOY_LOG_LEVEL="debug")
        async with desktop(tmp_path, env) as d:
            await d.initialize()
            assert echo_text(await d.call(2, "echo", text="x", timeout=5)) == "x"
            assert await d.finish() == 0
    assert any(r.target.endswith(token_tail) for r in remote.requests), "the token URL was not used"
    assert token_tail not in d.stderr, "the token of the token URL reached stderr"


async def test_a_remote_cannot_forge_log_lines_with_newlines_in_its_text(tmp_path):
    forged = "boom\n2099-01-01 00:00:00,000 CRITICAL bridge: FORGED by the remote\r\nFORGED second line"
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        remote.on("POST", "tools/call", json_reply({"error": {"message": forged}}, 500), times=1)
        assert_error(await d.call(4, "echo", text="x", timeout=8))
        assert await d.finish() == 0
    assert "FORGED" in d.stderr, "the remote's text was not logged at all; the test needs another carrier"
    for line in re.split(r"\r\n|\r|\n", d.stderr):
        assert not line.startswith("2099-01-01") and not line.startswith("FORGED"), f"forged log line: {line!r}"


# --- Output that is not JSON ----------------------------------------------------------------------


def _with_id(template: bytes):
    def reply_for(request: Received) -> bytes:
        return template.replace(b"{ID}", json_body(request.rpc_id))

    return reply_for


_HUGE_NUMBER = {
    "batch": lambda body: json_reply(body),
    "pretty-printed": lambda body: json_reply(body),
    "sse-batch": lambda body: sse_reply(sse_event(body, event="message")),
}
_HUGE_NUMBER_BODIES = {
    "batch": b'[{"jsonrpc":"2.0","id":{ID},"result":{"content":[{"type":"text","text":"n"}],"v":1e400}}]',
    "pretty-printed": (b'{\n  "jsonrpc": "2.0",\n  "id": {ID},\n'
                       b'  "result": {\n    "content": [],\n    "v": 1e400\n  }\n}'),
    "sse-batch": b'[{"jsonrpc":"2.0","id":{ID},"result":{"content":[{"type":"text","text":"n"}],"v":-1e400}}]',
}


@pytest.mark.parametrize("shape", list(_HUGE_NUMBER_BODIES))
async def test_a_number_too_large_for_a_double_never_comes_out_as_infinity(tmp_path, shape):
    body = _with_id(_HUGE_NUMBER_BODIES[shape])
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        remote.on("POST", "tools/call", lambda r: _HUGE_NUMBER[shape](body(r)), times=1)
        answer = await d.call(6, "echo", text="x", timeout=8)  # strict parsing: Infinity fails here
        if "error" in answer:
            assert_error(answer, BAD_RESPONSE)
        await still_serving(d)
        assert await d.finish() == 0


async def test_nan_in_a_remote_error_never_comes_out_as_nan(tmp_path):
    body = _with_id(b'{"jsonrpc":"2.0","id":{ID},"error":{"code":-32602,"message":"bad","data":{"v":NaN}}}')
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        remote.on("POST", "tools/call", lambda r: json_reply(body(r), 400), times=1)
        answer = await d.call(6, "echo", text="x", timeout=8)  # strict parsing: NaN fails here
        assert_error(answer, -32602, BAD_RESPONSE)
        await still_serving(d)
        assert await d.finish() == 0


# --- Memory and CPU bounded by the message limit ------------------------------------------------


class PeakRss:
    """The peak resident memory of a process, from psutil samples and (on Linux) the kernel's high-water mark."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._status = Path(f"/proc/{pid}/status")

    def sample(self) -> int:
        with contextlib.suppress(psutil.Error):
            self.peak = max(self.peak, self.process.memory_info().rss)
        with contextlib.suppress(OSError, ValueError):
            for line in self._status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak = max(self.peak, int(line.split()[1]) * 1024)
        return self.peak

    def current(self) -> int:
        return self.process.memory_info().rss

    async def watch(self) -> None:
        while True:
            self.sample()
            await anyio.sleep(0.01)


def _nested_lists_body(request_id: Any, size: int) -> bytes:
    head = (b'{"jsonrpc":"2.0","id":' + json_body(request_id)
            + b',"result":{"content":[{"type":"text","text":"big"}],"filler":[')
    count = (size - len(head)) // 3
    return head + b"[]," * (count - 1) + b"[]]}}"


async def test_a_big_answer_of_nested_empty_lists_stays_within_a_few_times_its_size_and_others_keep_flowing(tmp_path):
    size = 24 * MiB
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url, ALLOY_READ_TIMEOUT="20")) as d:
        await d.initialize()
        assert echo_text(await d.call("warm", "echo", text="warm")) == "warm"
        rss = PeakRss(d.process.pid)
        baseline = max(rss.sample(), rss.current())
        remote.on("POST", "tools/call", lambda r: json_reply(_nested_lists_body(r.rpc_id, size)), tool="big")
        sent: dict[str, float] = {}
        latencies: list[float] = []

        async def ping_meanwhile() -> None:
            for i in itertools.count():
                sent[f"ping-{i}"] = time.monotonic()
                await d.send_json(_request(f"ping-{i}", "ping"))
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            tg.start_soon(rss.watch)
            await d.send_json(_request("big", "tools/call", {"name": "big", "arguments": {}}))
            tg.start_soon(ping_meanwhile)
            with anyio.fail_after(30):
                while True:
                    message = await d.next_message(timeout=30)
                    if message.get("id") in sent:
                        latencies.append(time.monotonic() - sent[message["id"]])
                    elif message.get("id") == "big":
                        big = message
                        break
            tg.cancel_scope.cancel()
        peak = rss.sample()
        assert big.get("_bytes", 0) >= size * 0.9, "the big answer did not arrive whole"
        assert re.search(rb'"result"\s*:\s*\{"content"', big["_head"]) and b'"error"' not in big["_head"], big["_head"]
        slowest = max(latencies, default=0.0)
        grew = peak - baseline
        assert grew < 6 * size and slowest < 1, (
            f"peak memory grew by {grew / MiB:.0f} MiB for one {size / MiB:.0f} MiB answer; "
            f"pings sent meanwhile waited up to {slowest:.1f}s")
        assert await d.finish() == 0


async def test_an_sse_event_of_tiny_data_lines_is_refused_at_the_limit_without_blowing_up_memory(tmp_path):
    limit = 10 * MiB  # the smallest limit the bridge accepts

    async def tiny_lines() -> AsyncIterator[bytes]:
        block = b"data: a\n" * 8192
        sent = 0
        while sent < limit * 3 // 2:  # each line adds 2 bytes to the joined data: stop at 1.5 x the limit
            yield block
            sent += 8192 * 2

    env = env_for("", ALLOY_MAX_MESSAGE_BYTES=str(limit), ALLOY_READ_TIMEOUT="20")
    async with HostileRemote() as remote:
        env["ALLOY_MCP_URL"] = remote.url
        async with desktop(tmp_path, env) as d:
            await d.initialize()
            rss = PeakRss(d.process.pid)
            baseline = max(rss.sample(), rss.current())
            remote.on("POST", "tools/call", lambda r: sse_reply(b"event: message\n", then=tiny_lines()), tool="big")
            async with anyio.create_task_group() as tg:
                tg.start_soon(rss.watch)
                started = time.monotonic()
                answer = await d.call("big", "big", timeout=40)
                elapsed = time.monotonic() - started
                tg.cancel_scope.cancel()
            peak = rss.sample()
            assert_error(answer, TOO_LARGE)
            grew = peak - baseline
            assert grew < 6 * limit and elapsed < 5, (
                f"peak memory grew by {grew / MiB:.0f} MiB for a {limit / MiB:.0f} MiB limit; "
                f"the size error took {elapsed:.1f}s")
            await still_serving(d)
            assert await d.finish() == 0


# --- Waits that have no end ----------------------------------------------------------------------


async def test_a_huge_sse_retry_before_a_stream_drop_does_not_outlast_the_read_timeout(tmp_path):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url, ALLOY_READ_TIMEOUT="2")) as d:
        await d.initialize()
        # The stream gives an event id and `retry: 100000000` (28 hours), then ends without the answer.
        remote.on("POST", "tools/call", sse_reply(sse_event(None, id="ev-1", retry=100_000_000)), times=1)

        def resume(request: Received) -> Reply:
            if request.headers.get("last-event-id") == "ev-1":
                return sse_reply(sse_event(rpc_result(5, text_result("resumed")), event="message", id="ev-2"))
            return Reply(405)

        remote.on("GET", None, resume)
        started = time.monotonic()
        answer = await d.call(5, "echo", text="x", timeout=8)
        assert time.monotonic() - started < 6
        assert "result" in answer or "error" in answer
        await still_serving(d)
        assert await d.finish() == 0


async def test_an_initialize_held_open_with_sse_comments_does_not_stop_the_bridge_reading_stdin(tmp_path):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        remote.on("POST", "initialize", lambda r: sse_reply(then=comments_forever(every=0.2, limit=40)))
        await d.send_json(_request("init", "initialize", _init_params()))
        await remote.wait_for_request(lambda r: r.rpc_method == "initialize", timeout=5)
        ping = await d.request("p", "ping", timeout=5)
        assert "result" in ping or "error" in ping
        started = time.monotonic()
        code = await d.finish(timeout=5)
        assert code == 0 and time.monotonic() - started < 3


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_remote_down_the_first_initialize_names_the_host_and_stdin_keeps_being_read(tmp_path):
    port = _closed_port()
    async with desktop(tmp_path, env_for(f"http://127.0.0.1:{port}/mcp/srv_test", ALLOY_CONNECT_TIMEOUT="3")) as d:
        # A desktop that does not wait for the handshake: everything is queued behind `initialize`.
        await d.send_json(_request("init", "initialize", _init_params()))
        await d.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        await d.send_json(_request(2, "tools/call", {"name": "echo", "arguments": {"text": "x"}}))
        started = time.monotonic()
        await d.send_json(_request("discover", "server/discover", {}))  # answered by the bridge itself
        assert_error(await d.answer("discover", timeout=8), -32601)
        assert time.monotonic() - started < 1.5, "stdin was not read while initialize waited for the remote"
        error = assert_error(await d.answer("init", timeout=8), UNREACHABLE)
        assert f"127.0.0.1:{port}" in error["message"]
        assert_error(await d.answer(2, timeout=8))
        assert await d.finish() == 0


async def test_remote_down_and_stdin_closed_the_bridge_answers_what_it_read_and_exits_promptly(tmp_path):
    port = _closed_port()
    env = env_for(f"http://127.0.0.1:{port}/mcp/srv_test", ALLOY_CONNECT_TIMEOUT="10")  # the default
    async with desktop(tmp_path, env) as d:
        await d.send_json(_request("init", "initialize", _init_params()))
        await d.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        await d.send_json(_request(2, "tools/call", {"name": "echo", "arguments": {"text": "x"}}))
        started = time.monotonic()
        code = await d.finish(timeout=8)
        elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 3, f"the bridge took {elapsed:.1f}s to exit after stdin closed"
    answered = {m.get("id") for m in d.messages if isinstance(m, dict) and "method" not in m}
    assert {"init", 2} <= answered, f"requests never answered: {sorted(map(str, {'init', 2} - answered))}"


async def test_legacy_sse_request_accepted_with_202_and_never_answered_fails_at_the_read_timeout(tmp_path):
    async with HostileRemote(legacy_sse=True, sessions=False) as remote, \
            desktop(tmp_path, env_for(remote.url, ALLOY_TRANSPORT="sse", ALLOY_READ_TIMEOUT="2")) as d:
        assert "result" in await d.initialize()
        remote.on("POST", "tools/call", Reply(202), times=1)  # accepted, never answered on the stream
        started = time.monotonic()
        answer = await d.call(4, "echo", text="x", timeout=8)
        assert_error(answer, REMOTE_TIMEOUT, OUTCOME_UNKNOWN)
        assert time.monotonic() - started < 6
        await still_serving(d)
        assert await d.finish() == 0


async def test_a_full_connection_pool_answers_the_next_call_with_unavailable_instead_of_waiting_forever(tmp_path):
    held = 128  # the bridge's connection limit
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        remote.on("POST", "tools/call", lambda r: sse_reply(then=comments_forever(every=0.5, limit=40)), tool="hold")
        for i in range(held):
            await d.send_json(_request(f"hold-{i}", "tools/call", {"name": "hold", "arguments": {}}))
        await wait_for(lambda: len([r for r in remote.requests if r.tool == "hold"]) >= held, timeout=15)
        started = time.monotonic()
        answer = await d.call("next", "echo", text="x", timeout=10)
        assert_error(answer, UNAVAILABLE)
        assert time.monotonic() - started < 8
        assert d.alive


# --- Session replay must never make things worse -------------------------------------------------


@pytest.mark.parametrize("refused", ["logging/setLevel -32601", "resources/subscribe -32002 on replay"])
async def test_a_replay_step_the_remote_refuses_does_not_lose_the_session(tmp_path, refused):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        if refused.startswith("logging"):
            remote.on("POST", "logging/setLevel",
                      lambda r: json_reply(rpc_error(r.rpc_id, -32601, "Method not found")))
            assert_error(await d.request(2, "logging/setLevel", {"level": "debug"}), -32601)
        else:
            assert (await d.request(2, "resources/subscribe", {"uri": "memo://gone"}))["result"] == {}
            remote.on("POST", "resources/subscribe",
                      lambda r: json_reply(rpc_error(r.rpc_id, -32002, "Resource not found")))
        assert echo_text(await d.call(3, "echo", text="before")) == "before"
        remote.expire_sessions()  # one ordinary expiry
        for i in range(3):
            assert echo_text(await d.call(10 + i, "echo", text=f"after {i}", timeout=8)) == f"after {i}"
        assert await d.finish() == 0
    assert len(remote.issued) == 2, f"{len(remote.issued)} sessions opened for one expiry"
    abandoned = set(remote.issued) - remote.expired - set(remote.deleted)
    assert not abandoned, f"sessions never DELETEd: {sorted(abandoned)}"


async def test_a_run_of_session_expiries_does_not_recreate_sessions_without_bound(tmp_path):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        assert echo_text(await d.call(2, "echo", text="ok")) == "ok"
        remote.expire_every_session = True  # every request that carries a session id is answered 404
        for _ in range(20):
            await d.send_json({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
        await d.send_json(_request("after", "ping"))
        assert "result" in (answer := await d.answer("after", timeout=15)) or "error" in answer
        opened = len(remote.issued)
        assert d.alive
        assert await d.finish() == 0
    assert 2 <= opened <= 6, f"20 notifications during a run of expiries opened {opened} sessions"


async def test_a_replayed_initialize_with_another_protocol_version_is_a_lost_session(tmp_path):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        assert (await d.initialize("2025-11-25"))["result"]["protocolVersion"] == "2025-11-25"
        assert echo_text(await d.call(2, "echo", text="before")) == "before"
        remote.on("POST", "initialize", lambda r: remote.initialize_reply(r, version="2025-03-26"))
        remote.expire_sessions()
        answer = await d.call(3, "echo", text="after", timeout=8)
        assert_error(answer, SESSION_LOST)
        assert d.alive
        assert await d.finish() == 0
    changed = [r for r in remote.received("POST") if r.rpc_method != "initialize"
               and r.headers.get("mcp-protocol-version") == "2025-03-26"]
    assert not changed, f"{len(changed)} request(s) went out with a protocol version the desktop never agreed to"


# --- Smaller things found on the way -------------------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
async def test_proxy_variables_never_apply_to_a_loopback_endpoint(tmp_path, variable):
    async with FakeProxy() as proxy, HostileRemote() as remote:
        env = env_for(remote.url, **{variable: f"http://127.0.0.1:{proxy.port}", "NO_PROXY": "", "no_proxy": ""})
        async with desktop(tmp_path, env) as d:
            init = await d.initialize()
            assert not proxy.seen, "the proxy was offered a request for a loopback endpoint (credentials in clear)"
            assert "result" in init, init
            assert echo_text(await d.call(2, "echo", text="direct", timeout=5)) == "direct"
            assert await d.finish() == 0
    assert not proxy.seen


def _big_header_once() -> Reply:
    return Reply(raw=b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"p" * 200_000
                 + b"\r\nContent-Length: 2\r\n\r\n{}")


@pytest.mark.parametrize("failure", ["dropped-connection", "200KB-header"])
async def test_initialize_is_retried_after_a_dropped_connection_or_a_huge_header(tmp_path, failure):
    once = Reply(drop=True) if failure == "dropped-connection" else _big_header_once()
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        remote.on("POST", "initialize", once, times=1)
        init = await d.request("init", "initialize", _init_params(), timeout=8)
        assert "result" in init, f"initialize (safe to repeat) was not retried: {init}"
        await d.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        await still_serving(d)
        assert await d.finish() == 0
    assert len(remote.received("POST", "initialize")) == 2
    assert "Traceback" not in d.stderr


def run_bridge(env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """The bridge with stdin at EOF: a configuration error must stop it first."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALLOY_") and "proxy" not in k.lower()}
    return subprocess.run([sys.executable, "-m", "bridge"], env={**base, **env}, cwd=ROOT / "tests", input="",
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_config_error(result: subprocess.CompletedProcess[str], *names: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 2, f"exit code {result.returncode}; stderr: {result.stderr[-1000:]}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("alloy-mcp-bridge: configuration error"), lines
    assert any(name in lines[0] for name in names), lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("env,setting", [
    ({"ALLOY_SERVER_ID": "..", "ALLOY_BASE_URL": "http://127.0.0.1:9/base"}, "ALLOY_SERVER_ID"),
    ({"ALLOY_SERVER_ID": ".", "ALLOY_BASE_URL": "http://127.0.0.1:9/base"}, "ALLOY_SERVER_ID"),
    ({"ALLOY_SERVER_ID": "srv", "ALLOY_ACCESS_TOKEN": "..", "ALLOY_BASE_URL": "http://127.0.0.1:9"},
     "ALLOY_ACCESS_TOKEN"),
], ids=["server-id-dot-dot", "server-id-dot", "access-token-dot-dot"])
def test_a_server_id_or_access_token_of_dots_is_refused_as_a_configuration_error(env, setting):
    assert_one_line_config_error(run_bridge(env), setting)


@pytest.mark.parametrize("env,names", [
    ({"ALLOY_MCP_URL": "http://[::1]x/mcp"}, ("ALLOY_MCP_URL",)),
    ({"ALLOY_MCP_URL": "https://mcp.example.invalid/mcp/srv", "HTTPS_PROXY": "foo://x"}, ("HTTPS_PROXY", "proxy")),
    ({"ALLOY_MCP_URL": "https://mcp.example.invalid/mcp/srv", "HTTPS_PROXY": "socks5://127.0.0.1:9"},
     ("HTTPS_PROXY", "proxy")),
], ids=["malformed-ipv6-url", "proxy-scheme-foo", "proxy-socks5-unsupported"])
def test_a_malformed_url_or_unsupported_proxy_is_a_one_line_configuration_error(env, names):
    if "socks5" in env.get("HTTPS_PROXY", ""):
        try:
            __import__("socksio")
        except ImportError:
            pass  # the project does not install socksio: socks5 is unsupported
        else:
            pytest.skip("socksio is installed: socks5 proxies are supported here")
    assert_one_line_config_error(run_bridge({"ALLOY_API_KEY": API_KEY, "ALLOY_USER_ID": USER_ID, **env}), *names)


async def test_an_error_with_a_null_id_from_the_desktop_is_accepted(tmp_path):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        await d.send_json({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}})
        await d.send_json(_request("after", "ping"))
        following = await d.next_message(timeout=5)
        assert following.get("id") == "after" and following.get("result") == {}, (
            f"the desktop's id-null error was answered: {following}")
        assert await d.finish() == 0


async def test_an_error_with_a_null_id_from_the_remote_is_relayed_to_the_desktop(tmp_path):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        remote.on("POST", "tools/call", lambda r: sse_reply(
            sse_event(rpc_error(None, -32700, "Parse error"), event="message"),
            sse_event(rpc_result(r.rpc_id, text_result("real")), event="message")), times=1)
        answer = await d.call(4, "echo", text="x", timeout=5)
        assert echo_text(answer) == "real"
        relayed = [m for m in d.messages if isinstance(m, dict) and "error" in m and m.get("id") is None]
        assert relayed and relayed[0]["error"]["code"] == -32700, "the remote's id-null error was dropped"
        assert await d.finish() == 0


@pytest.mark.parametrize("status", [307, 301, 302, 308])
async def test_a_redirect_is_reported_as_a_redirect_and_never_delivered_as_the_answer(tmp_path, status):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        moved = f"{remote.base}/mcp/elsewhere"

        def redirect(request: Received) -> Reply:
            if status == 307:  # a JSON body that looks exactly like the answer
                body = remote.initialize_reply(request).body
                return Reply(307, [("Location", moved), ("Content-Type", "application/json")], body)
            return Reply(status, [("Location", moved), ("Content-Type", "text/html")], b"<html>moved</html>")

        remote.on("POST", "initialize", redirect, times=1)
        answer = await d.request("init", "initialize", _init_params(), timeout=8)
        error = assert_error(answer)
        assert "redirect" in error["message"].lower() and moved in error["message"], error["message"]
        assert await d.finish() == 0
    assert len(remote.received("POST", "initialize")) == 1, "the redirect was followed"


async def test_an_answer_for_an_in_flight_call_on_the_get_stream_is_dropped_and_the_real_one_delivered(tmp_path):
    async with HostileRemote(get_stream=True) as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        await remote.wait_for_request(lambda r: r.method == "GET", timeout=5)
        await wait_for(lambda: remote.stream_opened.is_set(), timeout=5)

        async def real_answer_later(request_id: Any) -> AsyncIterator[bytes]:
            remote.push_stream(sse_event(rpc_result(request_id, text_result("FAKE from the GET stream")),
                                         event="message"))
            await anyio.sleep(0.5)  # the remote's own pacing: the fake goes first
            yield sse_event(rpc_result(request_id, text_result("real")), event="message")

        remote.on("POST", "tools/call", lambda r: sse_reply(b": working\n\n", then=real_answer_later(r.rpc_id)),
                  times=1)
        answer = await d.call(9, "echo", text="x", timeout=6)
        assert echo_text(answer) == "real"
        await still_serving(d)
        assert await d.finish() == 0
    assert len([m for m in d.messages if isinstance(m, dict) and m.get("id") == 9]) == 1


async def test_guard_an_answer_on_a_get_that_resumes_the_request_stream_is_still_delivered(tmp_path):
    """Not a bug of issue 13: the one case where an answer on a GET is right (it must keep working)."""
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        remote.on("POST", "tools/call", sse_reply(sse_event(None, id="ev-1", retry=100)), times=1)  # then it drops

        def resume(request: Received) -> Reply:
            if request.headers.get("last-event-id") == "ev-1":
                return sse_reply(sse_event(rpc_result(5, text_result("resumed")), event="message", id="ev-2"))
            return Reply(405)

        remote.on("GET", None, resume)
        assert echo_text(await d.call(5, "echo", text="x", timeout=8)) == "resumed"
        assert await d.finish() == 0
