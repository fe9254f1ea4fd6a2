"""A remote that serves only the 2026-07-28 revision (refuses `initialize` with -32022), behind the bridge.

The desktop speaks the handshake era; the bridge adapts: `initialize` from
`server/discover`, the per-request envelope, `input_required` turned into real
sampling / elicitation / roots requests, subscriptions over `subscriptions/listen`.
"""

from __future__ import annotations

import json

import anyio
import mcp_types as types
import pytest

from tests.helpers import USER_ID, bridge_env, notify_until, open_bridge, raw_bridge, text_of, wait_for

pytestmark = pytest.mark.anyio


async def test_handshake_desktop_works_against_a_modern_only_remote(modern, tmp_path):
    async with open_bridge(tmp_path, bridge_env(modern), mode="legacy") as (client, run):
        info = client.server_info
        version = client.protocol_version
        tools = await client.list_tools()
        result = await client.call_tool("echo", {"text": "modern", "tag": "m1"})
        added = await client.call_tool("add", {"a": 2, "b": 3})
    assert info is not None and info.name == "test-remote"
    assert version == "2025-11-25"
    assert "echo" in [t.name for t in tools.tools]
    assert text_of(result) == "modern" and added.structured_content == {"sum": 5}
    assert "adapting it for a desktop" in run.stderr
    assert modern.executions()["m1"] == 1
    posts = [r for r in modern.requests() if r["http"] == "POST"]
    assert [r["rpc"] for r in posts[:2]] == ["initialize", "server/discover"]
    assert all(r["headers"].get("mcp-protocol-version") == "2026-07-28" for r in posts[1:])


async def test_sdk_client_in_auto_mode_also_works(modern, tmp_path):
    async with open_bridge(tmp_path, bridge_env(modern)) as (client, _):
        result = await client.call_tool("echo", {"text": "auto"})
    assert text_of(result) == "auto"


async def test_the_envelope_carries_the_desktops_own_identity_and_capabilities(modern, tmp_path):
    capabilities = {"sampling": {}, "roots": {"listChanged": True}, "experimental": {"x.example": {"on": True}}}
    async with raw_bridge(tmp_path, bridge_env(modern)) as bridge:
        answer = await bridge.request("i", "initialize", {
            "protocolVersion": "2025-06-18", "capabilities": capabilities,
            "clientInfo": {"name": "raw-desktop", "version": "9.9"}})
        listed = await bridge.request(2, "tools/list", {})
    assert answer["result"]["protocolVersion"] == "2025-06-18"
    assert answer["result"]["serverInfo"]["name"] == "test-remote"
    call = next(r for r in modern.requests() if r["rpc"] == "tools/list")
    meta = call["params"]["_meta"]
    assert meta["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
    assert meta["io.modelcontextprotocol/clientInfo"] == {"name": "raw-desktop", "version": "9.9"}
    assert meta["io.modelcontextprotocol/clientCapabilities"] == capabilities
    # Fields the desktop's revision does not have are stripped.
    assert not {"resultType", "ttlMs", "cacheScope"} & set(listed["result"])
    assert "io.modelcontextprotocol/serverInfo" not in listed["result"].get("_meta", {})


async def test_input_required_becomes_sampling_elicitation_and_roots_requests(modern, tmp_path):
    async def sampling(context, params):
        assert params.messages[0].content.text == "What is 2+2?"
        return types.CreateMessageResult(role="assistant", model="m", content=types.TextContent(type="text", text="4"))

    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"ok": True})

    async def roots(context):
        return types.ListRootsResult(roots=[types.Root(uri="file:///home/me", name="me")])

    async with open_bridge(tmp_path, bridge_env(modern), mode="legacy", sampling_callback=sampling,
                           elicitation_callback=elicitation, list_roots_callback=roots) as (client, _):
        asked = await client.call_tool("ask", {})
        confirmed = await client.call_tool("confirm", {})
        listed = await client.call_tool("roots", {})
    assert text_of(asked) == "model said: 4"
    assert text_of(confirmed) == 'user accept: {"ok": true}'
    assert text_of(listed) == "file:///home/me"
    retried = [r for r in modern.requests("tools/call") if r["tool"] == "ask"]
    assert len(retried) == 2 and retried[1]["params"]["requestState"] == "ask-state"


async def test_progress_and_log_opt_in(modern, tmp_path):
    progress: list[float] = []
    logs: list[str] = []

    async def on_progress(value, total, message):
        progress.append(value)

    async def on_log(params):
        logs.append(params.level)

    async with open_bridge(tmp_path, bridge_env(modern), mode="legacy", logging_callback=on_log) as (client, _):
        await client.set_logging_level("warning")
        await client.call_tool("slow", {"seconds": 0.3, "steps": 3}, progress_callback=on_progress)
        await client.call_tool("log", {})
    assert progress == [1, 2, 3]
    assert logs == ["warning", "error"]
    assert not modern.requests("logging/setLevel")
    log_call = next(r for r in modern.requests("tools/call") if r["tool"] == "log")
    assert log_call["params"]["_meta"]["io.modelcontextprotocol/logLevel"] == "warning"


async def test_subscriptions_and_list_changed_over_subscriptions_listen(modern, tmp_path):
    updates: list[str] = []
    kinds: list[str] = []
    got = anyio.Event()

    async def on_message(message):
        if isinstance(message, Exception):
            return
        kinds.append(message.method)
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            got.set()

    async with open_bridge(tmp_path, bridge_env(modern), mode="legacy", message_handler=on_message) as (client, _):
        await client.subscribe_resource("memo://note/1")
        await wait_for(lambda: any("memo://note/1" in json.dumps(r.get("params")) for r in
                                   modern.requests("subscriptions/listen")))
        await notify_until(modern, got, "updated", uri="memo://note/1")
    assert set(updates) == {"memo://note/1"}
    assert "notifications/subscriptions/acknowledged" not in kinds
    assert not modern.requests("resources/subscribe")


async def test_cancellation_closes_the_request_and_the_session_stays_usable(modern, tmp_path):
    async with open_bridge(tmp_path, bridge_env(modern), mode="legacy") as (client, _):
        with anyio.move_on_after(0.5) as scope:
            await client.call_tool("slow", {"seconds": 5, "tag": "c"})
        after = await client.call_tool("echo", {"text": "after"})
    assert scope.cancelled_caught and text_of(after) == "after"


async def test_ping_and_initialized_stay_local(modern, tmp_path):
    async with raw_bridge(tmp_path, bridge_env(modern)) as bridge:
        await bridge.initialize()
        pong = await bridge.request("p", "ping")
    assert pong["result"] == {}
    assert {r["rpc"] for r in modern.requests()} <= {"initialize", "server/discover", "subscriptions/listen"}
    _ = USER_ID
