"""When the remote misbehaves: the desktop gets a clear error or nothing at all, never a hang or a duplicate."""

from __future__ import annotations

import time

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from tests.helpers import (
    AUTH_REJECTED,
    FORBIDDEN,
    NOT_FOUND,
    OUTCOME_UNKNOWN,
    RATE_LIMITED,
    REMOTE_TIMEOUT,
    REMOTE_UNAVAILABLE,
    UNREACHABLE,
    Notifications,
    bridge_env,
    connect_error,
    open_bridge,
    raw_bridge,
    running_remote,
    text_of,
    wait_for,
)

pytestmark = pytest.mark.anyio



async def test_429_with_retry_after_is_retried_and_runs_once(remote, tmp_path):
    remote.add_rule({"status": 429, "headers": {"retry-after": "1"}}, rpc="tools/call", times=1)
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, run):
        started = time.monotonic()
        result = await client.call_tool("echo", {"text": "ok", "tag": "r429"})
        waited = time.monotonic() - started
    assert text_of(result) == "ok"
    assert waited >= 0.9
    assert remote.executions() == {"r429": 1}
    assert len(remote.requests("tools/call")) == 2


async def test_429_with_http_date_retry_after_is_honoured(remote, tmp_path):
    from email.utils import formatdate

    remote.add_rule({"status": 429, "headers": {"retry-after": formatdate(time.time() + 1, usegmt=True)}},
                    rpc="tools/call", times=1)
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        result = await client.call_tool("echo", {"text": "dated", "tag": "d"})
    assert text_of(result) == "dated" and remote.executions() == {"d": 1}


async def test_429_burst_without_retry_after_is_retried_with_backoff(remote, tmp_path):
    remote.add_rule({"status": 429}, rpc="tools/call", times=2)
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        result = await client.call_tool("echo", {"text": "eventually", "tag": "b"})
    assert text_of(result) == "eventually"
    assert len(remote.requests("tools/call")) == 3 and remote.executions() == {"b": 1}


async def test_429_longer_than_the_budget_fails_with_status_and_retry_hint(remote, tmp_path):
    remote.add_rule({"status": 429, "headers": {"retry-after": "60"}}, rpc="tools/call", times=-1)
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        with pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"text": "x", "tag": "never"})
        remote.clear()
        after = await client.call_tool("echo", {"text": "recovered"})
    error = caught.value
    assert error.code == RATE_LIMITED
    assert "rate limit" in error.message.lower()
    assert error.data["httpStatus"] == 429 and error.data["retryAfterSeconds"] == 60
    assert remote.executions().get("never") is None
    assert text_of(after) == "recovered"


async def test_503_with_retry_after_is_retried_even_for_tools_call(remote, tmp_path):
    remote.add_rule({"status": 503, "headers": {"retry-after": "0"}}, rpc="tools/call", times=2)
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        result = await client.call_tool("echo", {"text": "back", "tag": "u"})
    assert text_of(result) == "back" and remote.executions() == {"u": 1}


async def test_503_without_retry_after_is_not_retried_for_tools_call(remote, tmp_path):
    remote.add_rule({"status": 503}, rpc="tools/call", times=1)
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        with pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"text": "x"})
    assert caught.value.code == REMOTE_UNAVAILABLE and caught.value.data["httpStatus"] == 503
    assert len(remote.requests("tools/call")) == 1


async def test_503_without_retry_after_is_retried_for_idempotent_methods(remote, tmp_path):
    remote.add_rule({"status": 503}, rpc="tools/list", times=2)
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        tools = await client.list_tools()
    assert tools.tools
    assert len(remote.requests("tools/list")) == 3


async def test_500_is_reported_not_retried(remote, tmp_path):
    remote.add_rule({"status": 500, "body": "boom"}, rpc="tools/call", times=1)
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        with pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"text": "x"})
    assert caught.value.data["httpStatus"] == 500 and "boom" in caught.value.message
    assert len(remote.requests("tools/call")) == 1


async def test_401_mid_session_says_which_credentials_to_check(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        await client.list_tools()
        remote.add_rule({"status": 401, "body": {"error": "Invalid API key"}}, rpc="tools/call", times=1)
        with pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"text": "x"})
        again = await client.call_tool("echo", {"text": "fine again"})
    assert caught.value.code == AUTH_REJECTED
    assert "ALLOY_API_KEY" in caught.value.message and "Invalid API key" in caught.value.message
    assert text_of(again) == "fine again"


