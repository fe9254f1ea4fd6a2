"""Remote transports: Streamable HTTP with JSON responses, resumable SSE streams, and legacy HTTP+SSE."""

from __future__ import annotations

import anyio
import mcp_types as types
import pytest

from tests.helpers import bridge_env, open_bridge, running_remote, text_of, wait_for

pytestmark = pytest.mark.anyio


async def test_json_response_mode_remote(tmp_path):
    with running_remote("--json-response") as server:
        async with open_bridge(tmp_path, bridge_env(server)) as (client, _):
            tools = await client.list_tools()
            result = await client.call_tool("echo", {"text": "json"})
    assert tools.tools and text_of(result) == "json"


async def test_dropped_response_stream_is_resumed_with_last_event_id(tmp_path):
    with running_remote("--event-store") as server:
        server.add_rule({"drop_after_bytes": 120}, rpc="tools/call", tool="slow", times=1)
        async with open_bridge(tmp_path, bridge_env(server)) as (client, _):
            result = await client.call_tool("slow", {"seconds": 0.5, "steps": 2, "tag": "resume"})
        resumed = [r for r in server.requests() if r["http"] == "GET" and "last-event-id" in r["headers"]]
        executions = server.executions()
    assert text_of(result) == "slept 0.5"
    assert executions == {"resume": 1}
    assert resumed


async def test_legacy_sse_remote_is_detected_in_auto_mode(tmp_path):
    with running_remote("--sse") as server:
        async with open_bridge(tmp_path, bridge_env(server)) as (client, run):
            tools = await client.list_tools()
            result = await client.call_tool("echo", {"text": "over sse", "tag": "s1"})
        assert "legacy HTTP+SSE" in run.stderr
        assert server.executions() == {"s1": 1}
    assert tools.tools and text_of(result) == "over sse"


async def test_legacy_sse_remote_selected_by_setting(tmp_path):
    progress: list[float] = []

    async def on_progress(value, total, message):
        progress.append(value)

    async def sampling(context, params):
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="4"),
                                         model="m")

    with running_remote("--sse") as server:
        env = bridge_env(server, ALLOY_TRANSPORT="sse")
        async with open_bridge(tmp_path, env, sampling_callback=sampling) as (client, _):
            slow = await client.call_tool("slow", {"seconds": 0.2, "steps": 2}, progress_callback=on_progress)
            asked = await client.call_tool("ask", {})
        assert not server.requests("initialize") or all(r["http"] != "POST" or r["path"].startswith("/messages")
                                                         for r in server.requests("initialize"))
    assert text_of(slow) == "slept 0.2" and progress == [1, 2]
    assert text_of(asked) == "model said: 4"


async def test_legacy_sse_stream_drop_reconnects_and_reinitializes(tmp_path):
    with running_remote("--sse") as server:
        async with open_bridge(tmp_path, bridge_env(server, ALLOY_TRANSPORT="sse")) as (client, _):
            await client.list_tools()
            server.restart()
            result = await client.call_tool("echo", {"text": "again", "tag": "r"})
        assert server.executions() == {"r": 1}
    assert text_of(result) == "again"


async def test_dropped_get_stream_resumes_with_last_event_id_and_loses_nothing(tmp_path):
    seen: list[str] = []
    two = anyio.Event()

    async def on_message(message):
        if isinstance(message, types.ToolListChangedNotification):
            seen.append(message.method)
            if len(seen) == 2:
                two.set()

    with running_remote("--event-store") as server:
        # On the first GET stream, the first event passes whole; the connection drops in the middle of the second.
        server.add_rule({"drop_after_bytes": 130}, http="GET", times=1)
        async with open_bridge(tmp_path, bridge_env(server), message_handler=on_message) as (client, _):
            await client.list_tools()
            await wait_for(lambda: any(r["http"] == "GET" for r in server.requests()))
            server.notify("tools")
            server.notify("tools")
            with anyio.fail_after(10):
                await two.wait()
        resumed = [r for r in server.requests() if r["http"] == "GET" and r["headers"].get("last-event-id")]
    assert len(seen) == 2
    assert resumed


async def test_legacy_sse_remote_gone_for_good_fails_requests_instead_of_hanging(tmp_path):
    from mcp.shared.exceptions import MCPError

    with running_remote("--sse") as server:
        env = bridge_env(server, ALLOY_TRANSPORT="sse", ALLOY_READ_TIMEOUT="2", ALLOY_CONNECT_TIMEOUT="1")
        async with open_bridge(tmp_path, env) as (client, _):
            await client.list_tools()
            server.stop()
            with anyio.fail_after(10), pytest.raises(MCPError) as caught:
                await client.call_tool("echo", {"text": "x"})
    assert caught.value.code in (-32061, -32050)
