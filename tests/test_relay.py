"""The relay passes every kind of MCP traffic through, unchanged, in both directions.

Each test drives the bridge as a subprocess through the SDK's stdio client
against the real test server on 127.0.0.1.
"""

from __future__ import annotations

import json

import anyio
import mcp_types as types
import pytest

from tests.helpers import (
    ACCESS_TOKEN,
    API_KEY,
    SERVER_ID,
    USER_ID,
    USER_TOKEN,
    Notifications,
    bridge_env,
    open_bridge,
    text_of,
)

pytestmark = pytest.mark.anyio


async def test_header_auth_is_injected_on_every_request(remote, tmp_path):
    env = bridge_env(remote, ALLOY_USER_TOKEN=USER_TOKEN, ALLOY_CREDENTIAL_ID="cred_7",
                     ALLOY_REDIRECT_URI="https://app.example.com/oauth/done",
                     ALLOY_MCP_HEADERS='{"X-Team": "blue"}')
    async with open_bridge(tmp_path, env) as (client, _):
        result = await client.call_tool("echo", {"text": "hi"})
    assert text_of(result) == "hi"
    mcp_requests = [r for r in remote.requests() if r["http"] in ("POST", "GET", "DELETE")]
    assert {r["http"] for r in mcp_requests} >= {"POST", "GET", "DELETE"}
    for request in mcp_requests:
        headers = request["headers"]
        assert headers["authorization"] == f"Bearer {API_KEY}"
        assert headers["x-alloy-userid"] == USER_ID
        assert headers["x-alloy-user-token"] == USER_TOKEN
        assert headers["x-credential-id"] == "cred_7"
        assert headers["x-redirect-uri"] == "https://app.example.com/oauth/done"
        assert headers["x-team"] == "blue"


async def test_token_url_needs_no_auth_headers(remote, tmp_path):
    env = bridge_env(remote, ALLOY_MCP_URL=remote.token_url, ALLOY_API_KEY=None, ALLOY_USER_ID=None)
    async with open_bridge(tmp_path, env) as (client, _):
        result = await client.call_tool("echo", {"text": "via token url"})
    assert text_of(result) == "via token url"
    requests = remote.requests()
    assert requests and all(r["path"] == f"/mcp/{SERVER_ID}/{ACCESS_TOKEN}" for r in requests)
    assert all("authorization" not in r["headers"] for r in requests)


async def test_server_id_and_access_token_compose_the_token_url(remote, tmp_path):
    env = bridge_env(None, ALLOY_SERVER_ID=SERVER_ID, ALLOY_ACCESS_TOKEN=ACCESS_TOKEN, ALLOY_BASE_URL=remote.base)
    async with open_bridge(tmp_path, env) as (client, _):
        tools = await client.list_tools()
    assert any(t.name == "echo" for t in tools.tools)
    assert {r["path"] for r in remote.requests()} == {f"/mcp/{SERVER_ID}/{ACCESS_TOKEN}"}


async def test_server_id_composes_the_header_auth_url(remote, tmp_path):
    env = bridge_env(remote, ALLOY_MCP_URL=None, ALLOY_SERVER_ID=SERVER_ID, ALLOY_BASE_URL=remote.base + "/")
    async with open_bridge(tmp_path, env) as (client, _):
        await client.list_tools()
    assert {r["path"] for r in remote.requests()} == {f"/mcp/{SERVER_ID}"}


