"""Regressions from the review of the reorganised transports: each reproduced a defect, now fixed.

End to end through the bridge process against the scriptable hostile remote (tests/hostile_remote.py).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import API_KEY, SESSION_LOST
from tests.hostile_remote import HostileRemote, Reply, json_reply
from tests.test_hostile import _init_params, assert_error, desktop, echo_text, env_for, still_serving

pytestmark = pytest.mark.anyio


def _key_command(folder: Path) -> str:
    """A command printing a key on its first run and failing afterwards (a password manager gone locked)."""
    script = folder / "vault.py"
    script.write_text("import pathlib, sys\n"
                      f"count = pathlib.Path({str(folder / 'runs')!r})\n"
                      "n = int(count.read_text()) if count.exists() else 0\n"
                      "count.write_text(str(n + 1))\n"
                      "if n:\n    sys.stderr.write('vault locked\\n'); sys.exit(3)\n"
                      "print('ak_live_CMDSECRET_77')\n")
    return f"{sys.executable} {script}"


async def test_fields_outside_error_in_a_remote_error_are_redacted_too(tmp_path):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        def echo(req):
            body = {"jsonrpc": "2.0", "id": req.rpc_id, "error": {"code": -32000, "message": "nope"},
                    "debug": {"headers": {"authorization": req.headers.get("authorization")}}}
            return json_reply(body)
        remote.on("POST", "tools/call", echo, times=1)
        await d.call(5, "echo", text="x", timeout=8)
        assert await d.finish() == 0
    assert API_KEY not in bytes(d.stdout).decode(), "API key reached stdout"


async def test_a_cut_post_during_legacy_recovery_never_crashes_the_bridge(tmp_path):
    async with HostileRemote(legacy_sse=True, sessions=False) as remote, \
            desktop(tmp_path, env_for(remote.url, ALLOY_TRANSPORT="sse")) as d:
        assert "result" in await d.initialize()
        assert echo_text(await d.call(2, "echo", text="a")) == "a"
        # the replayed initialize's POST: 202 with a body cut short, then the connection closes
        remote.on("POST", "initialize", Reply(raw=b"HTTP/1.1 202 Accepted\r\nContent-Length: 50\r\n\r\nshort"))
        n = len(remote.requests)
        for q in list(remote._streams):   # end the event stream: the bridge recovers in the background
            q.put_nowait(None)
        await remote.wait_for_request(
            lambda r: r.method == "POST" and r.rpc_method == "initialize" and remote.requests.index(r) >= n)
        # the session could not be re-established: the documented answer, not a dead bridge
        assert_error(await d.request(3, "ping", timeout=8), SESSION_LOST)
        remote.rules.clear()  # the remote answers again: the desktop starts over, and the bridge serves it
        assert "result" in await d.initialize(request_id="init2")
        await still_serving(d)


async def test_legacy_requests_wait_for_the_replayed_handshake(tmp_path):
    async with HostileRemote(legacy_sse=True, sessions=False) as remote, \
            desktop(tmp_path, env_for(remote.url, ALLOY_TRANSPORT="sse")) as d:
        assert "result" in await d.initialize()
        assert echo_text(await d.call(2, "echo", text="a")) == "a"
        async def slow_init(req):
            await asyncio.sleep(1.0)
            return remote.initialize_reply(req)
        remote.on("POST", "initialize", slow_init)
        n = len(remote.requests)
        for q in list(remote._streams):
            q.put_nowait(None)
        await remote.wait_for_request(
            lambda r: r.method == "POST" and r.rpc_method == "initialize" and remote.requests.index(r) >= n)
        await d.call(3, "echo", text="b", timeout=8)
        order = [(r.method, r.rpc_method) for r in remote.requests[n:]]
        posts = [m for h, m in order if h == "POST"]
        assert posts.index("tools/call") > posts.index("notifications/initialized"), posts


async def test_a_delete_refused_by_a_failing_key_command_never_crashes_the_bridge(tmp_path):
    command = _key_command(tmp_path)
    async with HostileRemote() as remote, \
            desktop(tmp_path, env_for(remote.url, ALLOY_API_KEY=None, ALLOY_API_KEY_COMMAND=command)) as d:
        assert "result" in await d.initialize()
        assert echo_text(await d.call(2, "echo", text="a")) == "a"
        remote.on("DELETE", None, Reply(401))      # the key was revoked meanwhile
        # the desktop starts over: the bridge ends the old session in the background
        init2 = await d.request("init2", "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                                        "clientInfo": {"name": "x", "version": "1"}})
        assert "result" in init2, init2
        await remote.wait_for_request(lambda r: r.method == "DELETE")
        await still_serving(d)


async def test_a_null_id_error_is_redacted_before_it_is_shortened_in_the_log(tmp_path):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url)) as d:
        await d.initialize()
        prefix = "{'code': -32700, 'message': '"
        msg = "x" * (200 - len(prefix) - len("Bearer ") - len(API_KEY) + 1) + "Bearer " + API_KEY
        remote.on("POST", "tools/call", lambda r: json_reply({"jsonrpc": "2.0", "id": None,
                                                             "error": {"code": -32700, "message": msg}}, 200), times=1)
        await d.send_json({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                           "params": {"name": "echo", "arguments": {}}})
        await asyncio.sleep(1.5)
        await d.finish()
    line = [text for text in d.stderr.splitlines() if "without an id" in text][0]
    assert API_KEY[:-3] not in line


async def test_legacy_sse_restores_accepted_subscriptions_and_log_level(tmp_path):
    async with HostileRemote(legacy_sse=True, sessions=False) as remote, \
            desktop(tmp_path, env_for(remote.url, ALLOY_TRANSPORT="sse")) as d:
        assert "result" in await d.initialize()
        assert (await d.request(2, "resources/subscribe", {"uri": "memo://a"}))["result"] == {}
        assert (await d.request(3, "logging/setLevel", {"level": "debug"}))["result"] == {}
        n = len(remote.requests)
        for q in list(remote._streams):
            q.put_nowait(None)
        await asyncio.sleep(1.5)
        assert echo_text(await d.call(4, "echo", text="after", timeout=8)) == "after"
        await asyncio.sleep(0.5)
        replayed = [r.rpc_method for r in remote.requests[n:] if r.method == "POST"]
        assert "resources/subscribe" in replayed and "logging/setLevel" in replayed


async def test_a_failed_replay_never_poisons_the_session_the_desktop_opened_meanwhile(tmp_path):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url, ALLOY_READ_TIMEOUT="5")) as d:
        await d.initialize()
        assert echo_text(await d.call(2, "echo", text="a")) == "a"
        async def init(req):
            if str(req.rpc_id).startswith("alloy-mcp-bridge"):
                await asyncio.sleep(1.5)
                return Reply(500, [("Content-Type", "text/plain")], b"replay refused")
            return remote.initialize_reply(req)
        remote.on("POST", "initialize", init)
        remote.expire_sessions()
        await d.send_json({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                           "params": {"name": "echo", "arguments": {"text": "b"}}})
        await remote.wait_for_request(lambda r: str(r.rpc_id).startswith("alloy-mcp-bridge"))
        # the desktop starts over while the bridge's replay is still under way: its own session works
        answer = await d.request("init2", "initialize", _init_params(), timeout=8)
        assert "result" in answer
        await d.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        await asyncio.sleep(2.5)  # the replay has failed by now
        fresh = await d.call(4, "echo", text="on the desktop's new session", timeout=15)
        assert "result" in fresh


async def drip():
    for _ in range(15):
        yield b" "
        await asyncio.sleep(2)

async def test_a_slow_oauth_probe_is_bounded(tmp_path):
    async with HostileRemote() as remote, desktop(tmp_path, env_for(remote.url, ALLOY_API_KEY=None, ALLOY_USER_ID=None,
                                                                     ALLOY_READ_TIMEOUT="3")) as d:
        remote.on("POST", "initialize", Reply(401, [("Content-Type", "text/plain")], b"no"))
        remote.on("GET", None, lambda r: Reply(200, [("Content-Type", "application/json")], drip())
                  if r.target.startswith("/.well-known") else remote.default(r))
        t = time.monotonic()
        await d.request("init", "initialize", _init_params(), timeout=80)
        assert time.monotonic() - t < 10