async def test_403_on_one_tool_while_others_work(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        with pytest.raises(MCPError) as caught:
            await client.call_tool("delete_everything", {})
        ok = await client.call_tool("echo", {"text": "still here"})
    assert caught.value.code == FORBIDDEN
    assert "Action not allowed" in caught.value.message
    assert text_of(ok) == "still here"


async def test_wrong_server_id_fails_initialize_with_a_hint(remote, tmp_path):
    error = await connect_error(tmp_path, bridge_env(remote, ALLOY_MCP_URL=remote.base + "/mcp/srv_missing"))
    assert error.code == NOT_FOUND
    assert "server id" in error.message.lower()


async def test_wrong_api_key_fails_initialize_with_a_hint(remote, tmp_path):
    error = await connect_error(tmp_path, bridge_env(remote, ALLOY_API_KEY="ak_wrong_key_123"))
    assert error.code == AUTH_REJECTED
    assert "ALLOY_API_KEY" in error.message


async def test_session_expiry_is_invisible_to_the_desktop(remote, tmp_path):
    import mcp_types as types

    updates = Notifications(types.ResourceUpdatedNotification)
    async with open_bridge(tmp_path, bridge_env(remote), message_handler=updates) as (client, run):
        await client.set_logging_level("error")
        await client.subscribe_resource("memo://note/2")
        remote.expire_sessions()
        result = await client.call_tool("echo", {"text": "after expiry", "tag": "e1"})
        remote.notify("updated")
        await updates.wait()
    assert text_of(result) == "after expiry"
    assert remote.executions() == {"e1": 1}
    initializes = remote.requests("initialize")
    assert len(initializes) == 2
    state = remote.state()
    assert initializes[1]["headers"].get("mcp-session-id") is None
    # Both the old and the new session got the log level and the subscription.
    assert all(level == "error" for level in state["log_levels"].values())
    assert len(state["log_levels"]) == 2
    assert all(subs == ["memo://note/2"] for subs in state["subscriptions"].values())
    assert updates.uris == ["memo://note/2"]


async def test_session_expiry_during_concurrent_calls_answers_each_once(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        await client.list_tools()
        remote.expire_sessions()
        results: dict[int, str] = {}

        async def call(i: int) -> None:
            results[i] = text_of(await client.call_tool("echo", {"text": f"v{i}", "tag": f"x{i}"}))

        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(call, i)
    assert results == {i: f"v{i}" for i in range(16)}
    assert remote.executions() == {f"x{i}": 1 for i in range(16)}
    assert len(remote.requests("initialize")) == 2


async def test_remote_down_at_start_fails_initialize_within_the_connect_timeout(tmp_path):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = bridge_env(None, ALLOY_MCP_URL=f"http://127.0.0.1:{port}/mcp/srv_test", ALLOY_API_KEY="k" * 12,
                     ALLOY_USER_ID="u", ALLOY_CONNECT_TIMEOUT="1.5")
    async with raw_bridge(tmp_path, env) as bridge:
        started = time.monotonic()
        answer = await bridge.request("i1", "initialize", {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}})
        elapsed = time.monotonic() - started
        assert answer["error"]["code"] == UNREACHABLE
        assert "connection refused" in answer["error"]["message"]
        assert elapsed < 1.5 + 2.0  # the connect timeout, plus process and scheduling slack
        # The process is still serving: start the remote on that port and initialize again.
        with running_remote("--port", str(port)):
            again = await bridge.request("i2", "initialize", {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}})
    assert again["error"]["code"] == AUTH_REJECTED  # reached the remote; these are not its credentials


async def test_connection_dropped_mid_response_is_outcome_unknown_for_tools_call(remote, tmp_path):
    remote.add_rule({"drop_after_bytes": 10}, rpc="tools/call", tool="echo", times=1)
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        with pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"text": "lost", "tag": "drop"})
        ok = await client.call_tool("echo", {"text": "next"})
    assert caught.value.code == OUTCOME_UNKNOWN
    assert "not retried" in caught.value.message
    assert remote.executions()["drop"] == 1
    assert text_of(ok) == "next"


