"""Legacy HTTP+SSE (the 2024-11-05 transport): one event stream that carries every answer.

The client GETs the endpoint and keeps the event stream open; the server's
first event (`endpoint`) names the URL to POST messages to (same origin only),
and every message from the server — answers included — arrives on that one
stream. A POST is answered 202 Accepted.

The stream is the session: when it drops, the bridge reconnects (with
backoff), replays the desktop's `initialize` under a bridge-owned id and then
what the remote had accepted, and each request whose answer was lost with the
stream is resent if it is safe to repeat, or fails with "outcome unknown".
A request the remote accepted but never answers fails after
`ALLOY_READ_TIMEOUT` without progress.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio
import httpx2

from bridge.errors import BridgeError, BridgeErrorCode, RemoteFailure, RemoteRpcError, bad_response
from bridge.http import RemoteHttp
from bridge.inflight import Pending
from bridge.messages import Kind, Message, RequestId, build_notification, valid_id
from bridge.retry import SESSION_RESENDS, Backoff
from bridge.transports.base import Sink, TaskHost
from bridge.transports.event_stream import EventTooLarge, iter_events
from bridge.transports.replies import Replies, result_of
from bridge.transports.responses import media_type, parse_remote
from bridge.transports.session import Gate, SessionState

logger = logging.getLogger(__name__)

_POST_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


class _Stream:
    """One connection of the event stream: its POST URL once known, and how it ended."""

    def __init__(self) -> None:
        self.post_url: str | None = None
        self.settled = anyio.Event()  # the endpoint arrived, or the stream ended first
        self.ended = False
        self.failure: RemoteFailure | None = None
        self.scope = anyio.CancelScope()

    @property
    def usable(self) -> bool:
        return self.post_url is not None and not self.ended


class _Waiter:
    """A desktop request whose answer is awaited on the event stream."""

    __slots__ = ("pending", "stream", "done", "answered", "deadline")

    def __init__(self, pending: Pending, stream: _Stream, deadline: float) -> None:
        self.pending = pending
        self.stream = stream
        self.done = anyio.Event()
        self.answered = False
        self.deadline = deadline


class LegacySseUpstream(TaskHost):
    """A legacy HTTP+SSE MCP session to the remote (see module docstring)."""

    transport_name = "sse"

    def __init__(self, http: RemoteHttp, sink: Sink) -> None:
        self.http = http
        self.sink = sink
        self.state = SessionState()
        self.gate = Gate()
        self._stream: _Stream | None = None
        self._connect_lock = anyio.Lock()
        self._recover_lock = anyio.Lock()
        self._recovered_stream: _Stream | None = None
        self._own = Replies("sse")
        self._waiting: dict[RequestId, _Waiter] = {}
        self._progress: dict[Any, _Waiter] = {}

    async def aclose(self) -> None:
        """Legacy SSE has no session to end: closing the event stream is enough."""
        self.stop_tasks()

    async def probe(self) -> bool:
        """Open the event stream and wait for its `endpoint` event; False (promptly) if this is not an SSE endpoint."""
        try:
            await self._connect()
        except RemoteFailure as failure:
            logger.debug("legacy SSE probe failed: %s", failure.reason)
            return False
        return True

    # --- the event stream ------------------------------------------------------------------

    async def _connect(self) -> _Stream:
        """The open stream, opening one if needed; raises why it could not be opened."""
        async with self._connect_lock:
            if self._stream is not None and self._stream.usable:
                return self._stream
            stream = self._stream = _Stream()
            self.spawn(self._read_stream, stream)
            with anyio.move_on_after(self.http.connect_timeout + self.http.read_timeout):
                await stream.settled.wait()
            if stream.usable:
                return stream
            stream.ended = True
            raise stream.failure or bad_response(
                f"{self.http.endpoint.display_url} opened an event stream but never sent its endpoint event.")

    def _abandon(self, stream: _Stream) -> None:
        """Give up a stream whose session the remote no longer honours: its waiters hear it at once."""
        if stream.ended:
            return
        stream.ended = True
        stream.scope.cancel()
        for waiter in list(self._waiting.values()):
            if waiter.stream is stream:
                waiter.done.set()
        if self.state.initialized and not self._closed:
            self.spawn(self._recover, stream)

    async def _read_stream(self, stream: _Stream) -> None:
        with stream.scope:
            await self._follow_stream(stream)

    async def _follow_stream(self, stream: _Stream) -> None:
        try:
            async with self.http.open("GET", headers={"accept": "text/event-stream"},
                                      timeout=self.http.quiet_stream_timeout) as response:
                content_type = media_type(response)
                if content_type != "text/event-stream":
                    raise bad_response(f"{self.http.endpoint.display_url} is not an SSE endpoint "
                                       f"(content type {content_type!r}).")
                async for event in iter_events(response.aiter_bytes(), self.http.max_message_bytes):
                    if event.event == "endpoint":
                        self._set_endpoint(stream, event.data)
                    elif event.event == "message" and event.data:
                        for message in parse_remote(event.data):
                            await self._on_message(message)
        except RemoteRpcError as refused:
            stream.failure = bad_response(f"The SSE endpoint refused the stream: {refused.reason}",
                                          http_status=refused.http_status)
        except RemoteFailure as failure:
            stream.failure = failure
        except EventTooLarge:
            stream.failure = self.http.too_large()
        except Exception as exc:  # noqa: BLE001 - a broken stream must end as a lost stream, never a crash
            stream.failure = self.http.lost(exc, None)
        finally:
            was_usable = stream.usable
            stream.ended = True
            stream.settled.set()
            for waiter in list(self._waiting.values()):
                if waiter.stream is stream:
                    waiter.done.set()
            if was_usable and not self._closed:
                logger.info("legacy SSE stream ended (%s)", stream.failure.reason if stream.failure else "closed")
                if self.state.initialized:
                    self.spawn(self._recover, stream)

    def _set_endpoint(self, stream: _Stream, data: bytes) -> None:
        try:
            target = urljoin(self.http.url, data.decode("utf-8").strip())
            here, there = urlsplit(self.http.url), urlsplit(target)
            same_origin = (here.scheme, here.netloc) == (there.scheme, there.netloc)
        except (ValueError, UnicodeDecodeError):
            stream.failure = bad_response("The remote's SSE endpoint event is not a valid URL.")
            stream.settled.set()
            return
        if not same_origin:
            logger.error("the legacy SSE endpoint event points at another origin; refusing it")
            stream.failure = bad_response("The remote's SSE endpoint event points at another origin; refused.")
            stream.settled.set()
            return
        stream.post_url = target
        stream.settled.set()

    async def _on_message(self, message: Message) -> None:
        if message.is_answer:
            if self._own.resolve(message):
                return
            waiter = self._waiting.pop(message.id, None) if message.id is not None else None
            if waiter is not None:
                waiter.answered = True
                waiter.done.set()
                self.state.confirm(waiter.pending, message)  # what the remote accepted is replayed later
        elif message.kind is Kind.NOTIFICATION and message.method == "notifications/progress" and self._progress:
            token = message.params.get("progressToken")
            waiter = self._progress.get(token) if valid_id(token) else None
            if waiter is not None:
                waiter.deadline = anyio.current_time() + self.http.read_timeout
        await self.sink.deliver(message)

    # --- the desktop's messages ------------------------------------------------------------

    def send(self, message: Message, pending: Pending | None) -> None:
        self.state.remember(message)
        ticket = self.gate.ticket()
        if pending is not None:
            hold = self.gate.hold() if pending.method == "initialize" else None
            self.spawn_request(pending, self._request, ticket, hold)
            return
        hold = self.gate.hold() if message.method == "notifications/initialized" else None
        self.spawn_one_way(message, self._send_one_way, ticket, hold)

    async def _request(self, pending: Pending, ticket: int, hold: int | None) -> None:
        try:
            await self.gate.wait(ticket)
            drops = self.http.policy.start()
            while True:
                stream = await self._session()
                waiter = self._waiting[pending.id] = _Waiter(pending, stream,
                                                             anyio.current_time() + self.http.read_timeout)
                token = _progress_token(pending.message)
                if token is not None:
                    self._progress[token] = waiter
                try:
                    if not await self._post(stream, pending.message):  # the remote forgot the session: not run
                        if pending.resent >= SESSION_RESENDS:
                            raise BridgeError(BridgeErrorCode.SESSION_LOST,
                                              f"The remote keeps refusing {pending.method} for an unknown session "
                                              "(HTTP 404), even a new one; it did not run.", http_status=404)
                        pending.resent += 1
                        continue
                    outcome = await self._await_answer(waiter)
                finally:
                    if self._waiting.get(pending.id) is waiter:
                        del self._waiting[pending.id]
                    if token is not None and self._progress.get(token) is waiter:
                        del self._progress[token]
                if outcome == "answered":
                    return
                if outcome == "timeout":
                    raise self.http.lost(TimeoutError(), pending.method)
                if not await self.http.wait_to_resend(drops, pending.method, still_wanted=self.sink.is_open(pending)):
                    raise self.http.lost(_STREAM_DROPPED, pending.method)
        finally:
            self.state.forget(pending)
            if hold is not None:
                self.gate.release(hold)

    async def _await_answer(self, waiter: _Waiter) -> str:
        """'answered', 'lost' (the stream ended first) or 'timeout' (no progress for the read timeout)."""
        while True:
            with anyio.move_on_after(max(0.0, waiter.deadline - anyio.current_time())):
                await waiter.done.wait()
            if waiter.answered:
                return "answered"
            if waiter.done.is_set():
                return "lost"
            if anyio.current_time() >= waiter.deadline:
                return "timeout"

    async def _send_one_way(self, message: Message, ticket: int, hold: int | None) -> None:
        try:
            await self.gate.wait(ticket)
            stream = await self._session()
            if not await self._post(stream, message):  # the remote forgot the session: it did not run
                await self._post(await self._session(), message)
        finally:
            if hold is not None:
                self.gate.release(hold)

    async def _session(self) -> _Stream:
        """A usable stream with the session restored; waits (bounded) for a recovery in progress."""
        stream = self._stream
        recovering = self._recover_lock.locked()
        if stream is not None and stream.usable and not recovering:
            return stream
        if stream is None or not self.state.initialized:
            return await self._connect()
        # A stream open while its session is being restored: wait for that recovery; else start one.
        lost = None if recovering and stream.usable else stream
        with anyio.move_on_after(self.http.read_timeout):
            return await self._recover(lost)
        raise BridgeError(
            BridgeErrorCode.SESSION_LOST,
            "The remote's event stream dropped and could not be re-opened in time; the bridge keeps trying.",
        )

    async def _post(self, stream: _Stream, message: Message) -> bool:
        """POST one message; False when the remote no longer knows the stream's session (404)."""
        assert stream.post_url is not None
        try:
            async with self.http.open("POST", url=stream.post_url, body=message.raw, headers=_POST_HEADERS,
                                      rpc_method=message.method) as response:
                try:
                    await response.aread()
                except httpx2.HTTPError as exc:  # the POST was taken; its (empty) body was cut
                    raise self.http.lost(exc, message.method) from None
        except BridgeError as error:
            if error.http_status == 404:
                logger.info("the remote forgot the event stream's session (HTTP 404); reconnecting")
                self._abandon(stream)
                return False
            raise
        return True

    # --- recovery ----------------------------------------------------------------------------

    async def _recover(self, lost: _Stream | None) -> _Stream:
        """Reconnect and restore the session after `lost` ended (None: wait for the recovery under way);
        one recovery at a time, shared by all."""
        async with self._recover_lock:
            current = self._recovered_stream
            if current is not None and current is not lost and current.usable:
                return current
            return await self._recover_now()

    async def _recover_now(self) -> _Stream:
        backoff = Backoff()
        while not self._closed:
            try:
                stream = await self._connect()
                if self.state.init_params is not None:
                    await self._replay(stream, self.state.init_params)
                logger.info("legacy SSE session restored; %s", self.state.describe())
                self._recovered_stream = stream
                return stream
            except RemoteFailure as failure:
                delay = backoff.next_delay()
                logger.info("legacy SSE reconnect failed (%s); retrying in %.1fs", failure.reason, delay)
                if self._stream is not None and self._stream.usable:
                    self._abandon(self._stream)  # a session the remote refused to restore is no session
                await anyio.sleep(delay)
        raise BridgeError(BridgeErrorCode.SESSION_LOST, "The bridge is shutting down.")

    async def _replay(self, stream: _Stream, init_params: dict[str, Any]) -> None:
        """The desktop's `initialize` again (a refusal is a failed recovery), then what the remote had accepted."""
        await self._call(stream, "initialize", init_params)

        async def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
            return await self._call(stream, method, params)

        async def notify(method: str) -> None:
            await self._notify(stream, method)

        await self.state.restore(call, notify)

    async def _notify(self, stream: _Stream, method: str) -> None:
        await self._post(stream, build_notification(method))

    async def _call(self, stream: _Stream, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request = self._own.request(method, params)
        assert request.id is not None
        with self._own.expect(request.id) as reply:
            if not await self._post(stream, request):
                raise BridgeError(BridgeErrorCode.SESSION_LOST, f"The remote refused {method} (HTTP 404).")
            answer = await reply.wait(self.http.read_timeout, method)
        return result_of(answer)


_STREAM_DROPPED = httpx2.RemoteProtocolError("the event stream dropped before the answer")


def _progress_token(message: Message) -> Any:
    meta = message.params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    return token if valid_id(token) else None
