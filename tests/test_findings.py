"""The review's findings (issue 8, "Findings to fix"): each test states the behaviour the desktop must get.

Each was written to fail on the code the review read; the fix makes it pass.
Most drive the bridge as a subprocess against the test remote on 127.0.0.1;
the rule mechanism of `tests/remote_server.py` (`wait_for`, `replace_params`,
`delay`, `expire`, `raw`) makes the interleavings deterministic.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import anyio
import mcp_types as types
import pytest

from tests.helpers import (
    API_KEY,
    NOT_FOUND,
    SESSION_LOST,
    UNREACHABLE,
    RawBridge,
    bridge_env,
    open_bridge,
    raw_bridge,
    running_remote,
    text_of,
    wait_for,
)

pytestmark = pytest.mark.anyio

INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def request(request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def lines(*messages: dict[str, Any]) -> bytes:
    """Several messages in one write, so the bridge reads them together and in this order."""
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


class Desktop:
    """A raw desktop that keeps every answer it reads, whatever order they come in."""

    def __init__(self, bridge: RawBridge) -> None:
        self.bridge = bridge
        self.answers: dict[Any, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []

    async def _read_one(self) -> None:
        message = await self.bridge.read_message(timeout=600)
        if "method" in message:
            if "id" in message:
                self.requests.append(message)
        else:
            self.answers[message.get("id")] = message

    async def answers_to(self, *ids: Any, timeout: float) -> dict[Any, dict[str, Any]]:
        """The answers to `ids` that arrived within `timeout` seconds (the missing ones are absent)."""
        with anyio.move_on_after(timeout):
            while not set(ids) <= self.answers.keys():
                await self._read_one()
        return {i: self.answers[i] for i in ids if i in self.answers}

    async def asked(self, method: str, timeout: float = 10) -> dict[str, Any]:
        """The first request the bridge sent the desktop with this method."""
        with anyio.fail_after(timeout):
            while not any(m["method"] == method for m in self.requests):
                await self._read_one()
        return next(m for m in self.requests if m["method"] == method)

    async def answer(self, request_id: Any, timeout: float = 10) -> dict[str, Any]:
        found = await self.answers_to(request_id, timeout=timeout)
        assert request_id in found, f"no answer to {request_id!r} within {timeout}s"
        return found[request_id]

    async def is_serving(self) -> None:
        """Wait until the bridge has read everything sent so far: `server/discover` is answered by the bridge."""
        barrier = f"barrier-{len(self.answers)}"
        await self.bridge.send_json(request(barrier, "server/discover"))
        await self.answer(barrier)


def unused_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# --- 1. readiness: a desktop initialize and a session re-open overlapping ----------------------


async def test_a_desktop_initialize_during_a_session_reopen_leaves_no_request_waiting(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        desktop = Desktop(bridge)
        await bridge.initialize()
        await bridge.send_json(request("warm", "tools/list", {}))
        await desktop.answer("warm")  # the remote now knows the session
        remote.expire_sessions()
        # The bridge's replayed initialize (the 2nd the remote sees) is held until the desktop's own (the 3rd).
        remote.add_rule({"wait_for": {"rpc": "initialize", "count": 3}}, rpc="initialize")
        await bridge.send_json(request("a", "tools/list", {}))  # 404: the bridge re-opens the session
        await wait_for(lambda: len(remote.requests("initialize")) == 2)
        await bridge.send_json(request("b", "ping"))  # waits for the re-opened session
        await desktop.is_serving()
        await bridge.send_json(request("i2", "initialize", INIT))  # the desktop starts over meanwhile
        answers = await desktop.answers_to("a", "b", "i2", timeout=6)
    assert set(answers) == {"a", "b", "i2"}, f"never answered: {sorted({'a', 'b', 'i2'} - set(answers))}"
    assert "result" in answers["i2"] and "result" in answers["b"]


async def test_a_session_reopen_during_a_desktop_initialize_leaves_no_request_waiting(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        desktop = Desktop(bridge)
        await bridge.initialize()
        await bridge.send_json(request("warm", "tools/list", {}))
        await desktop.answer("warm")
        # "a" is answered "session not found" only once the desktop's second initialize reached the remote,
        # and that initialize is held until the bridge's replayed one arrives: the two overlap.
        remote.add_rule({"wait_for": {"rpc": "initialize", "count": 2}, "expire": True}, rpc="tools/list")
        remote.add_rule({"delay": 1.5}, rpc="initialize")  # the desktop's initialize is slow: the two overlap
        await bridge.send_json(request("a", "tools/list", {}))
        await wait_for(lambda: len(remote.requests("tools/list")) == 2)
        await bridge.send(lines(request("i2", "initialize", INIT), request("b", "ping")))
        answers = await desktop.answers_to("a", "b", "i2", timeout=6)
    assert set(answers) == {"a", "b", "i2"}, f"never answered: {sorted({'a', 'b', 'i2'} - set(answers))}"
    assert "result" in answers["i2"] and "result" in answers["b"]


# --- 2. a wrong server id: 404 to POST and GET ------------------------------------------------


async def _first_initialize(tmp_path, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """The answer to the desktop's first `initialize`, and how long it took (from a bridge already serving)."""
    async with raw_bridge(tmp_path, env) as bridge:
        desktop = Desktop(bridge)
        await desktop.is_serving()
        started = time.monotonic()
        await bridge.send_json(request("i", "initialize", INIT))
        answer = await desktop.answer("i", timeout=14)
        return answer, time.monotonic() - started


