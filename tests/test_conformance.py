"""Conformance against the official reference server (`@modelcontextprotocol/server-everything`).

Every scenario runs twice with the same SDK client and the same callbacks:
once talking to the server directly (Streamable HTTP), once through the bridge
(stdio). The results must be equal, field by field. A second, independent
client — the MCP Inspector CLI — then drives the bridge too.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.helpers import ROOT, bridge_env, open_bridge
from tests.reference import INSPECTOR, everything_server, require_reference_software

pytestmark = [pytest.mark.anyio, pytest.mark.npm]

ROOTS = [types.Root(uri="file:///work/project", name="project")]
NEW_ROOTS = [types.Root(uri="file:///work/other", name="other"), types.Root(uri="file:///tmp", name="tmp")]
GZIP_DATA = "data:text/plain;base64,aGVsbG8gY29uZm9ybWFuY2U="


class Desktop:
    """The callbacks of a desktop client, recording what the server asked and sent."""

    def __init__(self) -> None:
        self.roots = list(ROOTS)
        self.logs: list[tuple[str, Any]] = []
        self.updates: list[str] = []
        self.notifications: list[str] = []
        self.updated = anyio.Event()
        self.logged = anyio.Event()

    async def sampling(self, context, params: types.CreateMessageRequestParams):
        prompt = params.messages[0].content
        return types.CreateMessageResult(role="assistant", model="test-model", stop_reason="endTurn",
                                         content=types.TextContent(type="text", text=f"echo: {prompt.text}"))

    async def elicitation(self, context, params):
        return types.ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True, "integer": 7})

    async def list_roots(self, context):
        return types.ListRootsResult(roots=self.roots)

    async def logging(self, params: types.LoggingMessageNotificationParams):
        self.logs.append((params.level, params.data))
        self.logged.set()

    async def message(self, message):
        if isinstance(message, Exception):
            return
        self.notifications.append(message.method)
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updates.append(str(message.params.uri))
            self.updated.set()

    def options(self) -> dict[str, Any]:
        return {"sampling_callback": self.sampling, "elicitation_callback": self.elicitation,
                "list_roots_callback": self.list_roots, "logging_callback": self.logging,
                "message_handler": self.message, "mode": "legacy"}


@contextlib.asynccontextmanager
async def connect(kind: str, url: str, tmp_path, desktop: Desktop) -> AsyncIterator[Client]:
    if kind == "direct":
        transport = streamable_http_client(url, max_sse_event_size=None)
        async with Client(transport, **desktop.options()) as client:
            yield client
    else:
        env = bridge_env(None, ALLOY_MCP_URL=url, ALLOY_LOG_LEVEL="info")
        async with open_bridge(tmp_path, env, **desktop.options()) as (client, _):
            yield client


_CLOCK = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z?|\d{1,2}/\d{1,2}/\d{4}|"
                    r"\d{1,2}:\d{2}:\d{2}(\s?[AP]M)?")


def dump(value: Any) -> Any:
    """A result as plain JSON, the way it crossed the wire, with wall-clock times masked.

    server-everything stamps dynamic resources with the current time; nothing else is masked.
    """
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.loads(_CLOCK.sub("<time>", json.dumps(_decode_text_blobs(value))))


def _decode_text_blobs(value: Any) -> Any:
    """Show text blobs decoded, so their embedded timestamps can be masked too."""
    if isinstance(value, list):
        return [_decode_text_blobs(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _decode_text_blobs(v) for k, v in value.items()}
    if isinstance(out.get("blob"), str) and str(out.get("mimeType", "")).startswith("text/"):
        out["blob"] = "decoded: " + base64.b64decode(out["blob"]).decode("utf-8", "replace")
    return out


async def run_scenario(client: Client, desktop: Desktop) -> dict[str, Any]:
    """Exercise every feature server-everything offers; return what the client saw, keyed by feature."""
    seen: dict[str, Any] = {
        "initialize": {"server_info": dump(client.server_info), "capabilities": dump(client.server_capabilities),
                       "protocol_version": client.protocol_version, "instructions": client.instructions},
    }
    tools = await client.list_tools()
    seen["tools/list"] = dump(tools)
    calls = {
        "echo": {"message": "hello conformance"},
        "get-sum": {"a": 2, "b": 40},
        "get-annotated-message": {"messageType": "error", "includeImage": True},
        "get-tiny-image": {},
        "get-resource-links": {"count": 3},
        "get-resource-reference": {"resourceType": "Text", "resourceId": 2},
        "get-structured-content": {"location": "New York"},
        "gzip-file-as-resource": {"name": "hello.txt.gz", "data": GZIP_DATA, "outputType": "resource"},
        "trigger-sampling-request": {"prompt": "What is MCP?", "maxTokens": 20},
        "trigger-elicitation-request": {},
    }
    for name, arguments in calls.items():
        seen[f"tools/call {name}"] = dump(await client.call_tool(name, arguments))

    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    result = await client.call_tool("trigger-long-running-operation", {"duration": 0.4, "steps": 4},
                                    progress_callback=on_progress)
    seen["progress"] = {"result": dump(result), "notifications": progress}

    first = await client.list_resources()
    pages = [dump(first)]
    cursor = first.next_cursor
    while cursor:
        page = await client.list_resources(cursor=cursor)
        pages.append(dump(page))
        cursor = page.next_cursor
    seen["resources/list"] = pages
    seen["resources/templates/list"] = dump(await client.list_resource_templates())
    for uri in ("demo://resource/static/document/features.md", "demo://resource/dynamic/text/1",
                "demo://resource/dynamic/blob/2"):
        seen[f"resources/read {uri}"] = dump(await client.read_resource(uri))

    seen["prompts/list"] = dump(await client.list_prompts())
    seen["prompts/get simple"] = dump(await client.get_prompt("simple-prompt"))
    seen["prompts/get args"] = dump(await client.get_prompt("args-prompt", {"city": "Paris", "state": "IDF"}))
    seen["prompts/get resource"] = dump(await client.get_prompt("resource-prompt",
                                                                {"resourceType": "Text", "resourceId": "3"}))
    seen["completion"] = dump(await client.complete(
        types.PromptReference(type="ref/prompt", name="completable-prompt"), {"name": "department", "value": "E"}))
    seen["completion with context"] = dump(await client.complete(
        types.PromptReference(type="ref/prompt", name="completable-prompt"), {"name": "name", "value": ""},
        context_arguments={"department": "Engineering"}))

    seen["roots before"] = dump(await client.call_tool("get-roots-list", {}))
    desktop.roots = list(NEW_ROOTS)
    await client.session.send_roots_list_changed()
    with anyio.fail_after(10):
        while True:
            roots = dump(await client.call_tool("get-roots-list", {}))
            if "file:///tmp" in json.dumps(roots):
                break
            await anyio.sleep(0.1)
    seen["roots after list_changed"] = roots

    await client.set_logging_level("debug")
    await client.call_tool("toggle-simulated-logging", {})
    with anyio.fail_after(15):
        await desktop.logged.wait()
    await client.call_tool("toggle-simulated-logging", {})
    seen["logging"] = {"received": bool(desktop.logs), "levels_valid": all(
        level in ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
        for level, _ in desktop.logs)}

    uri = "demo://resource/dynamic/text/1"
    await client.subscribe_resource(uri)
    await client.call_tool("toggle-subscriber-updates", {})
    with anyio.fail_after(15):
        await desktop.updated.wait()
    await client.call_tool("toggle-subscriber-updates", {})
    await client.unsubscribe_resource(uri)
    seen["subscription"] = sorted(set(desktop.updates))

    with anyio.move_on_after(0.5) as scope:
        await client.call_tool("trigger-long-running-operation", {"duration": 5, "steps": 5})
    seen["cancellation"] = {"cancelled": scope.cancelled_caught,
                            "usable after": dump(await client.call_tool("echo", {"message": "after cancel"}))}
    seen["notification kinds"] = sorted(set(desktop.notifications))
    try:
        await client.call_tool("no-such-tool", {})
        seen["unknown tool"] = "no error"
    except MCPError as exc:
        seen["unknown tool"] = {"code": exc.code}
    return seen


@pytest.fixture(scope="module")
def everything():
    with everything_server("streamableHttp") as url:
        yield url


async def test_every_feature_is_identical_through_the_bridge(everything, tmp_path):
    direct_desktop, bridged_desktop = Desktop(), Desktop()
    async with connect("direct", everything, tmp_path, direct_desktop) as client:
        direct = await run_scenario(client, direct_desktop)
    async with connect("bridge", everything, tmp_path, bridged_desktop) as client:
        bridged = await run_scenario(client, bridged_desktop)
    assert list(bridged) == list(direct)
    for feature in direct:
        assert bridged[feature] == direct[feature], f"{feature} differs through the bridge"
    # The scenario really exercised what it claims to.
    assert direct["progress"]["notifications"] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert direct["subscription"] == ["demo://resource/dynamic/text/1"]
    assert "What is MCP?" in json.dumps(direct["tools/call trigger-sampling-request"])
    assert "test-model" in json.dumps(direct["tools/call trigger-sampling-request"])
    assert "Ada Lovelace" in json.dumps(direct["tools/call trigger-elicitation-request"])
    assert "file:///work/project" in json.dumps(direct["roots before"])
    assert direct["logging"]["received"] and direct["cancellation"]["cancelled"]


async def test_legacy_sse_reference_server_through_the_bridge(tmp_path):
    desktop = Desktop()
    with everything_server("sse") as url:
        env = bridge_env(None, ALLOY_MCP_URL=url)
        async with open_bridge(tmp_path, env, **desktop.options()) as (client, run):
            tools = await client.list_tools()
            summed = await client.call_tool("get-sum", {"a": 1, "b": 2})
            sampled = await client.call_tool("trigger-sampling-request", {"prompt": "hi", "maxTokens": 5})
            read = await client.read_resource("demo://resource/dynamic/text/1")
    assert "legacy HTTP+SSE" in run.stderr
    assert {t.name for t in tools.tools} >= {"echo", "get-sum", "trigger-sampling-request"}
    assert summed.content[0].text == "The sum of 1 and 2 is 3."
    assert "test-model" in json.dumps(dump(sampled))
    assert read.contents[0].uri == "demo://resource/dynamic/text/1"


def inspector(url: str, *args: str) -> Any:
    """Run the MCP Inspector CLI against the bridge (launched over stdio) and parse its JSON output."""
    require_reference_software()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOY_")}
    env["MCP_CATALOG_PATH"] = str(ROOT / "tests" / "npm" / "catalog.json")
    command = [str(INSPECTOR), "--cli", "-e", f"ALLOY_MCP_URL={url}", "-e", "ALLOY_LOG_LEVEL=warning",
               sys.executable, "-m", "bridge", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_inspector_cli_lists_and_calls_tools_through_the_bridge(everything):
    listed = inspector(everything, "--method", "tools/list")
    called = inspector(everything, "--method", "tools/call", "--tool-name", "get-sum", "--tool-arg", "a=20", "b=22")
    assert {"echo", "get-sum", "get-tiny-image"} <= {t["name"] for t in listed["tools"]}
    assert called["content"][0]["text"] == "The sum of 20 and 22 is 42."


def test_inspector_cli_reads_a_resource_and_gets_a_prompt_through_the_bridge(everything):
    read = inspector(everything, "--method", "resources/read", "--uri", "demo://resource/dynamic/text/1")
    prompt = inspector(everything, "--method", "prompts/get", "--prompt-name", "args-prompt",
                       "--prompt-args", "city=Lyon", "state=ARA")
    assert read["contents"][0]["uri"] == "demo://resource/dynamic/text/1"
    assert "Lyon" in json.dumps(prompt["messages"])