async def test_connection_dropped_mid_response_is_resent_once_for_idempotent_methods(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        remote.add_rule({"drop_after_bytes": 10}, rpc="tools/list", times=1)
        tools = await client.list_tools()
    assert tools.tools
    assert len(remote.requests("tools/list")) == 2


async def test_tool_slower_than_the_read_timeout_fails_clearly_and_the_session_survives(remote, tmp_path):
    env = bridge_env(remote, ALLOY_READ_TIMEOUT="1")
    async with open_bridge(tmp_path, env) as (client, _):
        started = time.monotonic()
        with pytest.raises(MCPError) as caught:
            await client.call_tool("slow", {"seconds": 3, "tag": "too-slow"})
        elapsed = time.monotonic() - started
        ok = await client.call_tool("echo", {"text": "usable"})
    assert caught.value.code == OUTCOME_UNKNOWN
    assert "did not answer in time" in caught.value.message
    assert elapsed < 2.9  # well before the 3 s tool would have finished
    assert text_of(ok) == "usable"


async def test_idempotent_request_slower_than_the_read_timeout_is_a_timeout(remote, tmp_path):
    env = bridge_env(remote, ALLOY_READ_TIMEOUT="1")
    async with open_bridge(tmp_path, env) as (client, _):
        remote.add_rule({"delay": 2}, rpc="tools/list", times=1)
        with pytest.raises(MCPError) as caught:
            await client.list_tools()
    assert caught.value.code == REMOTE_TIMEOUT


async def test_progress_notifications_keep_a_long_call_alive(remote, tmp_path):
    env = bridge_env(remote, ALLOY_READ_TIMEOUT="1")
    async with open_bridge(tmp_path, env) as (client, _):
        result = await client.call_tool("slow", {"seconds": 3, "steps": 10},
                                        progress_callback=lambda *a: anyio.sleep(0))
    assert text_of(result) == "slept 3.0"


async def test_remote_restart_between_calls_is_invisible(tmp_path):
    with running_remote() as server:
        async with open_bridge(tmp_path, bridge_env(server)) as (client, _):
            first = await client.call_tool("echo", {"text": "before"})
            server.restart()
            second = await client.call_tool("echo", {"text": "after", "tag": "a"})
        assert text_of(first) == "before" and text_of(second) == "after"
        assert server.executions() == {"a": 1}


@pytest.mark.parametrize(("down_for", "connect_timeout"), [
    (1.0, "8"),
    # The default connect timeout: down longer than the 2 s a first initialize gets, still waited out once a
    # session existed (the laptop waking up).
    (3.0, None),
], ids=["1s-down-connect-timeout-8s", "3s-down-default-connect-timeout-after-a-session-existed"])
async def test_remote_briefly_down_during_a_call_is_retried_on_connect(tmp_path, down_for, connect_timeout):
    with running_remote() as server:
        async with open_bridge(tmp_path, bridge_env(server, ALLOY_CONNECT_TIMEOUT=connect_timeout)) as (client, _):
            await client.list_tools()
            server.stop()

            async def restart_later() -> None:
                await anyio.sleep(down_for)  # the fault itself: the remote is down for a while
                await anyio.to_thread.run_sync(server.start)

            async with anyio.create_task_group() as tg:
                tg.start_soon(restart_later)
                result = await client.call_tool("echo", {"text": "patient", "tag": "p"})
        assert text_of(result) == "patient"
        assert server.executions() == {"p": 1}


async def test_notification_post_failures_are_logged_not_fatal(remote, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.initialize()
        remote.add_rule({"status": 500}, rpc="notifications/roots/list_changed", times=1)
        await bridge.send_json({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
        answer = await bridge.request(2, "ping")
        await wait_for(lambda: "could not deliver notifications/roots/list_changed" in bridge.stderr)
    assert answer["result"] == {}


async def test_session_that_cannot_be_reopened_says_why_and_recovers_later(tmp_path):
    with running_remote() as server:
        env = bridge_env(server, ALLOY_CONNECT_TIMEOUT="1")
        async with open_bridge(tmp_path, env) as (client, _):
            await client.list_tools()
            server.expire_sessions()
            server.add_rule({"status": 500, "body": "down for maintenance"}, rpc="initialize", times=2)
            with pytest.raises(MCPError) as caught:
                await client.call_tool("echo", {"text": "x"})
            later = await client.call_tool("echo", {"text": "back", "tag": "later"})
        assert server.executions() == {"later": 1}
    assert caught.value.code == -32061
    assert "down for maintenance" in caught.value.message
    assert text_of(later) == "back"


async def test_rate_limit_paces_requests_instead_of_hitting_429(remote, tmp_path):
    env = bridge_env(remote, ALLOY_RATE_LIMIT="4/1s")
    async with open_bridge(tmp_path, env) as (client, _):
        await client.list_tools()
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(client.call_tool, "echo", {"text": str(i), "tag": f"p{i}"})
        elapsed = time.monotonic() - started
    assert len(remote.requests("tools/call")) == 8 and len(remote.executions()) == 8
    assert elapsed >= 1.0  # 8 calls (plus the requests before them) cannot fit in one 1-second window of 4
