"""A real remote MCP server for the tests, built with the SDK and served by uvicorn on 127.0.0.1.

Run as a subprocess (`python -m tests.remote_server --port 0 ...`); it prints
`PORT <n>` on stdout once it listens. In front of the SDK's Streamable HTTP
app sits `Gate`, an ASGI middleware that behaves like Alloy's edge:

- `/mcp/{serverId}` needs `Authorization: Bearer <key>` and `x-alloy-userid`
  or `x-alloy-user-token`; `/mcp/{serverId}/{token}` needs nothing; anything
  else is 401 / 404, and a tool listed in `--forbid` answers 403;
- it records every HTTP request (method, path, headers, JSON-RPC method);
- it applies fault rules set through the control API (`/_control/...`):
  status codes (429, 503, 401, 500 ...), session expiry, latency, hangs,
  dropped streams, malformed bodies; a rule can also wait until the server
  has seen some other request first (`wait_for`), or replace the request's
  params before the MCP server sees them (`replace_params`).

The MCP server counts tool executions per `tag` argument, so tests can prove
that no call ran twice.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http import EventStore

MEDIA_B64 = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA="
FILLER_DESCRIPTION = "A filler tool that exists to make the tool list long. " * 3


@dataclass
class Rule:
    """One fault: match a request, then act instead of (or before) the MCP server."""

    action: dict[str, Any]
    rpc: str | None = None
    tool: str | None = None
    http: str | None = None
    times: int = 1

    def matches(self, http_method: str, rpc: str | None, tool: str | None) -> bool:
        if self.times == 0:
            return False
        if self.http is not None and self.http != http_method:
            return False
        if self.rpc is not None and self.rpc != rpc:
            return False
        return self.tool is None or self.tool == tool


@dataclass
class State:
    """Everything the tests can observe or switch."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    executions: Counter[str] = field(default_factory=Counter)
    rules: list[Rule] = field(default_factory=list)
    expired: set[str] = field(default_factory=set)
    sessions: dict[str, Any] = field(default_factory=dict)
    log_levels: dict[str, str] = field(default_factory=dict)
    subscriptions: dict[str, set[str]] = field(default_factory=dict)
    cancelled: list[Any] = field(default_factory=list)
    latency: float = 0.0
    exec_log: str | None = None
    modern_only: bool = False
    route_demanded: bool = False  # `ask_routed` has asked once: from now on it demands Mcp-Param-Region
    user_tokens: set[str] | None = None  # None: any user token is accepted
    bus: Any = None

    def __post_init__(self) -> None:
        from mcp.server.subscriptions import InMemorySubscriptionBus

        self.bus = InMemorySubscriptionBus()


