"""The benchmark's remote: an SDK MCP server on 127.0.0.1 (Streamable HTTP) with `echo`, `big` and 60+ tools.

Run as a subprocess: `python -m bench.server --port 0 [--latency-ms 20]`; prints `PORT <n>`.
`GET /_bench/count` returns the HTTP requests seen per method since `POST /_bench/reset`.
"""

from __future__ import annotations

import argparse
import json
import socket
import warnings
from collections import Counter
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server import Server

FILLER_TOOLS = 64
_DESCRIPTION = ("Look up records in a connected business system and return the matching rows. "
                "Supports filtering, sorting and pagination.")


def build_server() -> Server:
    tools = [
        types.Tool(name="echo", description="Echo the text back.",
                   input_schema={"type": "object", "properties": {"text": {"type": "string"}}}),
        types.Tool(name="big", description="Return n_kb kilobytes of text.",
                   input_schema={"type": "object", "properties": {"n_kb": {"type": "integer"}}}),
    ]
    tools += [
        types.Tool(name=f"connector_{i:02d}_action", description=_DESCRIPTION, input_schema={
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to look for."},
                           "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                           "cursor": {"type": "string"}},
            "required": ["query"]})
        for i in range(FILLER_TOOLS)
    ]

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        args = params.arguments or {}
        if params.name == "big":
            text = "x" * (int(args.get("n_kb", 1)) * 1024)
        else:
            text = str(args.get("text", ""))
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Server("bench-remote", version="1.0", on_list_tools=list_tools, on_call_tool=call_tool)


class Meter:
    """Counts HTTP requests by method and adds latency to MCP POSTs."""

    def __init__(self, app: Any, latency: float) -> None:
        self.app = app
        self.latency = latency
        self.counts: Counter[str] = Counter()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/_bench/"):
            if scope["path"] == "/_bench/reset":
                self.counts.clear()
            body = json.dumps(dict(self.counts)).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http":
            self.counts[scope["method"]] += 1
            if self.latency and scope["method"] == "POST":
                await anyio.sleep(self.latency)
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    app = build_server().streamable_http_app(max_request_body_size=16 * 1024 * 1024)
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets created with it (proto 0 gets Nagle,
    # which with delayed ACKs stalls every reused keep-alive connection by 40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(256)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(Meter(app, args.latency_ms / 1000), log_level="error", lifespan="on",
                            timeout_graceful_shutdown=1)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
