"""A scriptable hostile MCP remote: hand-written HTTP/1.1 on raw asyncio sockets, 127.0.0.1 only.

By default it behaves like a small, correct Streamable HTTP MCP server (sessions,
`initialize`, `notifications/*`, `ping`, `tools/list`, a `tools/call` named `echo`,
GET answered 405, DELETE ending the session). Each test then scripts the
misbehaviour it needs, byte for byte:

    async with HostileRemote() as remote:
        remote.on("POST", "tools/call", Reply(500, body=b'{"error": {"message": "\\ud800"}}'))
        remote.on("POST", "initialize", lambda req: Reply(200, headers=[(b"Mcp-Session-Id", "café".encode())],
                                                          body=json_body(rpc_result(req.rpc_id, {...}))))

A handler is a `Reply` or a callable taking the `Received` request and returning
a `Reply` (or an awaitable of one). A `Reply` body is bytes, or an async iterator
of byte chunks (sent with chunked transfer encoding, so a stream can be held open
or end at will); `raw` writes exact bytes instead of a response and `drop` closes
the connection without answering. Every request is recorded in `remote.requests`.

Legacy HTTP+SSE mode (`HostileRemote(legacy_sse=True)`): a GET on the endpoint
opens the event stream, which first sends the `endpoint` event (`endpoint_data`,
scriptable), then whatever is pushed with `push_stream`; POSTs to the message
endpoint are answered 202 and the JSON body of their scripted `Reply` (if any) is
sent on the event stream as an `event: message`.

The server runs as a task of the test's own event loop (start and stop with
`async with`); stopping closes every connection, so held streams end with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = "2025-11-25"
_REASONS = {200: "OK", 202: "Accepted", 204: "No Content", 301: "Moved Permanently", 302: "Found",
            307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable"}


# --- building answers ------------------------------------------------------------------------


def json_body(value: Any) -> bytes:
    """Compact JSON; `ensure_ascii` so that a lone surrogate goes out as the escape `\\ud800`."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode()