async def test_every_message_after_initialize_carries_the_negotiated_protocol_version(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        await client.list_tools()
        await client.call_tool("echo", {"text": "x"})
        negotiated = client.protocol_version
    requests = remote.requests()
    initialize = [r for r in requests if r["rpc"] == "initialize"]
    later = [r for r in requests if r["rpc"] != "initialize"]
    assert initialize and "mcp-protocol-version" not in initialize[0]["headers"]
    assert later and all(r["headers"].get("mcp-protocol-version") == negotiated for r in later)


async def test_desktop_capabilities_and_client_info_reach_the_remote_unchanged(remote, tmp_path):
    from tests.helpers import raw_bridge

    params = {"protocolVersion": "2025-06-18", "clientInfo": {"name": "desk", "version": "3.1", "title": "Desk"},
              "capabilities": {"roots": {"listChanged": True}, "elicitation": {"form": {}},
                               "experimental": {"com.example/feature": {"level": 2}}},
              "_meta": {"com.example/trace": "t-1"}}
    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        answer = await bridge.request("init-1", "initialize", params)
    assert answer["result"]["protocolVersion"] == "2025-06-18"
    initialize = remote.requests("initialize")
    assert len(initialize) == 1 and initialize[0]["params"] == params


async def test_server_discover_is_answered_locally_with_method_not_found(remote, tmp_path):
    from tests.helpers import raw_bridge

    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        answer = await bridge.request(1, "server/discover", {})
    assert answer["error"]["code"] == -32601
    assert remote.requests("server/discover") == []


async def test_tools_list_pagination_cursors_pass_through(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        first = await client.list_tools()
        assert first.next_cursor is not None
        names = [t.name for t in first.tools]
        cursor = first.next_cursor
        while cursor:
            page = await client.list_tools(cursor=cursor)
            names += [t.name for t in page.tools]
            cursor = page.next_cursor
    assert names[:3] == ["echo", "add", "slow"]
    assert len(names) == len(set(names)) and "filler_002" in names


async def test_resources_list_templates_read_and_pagination(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        first = await client.list_resources()
        second = await client.list_resources(cursor=first.next_cursor)
        templates = await client.list_resource_templates()
        read = await client.read_resource("memo://note/3")
    assert [str(r.uri) for r in first.resources] == ["memo://note/0", "memo://note/1", "memo://note/2",
                                                    "memo://note/3"]
    assert [str(r.uri) for r in second.resources] == ["memo://note/4"]
    assert templates.resource_templates[0].uri_template == "memo://note/{id}"
    assert read.contents[0].text == "contents of memo://note/3"


async def test_resource_subscription_delivers_updates_over_the_get_stream(remote, tmp_path):
    updates = Notifications(types.ResourceUpdatedNotification)
    async with open_bridge(tmp_path, bridge_env(remote), message_handler=updates) as (client, _):
        await client.subscribe_resource("memo://note/1")
        remote.notify("updated")
        await updates.wait()
    assert updates.uris == ["memo://note/1"]


async def test_prompts_and_completion(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        prompts = await client.list_prompts()
        prompt = await client.get_prompt("greet", {"name": "Ada"})
        completion = await client.complete(types.PromptReference(type="ref/prompt", name="greet"),
                                           {"name": "name", "value": "al"})
    assert prompts.prompts[0].name == "greet"
    assert prompt.messages[0].content.text == "Say hello to Ada."
    assert completion.completion.values == ["alice", "albert"]


async def test_log_level_and_log_notifications(remote, tmp_path):
    logs: list[tuple[str, object]] = []

    async def on_log(params):
        logs.append((params.level, params.data))

    async with open_bridge(tmp_path, bridge_env(remote), logging_callback=on_log) as (client, _):
        await client.set_logging_level("warning")
        await client.call_tool("log", {})
    assert ("error", "error message") in logs
    assert set(remote.state()["log_levels"].values()) == {"warning"}


async def test_progress_notifications_reach_the_desktop(remote, tmp_path):
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        result = await client.call_tool("slow", {"seconds": 0.3, "steps": 3}, progress_callback=on_progress)
    assert text_of(result) == "slept 0.3"
    assert [p[0] for p in progress] == [1, 2, 3]
    assert progress[-1][2] == "step 3"


async def test_cancellation_reaches_the_remote(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        with anyio.move_on_after(0.5):
            await client.call_tool("slow", {"seconds": 5, "tag": "to-cancel"})
        # The session stays usable after the cancellation.
        assert text_of(await client.call_tool("echo", {"text": "after"})) == "after"
    cancelled = remote.state()["cancelled"]
    assert len(cancelled) == 1
    calls = [r for r in remote.requests("tools/call") if r["tool"] == "slow"]
    assert len(calls) == 1


async def test_sampling_request_from_the_remote_is_answered_by_the_desktop(remote, tmp_path):
    async def sampling(context, params):
        assert params.messages[0].content.text == "What is 2+2?"
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="4"),
                                         model="test-model")

    async with open_bridge(tmp_path, bridge_env(remote), sampling_callback=sampling) as (client, _):
        result = await client.call_tool("ask", {})
    assert text_of(result) == "model said: 4"


async def test_elicitation_request_from_the_remote_is_answered_by_the_desktop(remote, tmp_path):
    async def elicit(context, params):
        return types.ElicitResult(action="accept", content={"ok": True})

    async with open_bridge(tmp_path, bridge_env(remote), elicitation_callback=elicit) as (client, _):
        result = await client.call_tool("confirm", {})
    assert text_of(result) == 'user accept: {"ok": true}'


async def test_roots_request_over_the_get_stream_is_answered_by_the_desktop(remote, tmp_path):
    async def roots(context):
        return types.ListRootsResult(roots=[types.Root(uri="file:///home/user/project", name="project")])

    async with open_bridge(tmp_path, bridge_env(remote), list_roots_callback=roots) as (client, _):
        result = await client.call_tool("roots", {})
    assert text_of(result) == "file:///home/user/project"


async def test_list_changed_notification_from_the_get_stream_reaches_the_desktop(remote, tmp_path):
    changed = Notifications(types.ToolListChangedNotification)
    async with open_bridge(tmp_path, bridge_env(remote), message_handler=changed) as (client, _):
        await client.list_tools()
        remote.notify("tools")
        await changed.wait()


async def test_meta_passes_through_unchanged(remote, tmp_path):
    meta = {"com.example/trace": {"id": "abc", "n": [1, 2]}}
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        result = await client.call_tool("meta", {}, meta=meta)
    seen = json.loads(text_of(result))
    assert seen["com.example/trace"] == {"id": "abc", "n": [1, 2]}


async def test_structured_output_passes_through(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        result = await client.call_tool("add", {"a": 2, "b": 3})
    assert result.structured_content == {"sum": 5}


async def test_images_audio_annotations_and_resource_links_pass_through(remote, tmp_path):
    from tests.remote_server import MEDIA_B64

    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        result = await client.call_tool("media", {})
    image, audio, link = result.content
    assert image.type == "image" and image.data == MEDIA_B64 and image.annotations.priority == 0.5
    assert audio.type == "audio" and audio.data == MEDIA_B64 and audio.mime_type == "audio/wav"
    assert link.type == "resource_link" and str(link.uri) == "memo://note/1"


async def test_five_megabyte_result(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):
        result = await client.call_tool("big", {"n_kb": 5 * 1024})
    assert len(text_of(result)) == 5 * 1024 * 1024


async def test_twenty_concurrent_calls_each_answered_once(remote, tmp_path):
    results: dict[int, str] = {}
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, _):

        async def call(i: int) -> None:
            result = await client.call_tool("slow" if i % 2 else "echo",
                                            {"seconds": 0.2, "text": f"m{i}", "tag": f"c{i}"})
            results[i] = text_of(result)

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(call, i)
    assert len(results) == 20
    assert all(results[i] == (f"m{i}" if i % 2 == 0 else "slept 0.2") for i in range(20))
    assert remote.executions() == {f"c{i}": 1 for i in range(20)}


async def test_unknown_methods_pass_through_to_the_remote(remote, tmp_path):
    from tests.helpers import raw_bridge

    async with raw_bridge(tmp_path, bridge_env(remote)) as bridge:
        await bridge.initialize()
        answer = await bridge.request(7, "vendor/experimental", {"x": 1})
    # The remote (not the bridge) answered: it does not know the method.
    assert answer["error"]["code"] == -32601
    assert remote.requests("vendor/experimental")
