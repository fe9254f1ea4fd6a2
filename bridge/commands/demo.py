"""`alloy-mcp-bridge demo`: a self-contained round trip, no account or network needed.

It starts a small MCP server of its own on 127.0.0.1 that checks Alloy-style
authentication (`Authorization: Bearer <key>` plus `x-alloy-userid` on
`/mcp/{serverId}`), launches the bridge as a subprocess against it through the
SDK's real stdio client — exactly as Claude Desktop would — lists the tools,
calls two of them, and prints what happened.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
import time
from typing import Any

import anyio

DEMO_SERVER_ID = "demo-server"


def _build_app(api_key: str, user_id: str, seen: list[dict[str, str]]) -> Any:
    """The demo remote: an SDK MCPServer behind an Alloy-style auth check."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("alloy-demo", instructions="A demo remote for alloy-mcp-bridge.", log_level="WARNING")

    @server.tool(description="Add two numbers.")
    def add(a: float, b: float) -> float:
        return a + b

    @server.tool(description="Echo a message back, upper-cased.")
    def shout(message: str) -> str:
        return message.upper() + "!"

    app = server.streamable_http_app(streamable_http_path="/mcp")
    expected_path = f"/mcp/{DEMO_SERVER_ID}"

    async def gate(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            problem = None
            if scope["path"] != expected_path:
                problem = (404, b'{"error":"Server not found"}')
            elif headers.get("authorization") != f"Bearer {api_key}" or headers.get("x-alloy-userid") != user_id:
                problem = (401, b'{"error":"Invalid API key or user id"}')
            seen.append({"method": scope["method"], "status": str(problem[0] if problem else "ok")})
            if problem is not None:
                await send({"type": "http.response.start", "status": problem[0],
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": problem[1]})
                return
            scope = dict(scope, path="/mcp", raw_path=b"/mcp")
        await app(scope, receive, send)

    return gate


async def _round_trip() -> int:
    import uvicorn
    from mcp import Client, StdioServerParameters

    api_key = "demo_" + secrets.token_hex(12)
    user_id = "demo-user"
    seen: list[dict[str, str]] = []
    # IPPROTO_TCP explicitly, so asyncio sets TCP_NODELAY on accepted connections (no 40 ms Nagle stalls).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp/{DEMO_SERVER_ID}"
    config = uvicorn.Config(_build_app(api_key, user_id, seen), log_level="error", lifespan="on")
    server = uvicorn.Server(config)

    print(f"1. Demo MCP server listening on {url}")
    print("   (it requires Authorization: Bearer <key> and x-alloy-userid, like Alloy)")
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        while not server.started:
            await anyio.sleep(0.01)
        env = {"ALLOY_MCP_URL": url, "ALLOY_API_KEY": api_key, "ALLOY_USER_ID": user_id, "ALLOY_LOG_LEVEL": "warning"}
        params = StdioServerParameters(command=sys.executable, args=["-m", "bridge"], env=env)
        print(f"2. Launching the bridge over stdio: {sys.executable} -m bridge (ALLOY_MCP_URL, ALLOY_API_KEY, "
              "ALLOY_USER_ID set)")
        try:
            started = time.perf_counter()
            async with Client(params) as client:
                connected = time.perf_counter()
                info = client.server_info
                print(f"3. Connected in {(connected - started) * 1000:.0f} ms to {info.name if info else '?'} "
                      f"(protocol {client.protocol_version})")
                tools = await client.list_tools()
                print(f"4. tools/list -> {', '.join(t.name for t in tools.tools)}")
                added = await client.call_tool("add", {"a": 2, "b": 40})
                shouted = await client.call_tool("shout", {"message": "hello from the bridge"})
                print(f"5. tools/call add(2, 40) -> {_text(added)}")
                print(f"   tools/call shout('hello from the bridge') -> {_text(shouted)}")
        except Exception as exc:  # noqa: BLE001 - the demo reports any failure in one line
            print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            tg.cancel_scope.cancel()
            return 1
        finally:
            server.should_exit = True
    authorized = sum(1 for r in seen if r["status"] == "ok")
    rejected = len(seen) - authorized
    print(f"6. The server saw {len(seen)} HTTP requests from the bridge, {authorized} authorized, {rejected} rejected.")
    ok = _text(added) in ("42", "42.0") and _text(shouted) == "HELLO FROM THE BRIDGE!" and rejected == 0
    print("Round trip OK: the bridge relayed stdio to HTTP and injected the credentials." if ok
          else "Round trip FAILED: unexpected results.")
    return 0 if ok else 1


def _text(result: Any) -> str:
    parts = [getattr(block, "text", "") for block in getattr(result, "content", [])]
    return " ".join(p for p in parts if p)


def main(args: argparse.Namespace) -> int:
    """`alloy-mcp-bridge demo`."""
    return run_demo()


def run_demo() -> int:
    """Run the demo; exit code 0 when the round trip worked."""
    os.environ.pop("ALLOY_MCP_URL", None)
    return anyio.run(_round_trip)
