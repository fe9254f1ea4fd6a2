"""The fault matrix: each remote misbehaviour has one exact, asserted outcome."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.helpers import (
    BAD_RESPONSE,
    DOCUMENTED_CODES,
    MESSAGE_TOO_LARGE,
    OUTCOME_UNKNOWN,
    RATE_LIMITED,
    REMOTE_TIMEOUT,
    Notifications,
    bridge_env,
    notify_until,
    open_bridge,
    raw_bridge,
    running_remote,
    text_of,
    wait_for,
)

pytestmark = pytest.mark.anyio


async def test_429_burst_without_retry_after_longer_than_the_budget(remote, tmp_path):
    remote.add_rule({"status": 429}, rpc="tools/call", times=-1)
    env = bridge_env(remote, ALLOY_RETRY_BUDGET="1.5", ALLOY_MAX_RETRIES="10")
    async with open_bridge(tmp_path, env) as (client, _):
        started = time.monotonic()
        with pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"text": "x", "tag": "never"})
        elapsed = time.monotonic() - started
    assert caught.value.code == RATE_LIMITED and caught.value.data["httpStatus"] == 429
    assert "retryAfterSeconds" not in caught.value.data
    assert elapsed < 4  # the 1.5 s budget, not the 10 retries
    assert "never" not in remote.executions()
    assert len(remote.requests("tools/call")) >= 2


async def test_remote_that_accepts_but_never_answers_times_out_cleanly(tmp_path):
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    holder.bind(("127.0.0.1", 0))
    holder.listen(16)  # accepts TCP (kernel backlog) and never sends a byte
    port = holder.getsockname()[1]
    try:
        env = bridge_env(None, ALLOY_MCP_URL=f"http://127.0.0.1:{port}/mcp/srv", ALLOY_API_KEY="k" * 10,
                         ALLOY_USER_ID="u", ALLOY_READ_TIMEOUT="1")
        async with raw_bridge(tmp_path, env) as bridge:
            started = time.monotonic()
            answer = await bridge.request("i", "initialize", {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}})
            elapsed = time.monotonic() - started
            still_alive = await bridge.request("p", "server/discover", {})
    finally:
        holder.close()
    assert answer["error"]["code"] == REMOTE_TIMEOUT
    assert elapsed < 4  # the 1 s read timeout, not forever
    assert still_alive["error"]["code"] == -32601


async def test_malformed_json_body_is_a_clear_error(remote, tmp_path):
    remote.add_rule({"raw": {"content_type": "application/json", "body": "{not json"}}, rpc="tools/call")
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        with pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"text": "x"})
        after = await client.call_tool("echo", {"text": "fine"})
    assert caught.value.code == BAD_RESPONSE
    assert text_of(after) == "fine"


async def test_wrong_content_type_is_a_clear_error(remote, tmp_path):
    remote.add_rule({"raw": {"content_type": "text/html", "body": "<html>login</html>"}}, rpc="tools/list")
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        with pytest.raises(MCPError) as caught:
            await client.list_tools()
    assert caught.value.code == BAD_RESPONSE
    assert "text/html" in caught.value.message


async def test_sse_event_with_garbage_then_no_answer_is_a_clear_error(remote, tmp_path):
    remote.add_rule({"raw": {"content_type": "text/event-stream", "body": "event: message\ndata: {garbage\n\n"}},
                    rpc="tools/call")
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, run):
        with pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"text": "x"})
    assert caught.value.code == BAD_RESPONSE
    assert "malformed" in caught.value.message
    assert "malformed message from the remote" in run.stderr


async def test_garbage_event_before_the_real_answer_is_skipped(remote, tmp_path):
    body = ('event: message\ndata: {garbage\n\n'
            'event: message\ndata: {"jsonrpc":"2.0","id":{ID},"result":{"content":[{"type":"text","text":"ok"}]}}\n\n')
    remote.add_rule({"raw": {"content_type": "text/event-stream", "body": body}}, rpc="tools/call")
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        result = await client.call_tool("echo", {"text": "x"})
    assert text_of(result) == "ok"


async def test_answer_for_an_unknown_id_is_dropped_and_the_request_still_fails_cleanly(remote, tmp_path):
    body = 'event: message\ndata: {"jsonrpc":"2.0","id":"not-yours","result":{}}\n\n'
    remote.add_rule({"raw": {"content_type": "text/event-stream", "body": body}}, rpc="tools/call")
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.initialize()
        answer = await bridge.request(5, "tools/call", {"name": "echo", "arguments": {"text": "x"}})
        ping = await bridge.request(6, "ping")
    assert answer["error"]["code"] == OUTCOME_UNKNOWN
    assert ping["result"] == {}
    assert "dropped an answer for request id 'not-yours'" in bridge.stderr


async def test_ten_megabyte_result(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        result = await client.call_tool("big", {"n_kb": 10 * 1024})
    assert len(text_of(result)) == 10 * 1024 * 1024


async def test_result_over_the_message_limit_is_refused_and_the_session_survives(remote, tmp_path):
    env = bridge_env(remote, ALLOY_MAX_MESSAGE_BYTES=str(10 * 1024 * 1024))
    async with open_bridge(tmp_path, env) as (client, _):
        with pytest.raises(MCPError) as caught:
            await client.call_tool("big", {"n_kb": 12 * 1024})
        after = await client.call_tool("echo", {"text": "small"})
    assert caught.value.code == MESSAGE_TOO_LARGE
    assert text_of(after) == "small"


async def test_dropped_get_stream_is_reopened_and_notifications_still_arrive(remote, tmp_path):
    changed = Notifications(types.ToolListChangedNotification)
    remote.add_rule({"sse_close": True}, http="GET", times=1)
    async with open_bridge(tmp_path, bridge_env(remote), message_handler=changed) as (client, _):
        await client.list_tools()
        await wait_for(lambda: len([r for r in remote.requests() if r["http"] == "GET"]) >= 2)
        await notify_until(remote, changed.arrived, "tools")


async def test_log_messages_reach_the_desktop_after_the_get_stream_is_reopened(remote, tmp_path):
    logs: list[str] = []
    got = anyio.Event()

    async def on_log(params):
        logs.append(str(params.data))
        got.set()

    remote.add_rule({"sse_close": True}, http="GET", times=1)
    async with open_bridge(tmp_path, bridge_env(remote), logging_callback=on_log) as (client, _):
        await client.list_tools()
        await wait_for(lambda: len([r for r in remote.requests() if r["http"] == "GET"]) >= 2)
        await notify_until(remote, got, "log", text="after reconnect")
    assert set(logs) == {"after reconnect"}


async def test_remote_restarted_during_calls_answers_each_once_and_runs_none_twice(tmp_path):
    exec_log = tmp_path / "executions.txt"
    with running_remote("--exec-log", str(exec_log)) as server:
        outcomes: dict[int, str] = {}
        async with open_bridge(tmp_path, bridge_env(server, ALLOY_CONNECT_TIMEOUT="8")) as (client, _):
            await client.list_tools()

            async def call(i: int) -> None:
                try:
                    result = await client.call_tool("slow", {"seconds": 2, "tag": f"r{i}"})
                    outcomes[i] = text_of(result)
                except MCPError as exc:
                    outcomes[i] = f"error {exc.code}"

            async with anyio.create_task_group() as tg:
                for i in range(6):
                    tg.start_soon(call, i)
                await wait_for(lambda: exec_log.exists() and len(exec_log.read_text().split()) == 6)
                await anyio.to_thread.run_sync(server.restart)
            after = await client.call_tool("echo", {"text": "after restart", "tag": "after"})
        counts = Counter(exec_log.read_text().split())
    assert len(outcomes) == 6
    assert all(o == f"error {OUTCOME_UNKNOWN}" for o in outcomes.values())
    assert text_of(after) == "after restart"
    assert max(counts.values()) == 1 and len(counts) == 7


async def test_idempotent_requests_in_flight_during_a_restart_are_resent(tmp_path):
    with running_remote() as server:
        async with open_bridge(tmp_path, bridge_env(server, ALLOY_CONNECT_TIMEOUT="8")) as (client, _):
            await client.list_tools()
            server.add_rule({"delay": 3}, rpc="resources/read", times=1)

            async def restart_once_it_arrived() -> None:
                await wait_for(lambda: server.requests("resources/read"))
                await anyio.to_thread.run_sync(server.restart)

            async with anyio.create_task_group() as tg:
                tg.start_soon(restart_once_it_arrived)
                read = await client.read_resource("memo://note/1")
    assert read.contents[0].text == "contents of memo://note/1"


async def test_json_body_larger_than_the_limit_is_refused(tmp_path):
    with running_remote("--json-response") as server:
        env = bridge_env(server, ALLOY_MAX_MESSAGE_BYTES=str(10 * 1024 * 1024))
        async with open_bridge(tmp_path, env) as (client, _):
            with pytest.raises(MCPError) as caught:
                await client.call_tool("big", {"n_kb": 11 * 1024})
            ok = await client.call_tool("echo", {"text": "ok"})
    assert caught.value.code == MESSAGE_TOO_LARGE and text_of(ok) == "ok"


def test_fault_codes_are_the_documented_ones():
    from bridge.errors import BridgeErrorCode

    readme = (__import__("pathlib").Path(__file__).resolve().parent.parent / "README.md").read_text()
    for code in BridgeErrorCode:
        assert f"| {int(code)} |" in readme, code
    assert json.dumps(int(BridgeErrorCode.OUTCOME_UNKNOWN)) == str(OUTCOME_UNKNOWN)
    assert {int(code) for code in BridgeErrorCode} == DOCUMENTED_CODES


async def test_a_remote_that_refuses_every_session_fails_the_request_instead_of_looping(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        await client.list_tools()
        remote.add_rule({"expire": True}, rpc="tools/call", times=-1)
        with pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"text": "x", "tag": "never"})
        remote.clear()
        after = await client.call_tool("echo", {"text": "fine"})
    assert caught.value.code == -32061 and "even a new one" in caught.value.message
    assert "never" not in remote.executions()
    assert text_of(after) == "fine"