def rpc_result(request_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def rpc_error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def text_result(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": False}


def sse_event(data: bytes | str | dict[str, Any] | list[Any] | None = None, *, event: str | None = None,
              id: str | None = None, retry: int | None = None) -> bytes:
    """One server-sent event (a dict or list is JSON-encoded; multi-line data becomes several `data:` lines)."""
    if isinstance(data, (dict, list)):
        data = json_body(data)
    if isinstance(data, str):
        data = data.encode()
    out = b""
    if event is not None:
        out += b"event: " + event.encode() + b"\n"
    if id is not None:
        out += b"id: " + id.encode() + b"\n"
    if retry is not None:
        out += b"retry: " + str(retry).encode() + b"\n"
    if data is not None:
        for line in data.split(b"\n"):
            out += b"data: " + line + b"\n"
    return out + b"\n"


HeaderList = list[tuple[str | bytes, str | bytes]]


@dataclass
class Reply:
    """One scripted HTTP answer."""

    status: int = 200
    headers: HeaderList = field(default_factory=list)
    body: bytes | AsyncIterator[bytes] | None = b""
    reason: str | None = None
    raw: bytes | None = None  # written verbatim instead of a response (then the connection closes)
    drop: bool = False  # close the connection without a byte of answer
    close: bool = False  # close the connection after this answer


def json_reply(value: Any, status: int = 200, headers: HeaderList | None = None) -> Reply:
    body = value if isinstance(value, bytes) else json_body(value)
    return Reply(status, [("Content-Type", "application/json"), *(headers or [])], body)


def sse_reply(*events: bytes, then: AsyncIterator[bytes] | None = None, headers: HeaderList | None = None,
              status: int = 200) -> Reply:
    """An event-stream answer: the given events, then (optionally) whatever `then` yields, then the end."""

    async def stream() -> AsyncIterator[bytes]:
        for event in events:
            yield event
        if then is not None:
            async for chunk in then:
                yield chunk

    return Reply(status, [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"), *(headers or [])],
                 stream())


async def comments_forever(every: float = 0.2, limit: float = 60.0) -> AsyncIterator[bytes]:
    """SSE comment keep-alives, for at most `limit` seconds (a held-open stream that never answers)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        yield b": keep-alive\n\n"
        await asyncio.sleep(every)


# --- what arrived ------------------------------------------------------------------------------


@dataclass
class Received:
    """One HTTP request the remote received."""

    method: str
    target: str
    headers: dict[str, str]  # lower-case names, latin-1 decoded values (last one wins)
    body: bytes
    connection: int

    @property
    def rpc(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    @property
    def rpc_method(self) -> str | None:
        rpc = self.rpc
        return rpc.get("method") if isinstance(rpc, dict) else None

    @property
    def rpc_id(self) -> Any:
        rpc = self.rpc
        return rpc.get("id") if isinstance(rpc, dict) else None

    @property
    def params(self) -> dict[str, Any]:
        rpc = self.rpc
        params = rpc.get("params") if isinstance(rpc, dict) else None
        return params if isinstance(params, dict) else {}

    @property
    def tool(self) -> str | None:
        name = self.params.get("name") if self.rpc_method == "tools/call" else None
        return name if isinstance(name, str) else None

    @property
    def session(self) -> str | None:
        return self.headers.get("mcp-session-id")


Handler = Reply | Callable[[Received], "Reply | Awaitable[Reply]"]


@dataclass
class _Rule:
    http: str
    rpc: str | None
    tool: str | None
    handler: Handler
    times: int | None

    def matches(self, request: Received) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.http != request.method:
            return False
        if self.rpc is not None and self.rpc != request.rpc_method:
            return False
        return self.tool is None or self.tool == request.tool


# --- the server ------------------------------------------------------------------------------


class HostileRemote:
    """See the module docstring."""

    def __init__(self, *, path: str = "/mcp/srv_test", sessions: bool = True, get_stream: bool = False,
                 legacy_sse: bool = False, endpoint_data: str = "/messages?session=1") -> None:
        self.path = path
        self.sessions = sessions
        self.get_stream = get_stream
        self.legacy_sse = legacy_sse
        self.endpoint_data = endpoint_data
        self.requests: list[Received] = []
        self.rules: list[_Rule] = []
        self.issued: list[str] = []  # session ids handed out, in order
        self.live: set[str] = set()
        self.expired: set[str] = set()  # sessions the remote itself forgot
        self.deleted: list[str] = []  # sessions ended by a DELETE
        self.expire_every_session = False  # True: forget each session as soon as a request uses it
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._session_ids = itertools.count(1)
        self._connections = itertools.count(1)
        self._streams: list[asyncio.Queue[bytes | None]] = []
        self.stream_opened = asyncio.Event()  # a GET event stream (standalone or legacy) is open
        self.arrived = asyncio.Event()  # set on every request (re-armed by `wait_for_request`)

    # --- lifecycle ---

    async def __aenter__(self) -> HostileRemote:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for queue in self._streams:
            queue.put_nowait(None)
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + self.path

    # --- scripting ---

    def on(self, http: str, rpc: str | None, handler: Handler, *, tool: str | None = None,
           times: int | None = None) -> None:
        """Answer (HTTP method, JSON-RPC method[, tool]) with `handler`, `times` times (None: always).

        The rule added last wins; when its `times` are used up the earlier rules and the defaults apply again.
        """
        self.rules.append(_Rule(http, rpc, tool, handler, times))

    def expire_sessions(self) -> None:
        """Forget every live session: requests carrying one get 404 from now on."""
        self.expired |= self.live
        self.live.clear()

    def push_stream(self, data: bytes) -> None:
        """Send raw bytes on every open GET event stream (standalone or legacy)."""
        for queue in self._streams:
            queue.put_nowait(data)

    def received(self, http: str | None = None, rpc: str | None = None) -> list[Received]:
        return [r for r in self.requests if (http is None or r.method == http) and (rpc is None or r.rpc_method == rpc)]

    async def wait_for_request(self, predicate: Callable[[Received], bool], timeout: float = 10.0) -> Received:
        """The first recorded request matching `predicate`, waiting for it if need be."""
        async def wait() -> Received:
            while True:
                for request in self.requests:
                    if predicate(request):
                        return request
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(wait(), timeout)

    # --- default behaviour: a small, correct MCP server ---

    def default(self, request: Received) -> Reply:
        if request.method == "DELETE":
            if request.session:
                self.live.discard(request.session)
                self.deleted.append(request.session)
            return Reply(200)
        if request.method == "GET":
            if self.get_stream:
                return Reply(200, [("Content-Type", "text/event-stream")], self._event_stream())
            return Reply(405, [("Allow", "POST, DELETE")])
        if request.method != "POST":
            return Reply(405)
        rpc = request.rpc
        if not isinstance(rpc, dict):
            return json_reply(rpc_error(None, -32700, "Parse error"), 400)
        method, request_id = rpc.get("method"), rpc.get("id")
        if method == "initialize":
            return self.initialize_reply(request)
        if method is None or "id" not in rpc:
            return Reply(202)  # a notification, or an answer to a server request
        if method == "tools/list":
            return json_reply(rpc_result(request_id, {"tools": [{
                "name": "echo", "description": "echo the text",
                "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}]}))
        if method == "tools/call":
            if request.tool != "echo":
                return json_reply(rpc_error(request_id, -32602, f"unknown tool {request.tool!r}"))
            arguments = request.params.get("arguments") or {}
            return json_reply(rpc_result(request_id, text_result(str(arguments.get("text", "")))))
        return json_reply(rpc_result(request_id, {}))  # ping, logging/setLevel, subscribe, anything else

    def initialize_reply(self, request: Received, *, version: str | None = None,
                         session_id: str | bytes | None = None) -> Reply:
        """The normal answer to `initialize` (a new session unless the remote is stateless)."""
        requested = request.params.get("protocolVersion")
        result = {"protocolVersion": version or (requested if isinstance(requested, str) else PROTOCOL_VERSION),
                  "capabilities": {"tools": {"listChanged": True}, "logging": {},
                                   "resources": {"subscribe": True}},
                  "serverInfo": {"name": "hostile", "version": "1"}}
        headers: HeaderList = []
        if self.sessions:
            if session_id is None:
                session_id = f"sess-{next(self._session_ids)}"
            if isinstance(session_id, str):
                self.issued.append(session_id)
                self.live.add(session_id)
            headers.append(("Mcp-Session-Id", session_id))
        return json_reply(rpc_result(request.rpc_id, result), headers=headers)

    async def _event_stream(self, first: bytes = b"") -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._streams.append(queue)
        self.stream_opened.set()
        try:
            if first:
                yield first
            else:
                yield b": stream open\n\n"
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            self._streams.remove(queue)

    # --- the wire ---

    async def _answer(self, request: Received) -> Reply:
        if self.legacy_sse:
            return await self._legacy(request)
        if self.sessions and request.method in ("POST", "GET", "DELETE") and request.rpc_method != "initialize":
            if request.session is not None and (self.expire_every_session or request.session not in self.live):
                if request.session in self.live:
                    self.live.discard(request.session)
                    self.expired.add(request.session)
                return Reply(404, [("Content-Type", "text/plain")], b"session not found")
        return await self._scripted(request)

    async def _scripted(self, request: Received) -> Reply:
        for rule in reversed(self.rules):
            if rule.matches(request):
                if rule.times is not None:
                    rule.times -= 1
                handler = rule.handler
                reply = handler if isinstance(handler, Reply) else handler(request)
                if inspect.isawaitable(reply):
                    reply = await reply
                return reply
        return self.default(request)

    async def _legacy(self, request: Received) -> Reply:
        if request.method == "GET" and not any(r.matches(request) for r in self.rules):
            endpoint = sse_event(self.endpoint_data, event="endpoint")
            return Reply(200, [("Content-Type", "text/event-stream")], self._event_stream(endpoint))
        if request.method == "POST" and request.target.split("?")[0] == self.path:
            return Reply(405)  # a legacy server has no POST on its SSE URL
        reply = await self._scripted(request)
        if request.method != "POST" or reply.raw is not None or reply.drop or not isinstance(reply.body, bytes):
            return reply
        if reply.status < 300 and reply.body:
            self.push_stream(sse_event(reply.body, event="message"))
            return Reply(202)
        return reply

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        connection = next(self._connections)
        try:
            while True:
                request = await self._read_request(reader, connection)
                if request is None:
                    return
                self.requests.append(request)
                self.arrived.set()
                reply = await self._answer(request)
                if not await self._write_reply(writer, reply):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(self, reader: asyncio.StreamReader, connection: int) -> Received | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Received(method, target, headers, body, connection)

    async def _write_reply(self, writer: asyncio.StreamWriter, reply: Reply) -> bool:
        """Write one answer; False when the connection must close afterwards."""
        if reply.drop:
            writer.transport.abort()
            return False
        if reply.raw is not None:
            writer.write(reply.raw)
            await writer.drain()
            return False
        head = f"HTTP/1.1 {reply.status} {reply.reason or _REASONS.get(reply.status, 'Whatever')}\r\n".encode()
        names = set()
        for name, value in reply.headers:
            name_b = name.encode("latin-1") if isinstance(name, str) else name
            value_b = value.encode("latin-1") if isinstance(value, str) else value
            names.add(name_b.lower())
            head += name_b + b": " + value_b + b"\r\n"
        streaming = reply.body is not None and not isinstance(reply.body, bytes)
        if streaming:
            head += b"Transfer-Encoding: chunked\r\n"
        elif b"content-length" not in names:
            head += b"Content-Length: " + str(len(reply.body or b"")).encode() + b"\r\n"
        if reply.close:
            head += b"Connection: close\r\n"
        writer.write(head + b"\r\n")
        if not streaming:
            if reply.body:
                writer.write(reply.body)
            await writer.drain()
            return not reply.close
        assert reply.body is not None and not isinstance(reply.body, bytes)
        try:
            async for chunk in reply.body:
                if chunk:
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                await reply.body.aclose()  # type: ignore[union-attr]
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return not reply.close


class FakeProxy:
    """Listens on 127.0.0.1 and records every connection it is offered (it never forwards anything)."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> FakeProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            self.seen.append(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            self.seen.append(b"<connection>")
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(Exception):
            await writer.drain()
            writer.close()
