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

from bridge.errors import BridgeError
from bridge.http import RemoteHttp, RemoteRpcError
from bridge.inflight import Pending
from bridge.legacy_sse import LegacySseUpstream
from bridge.messages import Message
from bridge.upstream import Sink, StreamableHttpUpstream, Upstream

logger = logging.getLogger("bridge.connect")


def make_upstream(transport: str, http: RemoteHttp, sink: Sink) -> Upstream:
    """The upstream for `ALLOY_TRANSPORT`."""
    if transport == "sse":
        return LegacySseUpstream(http, sink)
    if transport == "streamable-http":
        return StreamableHttpUpstream(http, sink)
    return AutoUpstream(http, sink)


class AutoUpstream:
    """Streamable HTTP, switching to legacy SSE when the remote turns out to be one."""

    def __init__(self, http: RemoteHttp, sink: Sink) -> None:
        self.http = http
        self.sink = sink
        self.streamable = StreamableHttpUpstream(http, sink)
        self.streamable.fallback = self._try_legacy_sse
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

    async def _try_legacy_sse(self, pending: Pending, error: BridgeError | RemoteRpcError) -> bool:
        """Called when `initialize` got 404/405: is this a legacy SSE endpoint? If so, continue there."""
        if self.current is not self.streamable or self._tg is None or isinstance(error, RemoteRpcError):
            return False
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