async def test_a_wrong_server_id_is_reported_within_two_seconds_with_the_default_connect_timeout(remote, tmp_path):
    env = bridge_env(remote, ALLOY_MCP_URL=remote.base + "/mcp/srv_missing", ALLOY_CONNECT_TIMEOUT=None)
    answer, elapsed = await _first_initialize(tmp_path, env)
    assert answer["error"]["code"] == NOT_FOUND
    assert elapsed < 2.0, f"initialize answered after {elapsed:.1f}s"


# --- 3. remote down when the desktop starts -----------------------------------------------------


async def test_remote_refusing_connections_at_the_first_initialize_is_reported_within_two_seconds(tmp_path):
    port = unused_port()
    env = bridge_env(None, ALLOY_MCP_URL=f"http://127.0.0.1:{port}/mcp/srv_test", ALLOY_API_KEY="k" * 12,
                     ALLOY_USER_ID="u", ALLOY_CONNECT_TIMEOUT=None)
    answer, elapsed = await _first_initialize(tmp_path, env)
    assert answer["error"]["code"] == UNREACHABLE
    assert f"127.0.0.1:{port}" in answer["error"]["message"]
    assert elapsed < 2.0, f"initialize answered after {elapsed:.1f}s"


async def test_remote_host_not_found_at_the_first_initialize_is_reported_within_two_seconds(tmp_path):
    host = "alloy-bridge-test.invalid"  # RFC 6761: never resolves
    started = time.monotonic()
    try:
        await anyio.to_thread.run_sync(socket.getaddrinfo, host, 443)
    except OSError:
        pass
    if time.monotonic() - started > 1.0:
        pytest.skip("this machine's resolver is slow to refuse a .invalid name")
    env = bridge_env(None, ALLOY_MCP_URL=f"https://{host}/mcp/srv_test", ALLOY_API_KEY="k" * 12,
                     ALLOY_USER_ID="u", ALLOY_CONNECT_TIMEOUT=None)
    answer, elapsed = await _first_initialize(tmp_path, env)
    assert answer["error"]["code"] == UNREACHABLE
    assert host in answer["error"]["message"]
    assert elapsed < 2.0, f"initialize answered after {elapsed:.1f}s"


# --- 4. legacy SSE: a refused replayed initialize; a failed bridge request -----------------------


