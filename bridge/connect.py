"""Choosing the remote transport: Streamable HTTP, legacy HTTP+SSE, or detect (`ALLOY_TRANSPORT`).

In `auto` mode the bridge speaks Streamable HTTP and, if the desktop's
`initialize` POST is answered 404 or 405 (what a legacy HTTP+SSE server says
to a POST on its SSE URL), probes the URL as an SSE endpoint; when that
works, the session continues over SSE. If the probe fails too, the desktop
gets the original error (a 404 from Alloy means a wrong server id).
"""

from __future__ import annotations

import logging

import anyio
import anyio.abc

from bridge.contracts import Sink, Upstream
from bridge.errors import BridgeError
from bridge.http import RemoteHttp, RemoteRpcError
from bridge.inflight import Pending
from bridge.legacy_sse import LegacySseUpstream
from bridge.messages import Message
from bridge.upstream import StreamableHttpUpstream

logger = logging.getLogger("bridge.connect")


def make_upstream(transport: str, http: RemoteHttp, sink: Sink) -> Upstream:
    """The upstream for `ALLOY_TRANSPORT`."""
    if transport == "sse":
        return LegacySseUpstream(http, sink)
    return AutoUpstream(http, sink, allow_legacy_sse=(transport == "auto"))


class AutoUpstream:
    """Streamable HTTP; switches to legacy SSE, or to the 2026-07-28 adapter, when the remote needs it."""

    def __init__(self, http: RemoteHttp, sink: Sink, *, allow_legacy_sse: bool = True) -> None:
        self.http = http
        self.sink = sink
        self.allow_legacy_sse = allow_legacy_sse
        self.streamable = StreamableHttpUpstream(http, sink)
        self.streamable.fallback = self._fallback
        self.current: Upstream = self.streamable
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self.streamable.run)
            task_status.started()
            await anyio.sleep_forever()

    async def send(self, message: Message, pending: Pending | None) -> None:
        await self.current.send(message, pending)

    async def aclose(self) -> None:
        await self.current.aclose()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _fallback(self, pending: Pending, error: BridgeError | RemoteRpcError) -> bool:
        """The remote refused the desktop's `initialize`: hand the session to what it does speak, if anything."""
        if self.current is not self.streamable or self._tg is None:
            return False
        if isinstance(error, RemoteRpcError):
            return await self._try_modern(pending, error)
        return self.allow_legacy_sse and await self._try_legacy_sse(pending, error)

    async def _try_modern(self, pending: Pending, refusal: RemoteRpcError) -> bool:
        """-32022 naming only 2026-era versions: this remote needs the 2026-07-28 adapter."""
        from bridge.modern import MODERN_VERSION, ModernUpstream, modern_versions_offered

        if MODERN_VERSION not in modern_versions_offered(refusal):
            return False
        assert self._tg is not None
        modern = ModernUpstream(self.http, self.sink)
        await self._tg.start(modern.run)
        self.current = modern
        await modern.send(pending.message, pending)
        return True

    async def _try_legacy_sse(self, pending: Pending, error: BridgeError) -> bool:
        """`initialize` got 404/405: is this a legacy SSE endpoint? If so, continue there."""
        assert self._tg is not None
        legacy = LegacySseUpstream(self.http, self.sink)
        await self._tg.start(legacy.run)
        if not await legacy.probe():
            await legacy.aclose()
            return False
        logger.info("the remote speaks the legacy HTTP+SSE transport (POST answered %s); using it",
                    error.data.get("httpStatus"))
        self.current = legacy
        await legacy.send(pending.message, pending)
        return True