class MemoryEventStore(EventStore):
    """Keeps every event so a dropped stream can be resumed with Last-Event-ID."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    async def store_event(self, stream_id, message):  # type: ignore[no-untyped-def]
        event_id = str(len(self.events) + 1)
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback):  # type: ignore[no-untyped-def]
        from mcp.server.streamable_http import EventMessage

        index = next((i for i, (eid, _, _) in enumerate(self.events) if eid == last_event_id), None)
        if index is None:
            return None
        stream_id = self.events[index][1]
        for event_id, sid, message in self.events[index + 1 :]:
            if sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def _text(value: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=value)])


def modern_input(name: str, params: types.CallToolRequestParams) -> types.CallToolResult | types.InputRequiredResult:
    """2026-07-28 has no server-to-client requests: ask for input with an InputRequiredResult, finish on retry."""
    answers = params.input_responses or {}
    kind = "ask" if name == "ask_routed" else name
    if "q" not in answers:
        if kind == "ask":
            request: Any = types.CreateMessageRequest(params=types.CreateMessageRequestParams(
                messages=[types.SamplingMessage(role="user", content=types.TextContent(type="text",
                                                                                        text="What is 2+2?"))],
                max_tokens=10))
        elif kind == "confirm":
            request = types.ElicitRequest(params=types.ElicitRequestFormParams(
                message="Proceed?", requested_schema={"type": "object", "properties": {"ok": {"type": "boolean"}}}))
        else:
            request = types.ListRootsRequest()
        return types.InputRequiredResult(input_requests={"q": request}, request_state=f"{name}-state")
    if params.request_state != f"{name}-state":
        return _text(f"lost request state: {params.request_state!r}")
    answer = answers["q"]
    data = answer.model_dump(mode="json", by_alias=True, exclude_none=True) if hasattr(answer, "model_dump") else answer
    if kind == "ask":
        return _text(f"model said: {data['content']['text']}")
    if kind == "confirm":
        return _text(f"user {data['action']}: {json.dumps(data.get('content'))}")
    return _text(",".join(root["uri"] for root in data["roots"]))


def build_server(state: State, filler_tools: int, page_size: int) -> Server:
    tools = [
        types.Tool(name="echo", description="Echo the text back.", input_schema={
            "type": "object", "properties": {"text": {"type": "string"}, "tag": {"type": "string"}}},
            annotations=types.ToolAnnotations(read_only_hint=True)),
        types.Tool(name="add", description="Add two numbers.", input_schema={
            "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
            output_schema={"type": "object", "properties": {"sum": {"type": "number"}}},
            annotations=types.ToolAnnotations(read_only_hint=True, idempotent_hint=True)),
        types.Tool(name="slow", description="Sleep, reporting progress.", input_schema={
            "type": "object", "properties": {"seconds": {"type": "number"}, "steps": {"type": "integer"},
                                             "tag": {"type": "string"}}}),
        types.Tool(name="big", description="Return n_kb kilobytes of text.", input_schema={
            "type": "object", "properties": {"n_kb": {"type": "integer"}}}),
        types.Tool(name="ask", description="Ask the client's model (sampling).", input_schema={"type": "object"}),
        types.Tool(name="confirm", description="Ask the user (elicitation).", input_schema={"type": "object"}),
        types.Tool(name="roots", description="List the client's roots.", input_schema={"type": "object"}),
        types.Tool(name="log", description="Emit log messages.", input_schema={"type": "object"}),
        types.Tool(name="delete_everything", description="A dangerous action.", input_schema={"type": "object"},
                   annotations=types.ToolAnnotations(read_only_hint=False, destructive_hint=True)),
        types.Tool(name="meta", description="Return the request's _meta.", input_schema={"type": "object"}),
        types.Tool(name="media", description="Return an image, audio and a resource link.",
                   input_schema={"type": "object"}),
        types.Tool(name="notify_me", description="Send a tools/list_changed on the standalone stream.",
                   input_schema={"type": "object"}),
    ]
    tools += [
        types.Tool(name=f"filler_{i:03d}", description=FILLER_DESCRIPTION, input_schema={"type": "object"})
        for i in range(filler_tools)
    ]
    resources = [
        types.Resource(uri=f"memo://note/{i}", name=f"note {i}", mime_type="text/plain") for i in range(5)
    ]

    def routed_tool() -> types.Tool:
        """2026-07-28 only: asks the model first; once it has asked, its schema mirrors `region` as a header."""
        region: dict[str, Any] = {"type": "string"}
        if state.route_demanded:
            region["x-mcp-header"] = "Region"
        return types.Tool(name="ask_routed", description="Ask the model, then require Mcp-Param-Region.",
                          input_schema={"type": "object", "properties": {"region": region}})

    def page(items: list[Any], params: types.PaginatedRequestParams | None) -> tuple[list[Any], str | None]:
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + page_size
        return items[start:end], (str(end) if end < len(items) else None)

    def remember(ctx: ServerRequestContext) -> str:
        session_id = ctx.session._connection.session_id or "-"  # noqa: SLF001 - test server introspection
        state.sessions[session_id] = ctx.session
        return session_id

    async def list_tools(ctx: ServerRequestContext, params: types.PaginatedRequestParams | None):
        remember(ctx)
        items, cursor = page(tools + [routed_tool()] if state.modern_only else tools, params)
        return types.ListToolsResult(tools=items, next_cursor=cursor)

    async def call_tool(ctx: ServerRequestContext, params: types.CallToolRequestParams):
        remember(ctx)
        args = params.arguments or {}
        tag = args.get("tag")
        key = str(tag if tag is not None else f"{params.name}:{ctx.request_id}")
        state.executions[key] += 1
        if state.exec_log is not None:
            with open(state.exec_log, "a") as log:
                log.write(key + "\n")
        name = params.name
        if name == "echo":
            return _text(str(args.get("text", "")))
        if name == "add":
            total = args.get("a", 0) + args.get("b", 0)
            return types.CallToolResult(content=[types.TextContent(type="text", text=str(total))],
                                        structured_content={"sum": total})
        if name == "slow":
            steps = int(args.get("steps", 0))
            seconds = float(args.get("seconds", 1))
            if steps:
                for i in range(steps):
                    await anyio.sleep(seconds / steps)
                    await ctx.session.report_progress(i + 1, steps, f"step {i + 1}")
            else:
                await anyio.sleep(seconds)
            return _text(f"slept {seconds}")
        if name == "big":
            n_kb = int(args.get("n_kb", 1))
            return _text("x" * (n_kb * 1024))
        if ctx.protocol_version == "2026-07-28" and name in ("ask", "confirm", "roots", "ask_routed"):
            if name == "ask_routed" and not params.input_responses:
                state.route_demanded = True
            return modern_input(name, params)
        if name == "ask":
            result = await ctx.session.create_message(
                [types.SamplingMessage(role="user", content=types.TextContent(type="text", text="What is 2+2?"))],
                max_tokens=10, related_request_id=ctx.request_id,
            )
            content = result.content
            return _text(f"model said: {getattr(content, 'text', content)}")
        if name == "confirm":
            answer = await ctx.session.elicit_form(
                "Proceed?", {"type": "object", "properties": {"ok": {"type": "boolean"}}},
                related_request_id=ctx.request_id,
            )
            return _text(f"user {answer.action}: {json.dumps(answer.content)}")
        if name == "roots":
            listed = await ctx.session.list_roots()
            return _text(",".join(str(root.uri) for root in listed.roots))
        if name == "log":
            for level in ("debug", "info", "warning", "error"):
                await ctx.session.send_log_message(level, f"{level} message", "test-server",
                                                   related_request_id=ctx.request_id)
            return _text("logged")
        if name == "media":
            return types.CallToolResult(content=[
                types.ImageContent(type="image", data=MEDIA_B64, mime_type="image/png",
                                   annotations=types.Annotations(audience=["user"], priority=0.5)),
                types.AudioContent(type="audio", data=MEDIA_B64, mime_type="audio/wav"),
                types.ResourceLink(type="resource_link", uri="memo://note/1", name="note 1",
                                   mime_type="text/plain"),
            ])
        if name == "meta":
            return _text(json.dumps(dict(ctx.meta or {}), default=str, sort_keys=True))
        if name == "notify_me":
            await ctx.session.send_tool_list_changed()
            return _text("notified")
        return _text(f"ran {name}")

    async def list_resources(ctx: ServerRequestContext, params: types.PaginatedRequestParams | None):
        remember(ctx)
        items, cursor = page(resources, params)
        return types.ListResourcesResult(resources=items, next_cursor=cursor)

    async def list_templates(ctx: ServerRequestContext, params: types.PaginatedRequestParams | None):
        return types.ListResourceTemplatesResult(resource_templates=[
            types.ResourceTemplate(uri_template="memo://note/{id}", name="note", mime_type="text/plain")])

    async def read_resource(ctx: ServerRequestContext, params: types.ReadResourceRequestParams):
        uri = str(params.uri)
        if not uri.startswith("memo://note/"):
            from mcp.shared.exceptions import MCPError

            raise MCPError(code=-32002, message=f"Resource not found: {uri}")
        return types.ReadResourceResult(contents=[
            types.TextResourceContents(uri=uri, mime_type="text/plain", text=f"contents of {uri}")])

    async def subscribe(ctx: ServerRequestContext, params: types.SubscribeRequestParams):
        session_id = remember(ctx)
        state.subscriptions.setdefault(session_id, set()).add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext, params: types.UnsubscribeRequestParams):
        session_id = remember(ctx)
        state.subscriptions.setdefault(session_id, set()).discard(str(params.uri))
        return types.EmptyResult()

    async def list_prompts(ctx: ServerRequestContext, params: types.PaginatedRequestParams | None):
        return types.ListPromptsResult(prompts=[types.Prompt(
            name="greet", description="Greet someone.",
            arguments=[types.PromptArgument(name="name", required=True)])])

    async def get_prompt(ctx: ServerRequestContext, params: types.GetPromptRequestParams):
        who = (params.arguments or {}).get("name", "world")
        return types.GetPromptResult(messages=[types.PromptMessage(
            role="user", content=types.TextContent(type="text", text=f"Say hello to {who}."))])

    async def complete(ctx: ServerRequestContext, params: types.CompleteRequestParams):
        names = ["alice", "albert", "bob"]
        prefix = params.argument.value
        return types.CompleteResult(completion=types.Completion(
            values=[n for n in names if n.startswith(prefix)], total=None, has_more=False))

    async def set_level(ctx: ServerRequestContext, params: types.SetLevelRequestParams):
        session_id = remember(ctx)
        state.log_levels[session_id] = params.level
        return types.EmptyResult()

    import warnings

    from mcp.server.subscriptions import ListenHandler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Server(
            "test-remote", version="1.0.0",
            on_subscriptions_listen=ListenHandler(state.bus),
            on_list_tools=list_tools, on_call_tool=call_tool,
            on_list_resources=list_resources, on_list_resource_templates=list_templates,
            on_read_resource=read_resource, on_subscribe_resource=subscribe, on_unsubscribe_resource=unsubscribe,
            on_list_prompts=list_prompts, on_get_prompt=get_prompt, on_completion=complete,
            on_set_logging_level=set_level,
        )


class Gate:
    """Alloy-style auth, request recording, fault injection and the control API, in front of the MCP app."""

    def __init__(self, app: Any, state: State, args: argparse.Namespace) -> None:
        self.app = app
        self.state = state
        self.args = args

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/_control/"):
            await self.control(scope, receive, send)
            return
        body = b""
        if scope["method"] == "POST":
            while True:
                event = await receive()
                body += event.get("body", b"")
                if not event.get("more_body"):
                    break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        rpc, tool = _rpc_of(body)
        record = {"http": scope["method"], "path": path, "headers": headers, "rpc": rpc, "tool": tool,
                  "query": scope.get("query_string", b"").decode(), "status": None, "params": _params_of(body)}
        self.state.requests.append(record)
        if rpc == "notifications/cancelled":
            self.state.cancelled.append(_cancelled_id(body))

        status = self.authorize(path, headers, tool)
        if status is not None:
            record["status"] = status[0]
            await _respond(send, status[0], {"error": status[1]})
            return
        if self.state.modern_only and rpc == "initialize":
            record["status"] = 400
            requested = (json.loads(body).get("params") or {}).get("protocolVersion")
            await _respond(send, 400, {"jsonrpc": "2.0", "id": _request_id(body), "error": {
                "code": -32022, "message": "Unsupported protocol version",
                "data": {"supported": ["2026-07-28"], "requested": requested}}})
            return
        session_id = headers.get("mcp-session-id")
        if session_id and session_id in self.state.expired:
            record["status"] = 404
            await _respond(send, 404, {"jsonrpc": "2.0", "id": "server-error",
                                       "error": {"code": -32600, "message": "Session not found"}})
            return

        for rule in self.state.rules:
            if rule.matches(scope["method"], rpc, tool):
                if rule.times > 0:
                    rule.times -= 1
                if "replace_params" in rule.action:
                    # The MCP server sees other params than the client sent (e.g. `{}`: it refuses the request).
                    body = _with_params(body, rule.action["replace_params"])
                    record["params_replaced"] = True
                    break
                handled = await self.apply(rule.action, scope, send, record, session_id, body)
                if handled:
                    return
                break
        if self.state.latency:
            await anyio.sleep(self.state.latency)

        if not path.startswith("/messages"):
            scope = dict(scope, path="/mcp", raw_path=b"/mcp")
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def send_recorded(event: dict[str, Any]) -> None:
            if event["type"] == "http.response.start":
                record["status"] = event["status"]
            await send(event)

        await self.app(scope, replay, send_recorded)

    def authorize(self, path: str, headers: dict[str, str], tool: str | None) -> tuple[int, str] | None:
        """Alloy's rules: 404 unknown server, 401 bad credentials, 403 a restricted action."""
        parts = path.strip("/").split("/")
        if parts[0] == "messages":
            return None  # legacy SSE message endpoint: the session id in the query is the capability
        if len(parts) < 2 or parts[0] != "mcp" or parts[1] != self.args.server_id or len(parts) > 3:
            return 404, "Server not found"
        if len(parts) == 3:
            if parts[2] != self.args.token:
                return 401, "Invalid or expired access token"
        else:
            if headers.get("authorization") != f"Bearer {self.args.api_key}":
                return 401, "Invalid API key"
            if not (headers.get("x-alloy-userid") or headers.get("x-alloy-user-token")):
                return 401, "Missing x-alloy-userid"
            token = headers.get("x-alloy-user-token")
            if token is not None and self.state.user_tokens is not None and token not in self.state.user_tokens:
                return 401, "Invalid or expired user token"
        if tool is not None and tool in self.args.forbid:
            return 403, "Action not allowed"
        return None

    async def apply(self, action: dict[str, Any], scope: dict[str, Any], send: Any, record: dict[str, Any],
                    session_id: str | None, body: bytes) -> bool:
        """Run one fault; True when it answered the request itself."""
        if "wait_for" in action:
            # Hold the request until the server has recorded `count` requests of JSON-RPC method `rpc`
            # (at most `timeout` seconds), then apply the rest of the action.
            wanted = action["wait_for"]
            with anyio.move_on_after(float(wanted.get("timeout", 15))):
                while sum(1 for r in self.state.requests if r["rpc"] == wanted["rpc"]) < int(wanted["count"]):
                    await anyio.sleep(0.01)
            rest = {k: v for k, v in action.items() if k != "wait_for"}
            return await self.apply(rest, scope, send, record, session_id, body) if rest else False
        if "delay" in action:
            await anyio.sleep(float(action["delay"]))
            return False
        if action.get("expire"):
            if session_id:
                self.state.expired.add(session_id)
            record["status"] = 404
            await _respond(send, 404, {"jsonrpc": "2.0", "id": "server-error",
                                       "error": {"code": -32600, "message": "Session not found"}})
            return True
        if action.get("hang"):
            record["status"] = "hang"
            await anyio.sleep_forever()
        if "status" in action:
            record["status"] = action["status"]
            payload = action.get("body", {"error": f"injected {action['status']}"})
            await _respond(send, action["status"], payload, action.get("headers", {}))
            return True
        if action.get("sse_close"):
            record["status"] = 200
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": b": bye\n\n"})
            return True
        if "raw" in action:
            raw = action["raw"]
            record["status"] = raw.get("status", 200)
            data = raw.get("body", "").replace("{ID}", json.dumps(_request_id(body)))
            await send({"type": "http.response.start", "status": raw.get("status", 200),
                        "headers": [(b"content-type", raw.get("content_type", "application/json").encode())]})
            await send({"type": "http.response.body", "body": data.encode()})
            return True
        if "drop_after_bytes" in action:
            limit = int(action["drop_after_bytes"])
            sent_bytes = 0
            scope = dict(scope, path="/mcp", raw_path=b"/mcp")
            replayed = False

            async def replay() -> dict[str, Any]:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await anyio.sleep_forever()
                return {}

            async def cut(event: dict[str, Any]) -> None:
                nonlocal sent_bytes
                if event["type"] == "http.response.body":
                    chunk = event.get("body", b"")
                    if sent_bytes + len(chunk) > limit:
                        await send({"type": "http.response.body", "body": chunk[: max(0, limit - sent_bytes)],
                                    "more_body": True})
                        raise ConnectionAbortedError("injected drop")
                    sent_bytes += len(chunk)
                await send(event)

            try:
                await self.app(scope, replay, cut)
            except ConnectionAbortedError:
                pass
            record["status"] = "dropped"
            raise ConnectionAbortedError("injected drop")  # uvicorn closes the connection mid-body
        return False

    async def control(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        command = scope["path"].removeprefix("/_control/")
        data = json.loads(body) if body else {}
        state = self.state
        if command == "state":
            await _respond(send, 200, {
                "requests": state.requests,
                "executions": dict(state.executions),
                "log_levels": state.log_levels,
                "subscriptions": {k: sorted(v) for k, v in state.subscriptions.items()},
                "cancelled": state.cancelled,
                "sessions": sorted(state.sessions),
            })
            return
        if command == "rules":
            state.rules.extend(Rule(action=r["action"], rpc=r.get("rpc"), tool=r.get("tool"), http=r.get("http"),
                                    times=r.get("times", 1)) for r in data.get("rules", []))
        elif command == "clear":
            state.rules.clear()
            state.latency = 0.0
        elif command == "user_tokens":
            state.user_tokens = set(data["accept"])
        elif command == "latency":
            state.latency = float(data["seconds"])
        elif command == "expire":
            state.expired.update(state.sessions)
        elif command == "reset":
            state.requests.clear()
            state.executions.clear()
            state.log_levels.clear()
            state.subscriptions.clear()
            state.cancelled.clear()
            state.sessions.clear()
            state.route_demanded = False
            state.user_tokens = None  # any user token is accepted again
        elif command == "notify" and state.modern_only:
            from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged

            kind = data.get("kind", "tools")
            if kind == "updated":
                await state.bus.publish(ResourceUpdated(uri=data.get("uri", "memo://note/1")))
            elif kind == "tools":
                await state.bus.publish(ToolsListChanged())
        elif command == "notify":
            for session_id, session in list(state.sessions.items()):
                if session_id in state.expired:
                    continue
                try:
                    kind = data.get("kind", "tools")
                    if kind == "tools":
                        await session.send_tool_list_changed()
                    elif kind == "log":
                        await session.send_log_message("warning", data.get("text", "hello"), "test-server")
                    elif kind == "updated":
                        for uri in state.subscriptions.get(session_id, ()):
                            await session.send_resource_updated(uri)
                except Exception as exc:  # noqa: BLE001 - a dead session is not the test's concern
                    print(f"notify failed for {session_id}: {exc!r}", file=sys.stderr)
        else:
            await _respond(send, 404, {"error": f"unknown control {command}"})
            return
        await _respond(send, 200, {"ok": True})


def _rpc_of(body: bytes) -> tuple[str | None, str | None]:
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    method = parsed.get("method")
    params = parsed.get("params") if isinstance(parsed.get("params"), dict) else {}
    tool = params.get("name") if method == "tools/call" else None
    if method is None and ("result" in parsed or "error" in parsed):
        method = "(answer)"
    return method, tool


def _params_of(body: bytes) -> Any:
    """The request's params, for tests that check what reached the server (kept small)."""
    try:
        params = json.loads(body).get("params") if body and len(body) < 65536 else None
    except (ValueError, AttributeError):
        return None
    return params if isinstance(params, dict) else None


def _with_params(body: bytes, params: Any) -> bytes:
    """The same JSON-RPC message with other params."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    if not isinstance(parsed, dict):
        return body
    return json.dumps({**parsed, "params": params}).encode()


def _request_id(body: bytes) -> Any:
    try:
        return json.loads(body).get("id")
    except (ValueError, AttributeError):
        return None


def _cancelled_id(body: bytes) -> Any:
    try:
        return json.loads(body)["params"]["requestId"]
    except (ValueError, KeyError, TypeError):
        return None


async def _respond(send: Any, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    content_type = b"text/plain" if isinstance(payload, str) else b"application/json"
    raw_headers = [(b"content-type", content_type), (b"content-length", str(len(data)).encode())]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": data})


def legacy_sse_app(server: Server) -> Any:
    """The 2024-11-05 HTTP+SSE transport: GET /mcp opens the stream, POST /messages/ sends."""
    from mcp.server.sse import SseServerTransport
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Mount, Route

    transport = SseServerTransport("/messages/")

    async def stream(request: Any) -> Response:
        async with transport.connect_sse(request.scope, request.receive, request._send) as (read, write):
            await server.run(read, write, server.create_initialization_options())
        return Response()

    async def not_allowed(request: Any) -> Response:
        return Response("Method Not Allowed", status_code=405)

    return Starlette(routes=[
        Route("/mcp", endpoint=stream, methods=["GET"]),
        Route("/mcp", endpoint=not_allowed, methods=["POST", "DELETE"]),
        Mount("/messages/", app=transport.handle_post_message),
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--server-id", default="srv_test")
    parser.add_argument("--api-key", default="test-api-key")
    parser.add_argument("--token", default="test-access-token")
    parser.add_argument("--forbid", nargs="*", default=["delete_everything"])
    parser.add_argument("--json-response", action="store_true")
    parser.add_argument("--event-store", action="store_true")
    parser.add_argument("--filler-tools", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=4)
    parser.add_argument("--sse", action="store_true", help="serve the legacy HTTP+SSE transport instead")
    parser.add_argument("--modern-only", action="store_true",
                        help="serve only the 2026-07-28 revision: refuse initialize with -32022")
    parser.add_argument("--exec-log", help="append the tag of every tool execution to this file")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args()

    state = State(exec_log=args.exec_log, modern_only=args.modern_only)
    server = build_server(state, args.filler_tools, args.page_size)
    if args.sse:
        app = legacy_sse_app(server)
    else:
        app = server.streamable_http_app(
            json_response=args.json_response,
            event_store=MemoryEventStore() if args.event_store else None,
            retry_interval=100 if args.event_store else None,
            max_request_body_size=8 * 1024 * 1024,
        )
    # IPPROTO_TCP explicitly, so asyncio sets TCP_NODELAY on accepted connections (see bench/server.py).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(Gate(app, state, args), log_level="warning", lifespan="on",
                            ssl_certfile=args.certfile, ssl_keyfile=args.keyfile, timeout_graceful_shutdown=1)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