async def test_legacy_sse_a_refused_replayed_initialize_is_not_a_restored_session(tmp_path):
    with running_remote("--sse") as server:
        async with raw_bridge(tmp_path, bridge_env(server, ALLOY_TRANSPORT="sse")) as bridge:
            desktop = Desktop(bridge)
            await bridge.initialize()
            await bridge.send_json(request("warm", "tools/list", {}))
            await desktop.answer("warm")
            # The remote forgot the stream's session (404 to a POST): the bridge re-opens the stream and
            # replays initialize, which the remote refuses once (invalid params: a JSON-RPC error on the stream).
            server.add_rule({"status": 404, "body": "Could not find session"},
                            rpc="notifications/roots/list_changed")
            server.add_rule({"replace_params": {}}, rpc="initialize")
            await bridge.send_json({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
            await wait_for(lambda: any(r.get("params_replaced") for r in server.requests("initialize")))
            await bridge.send_json(request("c", "tools/call", {"name": "echo", "arguments": {"text": "after"}}))
            answer = await desktop.answer("c", timeout=12)
        records = server.requests()
    posts = [r for r in records if r["http"] == "POST"]
    calls = [i for i, r in enumerate(posts) if r["rpc"] == "tools/call"]
    for call in calls:
        accepted = {r["query"] for r in posts[:call] if r["rpc"] == "initialize" and not r.get("params_replaced")}
        assert posts[call]["query"] in accepted, "the desktop's call went to a session whose initialize was refused"
    if "result" in answer:
        assert calls, "the call was answered without reaching the remote"
        assert answer["result"]["content"][0]["text"] == "after"
    else:
        assert answer["error"]["code"] == SESSION_LOST, answer


async def test_legacy_sse_a_bridge_request_whose_post_fails_leaves_nothing_waiting_for_its_answer():
    """In-process (nothing the desktop can see): the replayed `initialize`'s entry must not outlive its POST."""
    import contextlib

    from bridge.errors import BridgeError, BridgeErrorCode
    from bridge.transports.legacy_sse import LegacySseUpstream, _Stream

    class RefusingHttp:
        read_timeout = 1.0

        @contextlib.asynccontextmanager
        async def open(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
            raise BridgeError(BridgeErrorCode.REMOTE_ERROR, "The remote failed with HTTP 500.", http_status=500)
            yield

    upstream = LegacySseUpstream(RefusingHttp(), sink=None)  # type: ignore[arg-type]
    stream = _Stream()
    stream.post_url = "http://127.0.0.1:9/messages/?session_id=s"  # a stream is open
    with pytest.raises(BridgeError):
        await upstream._call(stream, "initialize", INIT)
    assert upstream._own._waiting == {}


# --- 5. 2026-07-28: the header-mismatch resend keeps the input already given ---------------------


async def test_modern_header_mismatch_resend_keeps_the_input_the_desktop_already_gave(modern, tmp_path):
    asked: list[Any] = []

    async def sampling(context, params):
        asked.append(params)
        return types.CreateMessageResult(role="assistant", model="m", content=types.TextContent(type="text", text="4"))

    # `ask_routed` asks the model first; its retry is then refused -32020 (it now demands Mcp-Param-Region).
    async with open_bridge(tmp_path, bridge_env(modern), mode="legacy", sampling_callback=sampling) as (client, _):
        result = await client.call_tool("ask_routed", {"region": "eu"})
    calls = [r for r in modern.requests("tools/call") if r["tool"] == "ask_routed"]
    assert calls[1]["status"] == 400  # the retry with the model's answer was refused for its headers
    assert len(asked) == 1, f"the desktop was asked {len(asked)} times for the same input"
    resend = calls[2]["params"]
    assert resend.get("requestState") == "ask_routed-state" and "q" in resend.get("inputResponses", {})
    assert text_of(result) == "model said: 4"


# --- 6. no secret in the "session lost" error -------------------------------------------------


async def test_the_session_lost_error_never_shows_a_secret_the_remote_echoed(remote, tmp_path):
    refusal = ('{"jsonrpc": "2.0", "id": {ID}, "error": {"code": -32001, "message": "API key '
               + API_KEY + ' is suspended"}}')
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        desktop = Desktop(bridge)
        await bridge.initialize()
        await bridge.send_json(request("warm", "tools/list", {}))
        await desktop.answer("warm")
        remote.expire_sessions()
        remote.add_rule({"raw": {"status": 200, "body": refusal}}, rpc="initialize", times=-1)
        await bridge.send_json(request("c", "tools/call", {"name": "echo", "arguments": {"text": "x"}}))
        answer = await desktop.answer("c")
    assert answer["error"]["code"] == SESSION_LOST
    assert "suspended" in answer["error"]["message"]  # the remote's reason is still given
    assert API_KEY not in json.dumps(answer)


# --- 7. head-of-line blocking: a held notification or answer POST --------------------------------

HELD_POST = 8.0  # seconds the remote holds the POST


@pytest.mark.parametrize(("rpc", "message"), [
    ("notifications/cancelled",
     {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "gone", "reason": "x"}}),
    ("(answer)", {"jsonrpc": "2.0", "id": "remote-request-1", "result": {}}),
    ("notifications/roots/list_changed", {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}),
])
async def test_a_held_notification_or_answer_post_does_not_stall_later_desktop_messages(remote, tmp_path, rpc,
                                                                                         message):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        desktop = Desktop(bridge)
        await bridge.initialize()
        await bridge.send_json(request("warm", "tools/list", {}))
        await desktop.answer("warm")
        remote.add_rule({"delay": HELD_POST}, rpc=rpc)
        await bridge.send_json(message)
        await wait_for(lambda: remote.requests(rpc))  # the remote is holding it
        started = time.monotonic()
        await bridge.send_json(request("p", "ping"))
        answer = await desktop.answer("p", timeout=HELD_POST + 4)
        elapsed = time.monotonic() - started
    assert answer["result"] == {}
    assert elapsed < 2.0, f"ping answered after {elapsed:.1f}s, behind the held {rpc} POST"


async def test_a_held_initialized_post_does_not_stall_a_ping_and_later_requests_still_follow_it(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        desktop = Desktop(bridge)
        await bridge.send_json(request("i", "initialize", INIT))
        await desktop.answer("i")
        remote.add_rule({"delay": HELD_POST}, rpc="notifications/initialized")
        started = time.monotonic()
        await bridge.send(lines(INITIALIZED, request("p", "ping"), request("t", "tools/list", {})))
        answer = await desktop.answer("p", timeout=HELD_POST + 4)
        elapsed = time.monotonic() - started
        await wait_for(lambda: remote.requests("tools/list"), timeout=HELD_POST + 4)
        order = [r["rpc"] for r in remote.requests() if r["rpc"] in ("notifications/initialized", "tools/list")]
    assert order[0] == "notifications/initialized", "tools/list reached the remote before notifications/initialized"
    assert answer["result"] == {}
    assert elapsed < 2.0, f"ping answered after {elapsed:.1f}s, behind the held notifications/initialized POST"


# --- 8. 2026-07-28: the desktop's answer to an input request is waited for a bounded time ----------


async def test_modern_a_desktop_that_never_answers_an_input_request_gets_an_error_after_the_read_timeout(
        modern, tmp_path):
    env = bridge_env(modern, ALLOY_READ_TIMEOUT="2")
    async with raw_bridge(tmp_path, env) as bridge:
        desktop = Desktop(bridge)
        await bridge.send_json(request("i", "initialize", {**INIT, "capabilities": {"sampling": {}}}))
        await desktop.answer("i")
        await bridge.send_json(INITIALIZED)
        await bridge.send_json(request("c", "tools/call", {"name": "ask", "arguments": {}}))
        await desktop.asked("sampling/createMessage")
        started = time.monotonic()
        found = await desktop.answers_to("c", timeout=8)  # the desktop never answers the sampling request
        elapsed = time.monotonic() - started
    assert [m["method"] for m in desktop.requests] == ["sampling/createMessage"]
    assert "c" in found, f"tools/call still unanswered {elapsed:.1f}s after the desktop was asked (read timeout 2s)"
    assert "error" in found["c"]
    assert elapsed < 2 + 3
