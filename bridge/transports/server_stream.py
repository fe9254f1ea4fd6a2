"""The server-to-client GET stream of a Streamable HTTP session, kept open for the life of the session.

Opened once the desktop's `notifications/initialized` is on the wire (requests wait for it up to a
second, so a request the remote makes during the desktop's first call has a stream to arrive on);
re-opened with backoff, and with `Last-Event-ID` within one session, whenever it drops; re-opened at once
on a new session. A remote without one (GET answered 404/405, or not an event stream) is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import httpx2

from bridge.errors import BridgeError, RemoteRpcError, SessionExpired
from bridge.retry import Backoff
from bridge.transports.responses import LAST_EVENT_ID, media_type

if TYPE_CHECKING:
    from bridge.transports.streamable_http import StreamableHttpUpstream

logger = logging.getLogger(__name__)

OPEN_WAIT = 1.0  # seconds requests after `notifications/initialized` wait for the stream to open


class ServerStream:
    """The GET stream of one `StreamableHttpUpstream` (its session id, generation, gate and re-opening)."""

    def __init__(self, session: StreamableHttpUpstream) -> None:
        self._session = session
        self._scope: anyio.CancelScope | None = None
        self._running = False

    def start(self, opened: Callable[[], None] | None = None, after: int | None = None) -> None:
        """Open the stream unless it is open; `opened` is called once it is (or cannot be).

        `after`: the gate hold the stream must not wait for (the one waiting for it).
        """
        session = self._session
        if self._running or session.closed or not session.session_id or not session.can_spawn:
            if opened is not None:
                opened()
            return
        self._running = True
        session.spawn(self._keep_open, opened, after)

    def reopen(self, *, start: bool) -> None:
        """The session changed: re-open a running stream at once (on the new session), or `start` one."""
        if self._scope is not None:
            self._scope.cancel()
        elif start:
            self.start()

    async def hold_back_at_most(self, hold: int) -> None:
        """A stream that is slow to open holds the desktop's requests back for a second at most."""
        await anyio.sleep(min(self._session.http.connect_timeout, OPEN_WAIT))
        self._session.gate.release(hold)

    async def _keep_open(self, opened: Callable[[], None] | None = None, after: int | None = None) -> None:
        session = self._session
        backoff = Backoff()
        expiries = 0
        last_event_id: str | None = None
        generation = session.generation
        try:
            while not session.closed:
                await session.gate.wait(after)
                after = None
                if not session.session_id:
                    return
                if generation != session.generation:
                    generation, last_event_id = session.generation, None
                headers = session.headers()
                headers["accept"] = "text/event-stream"
                if last_event_id:
                    headers[LAST_EVENT_ID] = last_event_id
                try:
                    with anyio.CancelScope() as scope:
                        self._scope = scope
                        async with session.http.open(
                            "GET", headers=headers, timeout=session.http.quiet_stream_timeout
                        ) as response:
                            if opened is not None:
                                opened()
                                opened = None
                            if media_type(response) != "text/event-stream":
                                logger.info("the remote offers no server-to-client stream (GET answered %s)",
                                            response.status_code)
                                return
                            logger.debug("server-to-client stream open")
                            backoff.reset()
                            expiries = 0
                            outcome = await session.reader.follow_events(response, None)
                            last_event_id = outcome.last_event_id or last_event_id
                            if outcome.error is not None and not isinstance(outcome.error, httpx2.ReadTimeout):
                                logger.info("server-to-client stream dropped (%s); re-opening",
                                            type(outcome.error).__name__)
                    if scope.cancelled_caught:
                        continue
                except SessionExpired:
                    await session.reinitialize(generation, session.epoch)
                    expiries += 1
                    if expiries < 2:
                        continue  # once is an ordinary expiry; again and again means back off
                except RemoteRpcError as refused:
                    if refused.http_status in (404, 405):
                        logger.info("the remote offers no server-to-client stream (%s)", refused.reason)
                        return
                    logger.info("server-to-client stream refused: %s", refused.reason)
                except BridgeError as error:
                    if error.http_status == 405:
                        logger.info("the remote offers no server-to-client stream (GET not allowed)")
                        return
                    logger.info("server-to-client stream unavailable: %s", error.message)
                except Exception:  # the stream must never take the bridge down
                    logger.exception("server-to-client stream failed; re-opening")
                if opened is not None:
                    opened()
                    opened = None
                await anyio.sleep(backoff.next_delay())
        finally:
            if opened is not None:
                opened()
            self._running = False
            self._scope = None
