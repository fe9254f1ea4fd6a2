"""Choosing the remote transport: Streamable HTTP, legacy HTTP+SSE, or detect (`ALLOY_TRANSPORT`).

In `auto` mode the bridge speaks Streamable HTTP. If the desktop's first
`initialize` is refused, the remote may speak something else:

- answered 404 or 405 (what a legacy HTTP+SSE server says to a POST on its SSE
  URL): the URL is probed as an SSE endpoint, and when that works the session
  continues over legacy SSE. If the probe fails too (promptly: a 404 to the GET
  ends it), the desktop gets the original error — a 404 from Alloy means a
  wrong server id;
- refused with -32022 naming only 2026-era protocol versions: the session
  continues through the stateless (2026-07-28) adapter.

Messages the desktop sends while that first `initialize` is undecided are held
here and handed to whichever transport wins, in order.
"""

from __future__ import annotations

import logging

import anyio
import anyio.abc

from bridge.errors import RemoteFailure, RemoteRpcError
from bridge.http import RemoteHttp
from bridge.inflight import Pending
from bridge.messages import Message
from bridge.transports.base import Sink, Upstream
from bridge.transports.legacy_sse import LegacySseUpstream
from bridge.transports.streamable_http import StreamableHttpUpstream

logger = logging.getLogger(__name__)


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
        self.streamable = StreamableHttpUpstream(http, sink, on_refused_initialize=self._fallback,
                                                 on_initialize_settled=self._settled)
        self.current: Upstream = self.streamable
        self._held: list[tuple[Message, Pending | None]] | None = None
        self._decided = False
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self.streamable.run)
            task_status.started()
            await anyio.sleep_forever()

    @property
    def transport_name(self) -> str:
        return str(getattr(self.current, "transport_name", "unknown"))

    def send(self, message: Message, pending: Pending | None) -> None:
        if self._held is not None:
            self._held.append((message, pending))
            return
        if not self._decided and pending is not None and pending.method == "initialize":
            self._held = []  # until this initialize settles, nobody knows which transport the rest goes to
        self.current.send(message, pending)

    def _settled(self) -> None:
        """The first `initialize` ended (answered, failed or handed over): release what was held, in order."""
        if self._decided:
            return
        self._decided = True
        held, self._held = self._held or [], None
        for message, pending in held:
            self.current.send(message, pending)

    async def aclose(self) -> None:
        await self.current.aclose()
        if self.current is not self.streamable:
            await self.streamable.aclose()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _fallback(self, pending: Pending, refusal: RemoteFailure) -> bool:
        """The remote refused the desktop's `initialize`: hand the session to what it does speak, if anything."""
        if self.current is not self.streamable or self._tg is None or self._decided:
            return False
        if isinstance(refusal, RemoteRpcError):
            return await self._try_stateless(pending, refusal)
        return self.allow_legacy_sse and await self._try_legacy_sse(pending, refusal)

    async def _try_stateless(self, pending: Pending, refusal: RemoteRpcError) -> bool:
        """-32022 naming only 2026-era versions: this remote needs the 2026-07-28 adapter."""
        from bridge.transports.modern_wire import MODERN_VERSION, modern_versions_offered
        from bridge.transports.stateless import StatelessUpstream

        if MODERN_VERSION not in modern_versions_offered(refusal):
            return False
        assert self._tg is not None
        stateless = StatelessUpstream(self.http, self.sink)
        await self._tg.start(stateless.run)
        self.current = stateless
        stateless.send(pending.message, pending)
        return True

    async def _try_legacy_sse(self, pending: Pending, refusal: RemoteFailure) -> bool:
        """`initialize` got 404/405: is this a legacy SSE endpoint? If so, continue there."""
        assert self._tg is not None
        legacy = LegacySseUpstream(self.http, self.sink)
        await self._tg.start(legacy.run)
        if not await legacy.probe():
            await legacy.aclose()
            return False
        logger.info("the remote speaks the legacy HTTP+SSE transport (POST answered %s); using it",
                    getattr(refusal, "http_status", None))
        self.current = legacy
        legacy.send(pending.message, pending)
        return True
