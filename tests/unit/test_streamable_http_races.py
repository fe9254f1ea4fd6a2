"""Streamable HTTP upstream races, driven in memory (httpx2's MockTransport as the remote)."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from bridge.messages import build_notification
from bridge.transports.streamable_http import StreamableHttpUpstream
from tests.helpers import MemorySink, memory_http

pytestmark = pytest.mark.anyio

INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


class MemoryRemote:
    """A scriptable Streamable HTTP remote: sessions, gates on methods, a log of what arrived."""

    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.ids = itertools.count(1)
        self.log: list[tuple[str, str | None, str | None]] = []  # (http method, rpc method, session)
        self.gates: dict[str, anyio.Event] = {}
        self.refuse: set[str] = set()
        self.version = "2025-11-25"

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        session = request.headers.get("mcp-session-id")
        if request.method != "POST":
            self.log.append((request.method, None, session))
            if request.method == "DELETE":
                self.sessions.discard(session or "")
                return httpx2.Response(200)
            return httpx2.Response(405)
        body = json.loads(request.content)
        method = body.get("method")
        self.log.append(("POST", method, session))
        gate = self.gates.get(method)
        if gate is not None:
            await gate.wait()
        if method == "initialize":
            new = f"s{next(self.ids)}"
            self.sessions.add(new)
            return httpx2.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": {
                "protocolVersion": self.version, "capabilities": {}, "serverInfo": {"name": "m", "version": "1"}}},
                headers={"mcp-session-id": new})
        if session not in self.sessions:
            return httpx2.Response(404)
        if "id" not in body:
            return httpx2.Response(202)
        if method in self.refuse:
            return httpx2.Response(200, json={"jsonrpc": "2.0", "id": body["id"],
                                              "error": {"code": -32601, "message": "Method not found"}})
        return httpx2.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": {"echo": method}})

    def posted(self, method: str) -> list[tuple[str, str | None, str | None]]:
        return [entry for entry in self.log if entry[1] == method]


@contextlib.asynccontextmanager
async def initialized_upstream(remote: MemoryRemote, *, initialized: bool = True,
                               **settings: Any) -> AsyncIterator[tuple[StreamableHttpUpstream, MemorySink]]:
    """An upstream to `remote` whose desktop `initialize` (id "i") was answered, then (optionally) initialized."""
    sink = MemorySink()
    async with memory_http(remote, **settings) as http, anyio.create_task_group() as tg:
        upstream = StreamableHttpUpstream(http, sink)
        await tg.start(upstream.run)
        try:
            sink.ask(upstream, "i", "initialize", INIT)
            await sink.wait_answered("i")
            if initialized:
                upstream.send(build_notification("notifications/initialized"), None)
            yield upstream, sink
        finally:
            await upstream.aclose()


async def test_a_desktop_initialize_during_a_reinitialization_strands_no_request():
    remote = MemoryRemote()
    async with initialized_upstream(remote) as (upstream, sink):
        remote.sessions.clear()  # every session expires
        remote.gates["initialize"] = anyio.Event()  # the replayed initialize hangs for a moment
        sink.ask(upstream, 1, "tools/list")  # 404 -> re-initialization, held at the remote
        with anyio.fail_after(2):
            while len(remote.posted("initialize")) < 2:
                await anyio.sleep(0.01)
        sink.ask(upstream, "i2", "initialize", INIT)  # the desktop starts over meanwhile
        sink.ask(upstream, 2, "tools/list")
        remote.gates.pop("initialize").set()
        answers = await sink.wait_answered(1, "i2", 2)
        assert all(getattr(a, "kind", None) is not None and a.is_answer for a in answers), answers


async def test_a_held_notification_does_not_hold_later_requests():
    remote = MemoryRemote()
    async with initialized_upstream(remote) as (upstream, sink):
        remote.gates["notifications/roots/list_changed"] = anyio.Event()
        upstream.send(build_notification("notifications/roots/list_changed"), None)
        sink.ask(upstream, 1, "ping")
        (answer,) = await sink.wait_answered(1, timeout=2)
        assert answer.is_answer
        remote.gates.pop("notifications/roots/list_changed").set()


async def test_requests_after_initialized_reach_the_remote_after_it():
    remote = MemoryRemote()
    sink = MemorySink()
    async with memory_http(remote) as http, anyio.create_task_group() as tg:
        upstream = StreamableHttpUpstream(http, sink)
        await tg.start(upstream.run)
        sink.ask(upstream, "i", "initialize", INIT)
        remote.gates["notifications/initialized"] = anyio.Event()
        upstream.send(build_notification("notifications/initialized"), None)
        sink.ask(upstream, 1, "tools/list")
        await anyio.sleep(0.1)
        assert not remote.posted("tools/list")
        remote.gates.pop("notifications/initialized").set()
        await sink.wait_answered(1)
        methods = [m for _, m, _ in remote.log if m in ("notifications/initialized", "tools/list")]
        assert methods == ["notifications/initialized", "tools/list"]
        await upstream.aclose()


async def test_a_setting_the_remote_refused_is_not_replayed_and_the_session_survives_expiry():
    remote = MemoryRemote()
    remote.refuse.add("logging/setLevel")
    async with initialized_upstream(remote) as (upstream, sink):
        sink.ask(upstream, 1, "logging/setLevel", {"level": "debug"})
        await sink.wait_answered(1)
        remote.sessions.clear()
        sink.ask(upstream, 2, "tools/list")
        (answer,) = await sink.wait_answered(2)
        assert answer.is_answer and answer.result == {"echo": "tools/list"}
        assert len(remote.posted("logging/setLevel")) == 1  # never replayed
        assert len(remote.posted("initialize")) == 2


async def test_a_replay_that_negotiates_another_version_is_a_lost_session_and_is_deleted():
    remote = MemoryRemote()
    async with initialized_upstream(remote, initialized=False) as (upstream, sink):
        remote.sessions.clear()
        remote.version = "2025-03-26"
        sink.ask(upstream, 1, "tools/list")
        (failure,) = await sink.wait_answered(1)
        assert failure.error_object()["code"] == -32061
        assert "2025-03-26" in failure.error_object()["message"]
        with anyio.fail_after(2):
            while not any(m == "DELETE" for m, _, _ in remote.log):
                await anyio.sleep(0.01)


async def test_a_remote_that_keeps_losing_sessions_is_not_flooded_with_new_ones():
    remote = MemoryRemote()
    async with initialized_upstream(remote, read_timeout=5, initialized=False) as (upstream, sink):
        with anyio.move_on_after(1.5):
            for _ in range(200):
                remote.sessions.clear()
                upstream.send(build_notification("notifications/roots/list_changed"), None)
                await anyio.sleep(0.005)
        assert 2 <= len(remote.posted("initialize")) <= 6, len(remote.posted("initialize"))


async def test_the_first_request_after_initialized_waits_for_the_get_stream_not_for_a_timer():
    """Requests after `notifications/initialized` wait until the GET stream answered (here: 405), not a second."""
    remote = MemoryRemote()
    async with initialized_upstream(remote) as (upstream, sink):
        sink.ask(upstream, 1, "tools/list")
        await sink.wait_answered(1, timeout=0.8)  # the fallback timer is 1 s: this passes only on the GET's answer
        order = [(m, rpc) for m, rpc, _ in remote.log if m == "GET" or rpc == "tools/list"]
        assert order == [("GET", None), ("POST", "tools/list")]
