"""Streamable HTTP: one MCP session with the remote, kept alive whatever the remote does.

`StreamableHttpUpstream` sends each desktop message in a POST of its own (in a
task of its own: no message waits on another's HTTP exchange) and hands
everything the remote says back to the relay. It owns the session:

- `initialize` from the desktop opens it; the session id is checked (visible
  ASCII) and the negotiated `protocolVersion` is stamped on every later request
  as `MCP-Protocol-Version`. Messages the desktop sends meanwhile wait for it,
  and requests after `notifications/initialized` wait until the remote took it.
- A 404 to a request that carried the session id means the remote forgot the
  session. The upstream opens a new one — replaying the desktop's `initialize`
  under a bridge-owned id and then what the remote had accepted (see
  `session.py`) — and resends the request that hit the 404. The desktop never
  notices. Concurrent 404s share one re-initialization; new sessions that keep
  failing are paced (`retry.SessionPacer`); a replay that negotiates another
  protocol version is a lost session; a session the bridge gives up is DELETEd.
- The GET stream for server-initiated messages is supervised (`server_stream.py`):
  re-opened with backoff (and `Last-Event-ID`) whenever it drops.
- A response stream that drops is resumed with `Last-Event-ID` when the remote
  gave event ids; otherwise the request fails — "outcome unknown" for anything
  that may have run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import httpx2

from bridge.errors import (
    BridgeError,
    BridgeErrorCode,
    ConnectionDropped,
    RemoteFailure,
    RemoteRpcError,
    SessionExpired,
    bad_response,
)
from bridge.http import SESSION_HEADER, RemoteHttp
from bridge.inflight import Pending
from bridge.messages import Kind, Message, build_notification
from bridge.retry import SESSION_RESENDS, SessionPacer
from bridge.transports.base import Sink, TaskHost
from bridge.transports.replies import Replies, result_of
from bridge.transports.responses import ResponseReader
from bridge.transports.server_stream import ServerStream
from bridge.transports.session import Gate, SessionState, valid_session_id

logger = logging.getLogger(__name__)

PROTOCOL_VERSION_HEADER = "mcp-protocol-version"
_SESSION_HEADER_BYTES = SESSION_HEADER.encode("ascii")
# The desktop's `initialize` was refused (404/405, or a JSON-RPC error such as -32022): True means another
# transport or protocol adapter took the request over.
RefusalHandler = Callable[[Pending, RemoteFailure], Awaitable[bool]]


class StreamableHttpUpstream(TaskHost):
    """A Streamable HTTP MCP session to the remote, with resilience (see module docstring)."""

    transport_name = "streamable-http"

    def __init__(self, http: RemoteHttp, sink: Sink, *, on_refused_initialize: RefusalHandler | None = None,
                 on_initialize_settled: Callable[[], None] | None = None) -> None:
        self.http = http
        self.sink = sink
        self.reader = ResponseReader(http, sink)
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.state = SessionState()
        self.gate = Gate()
        self.generation = 0  # bumped by every session opened (or attempted) by the bridge or the desktop
        self.epoch = 0  # bumped by every desktop `initialize`: the desktop starting over beats any re-opening
        self._lost: str | None = None  # why the session is gone (None: usable, or not opened yet)
        self._reinit_lock = anyio.Lock()
        self._pacer = SessionPacer()
        self._own = Replies()
        self.server_stream = ServerStream(self)
        self._on_refused_initialize = on_refused_initialize
        self._on_initialize_settled = on_initialize_settled

    # --- lifecycle -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """End the remote session (HTTP DELETE), bounded so shutdown stays fast."""
        self.stop_tasks()
        if self.session_id:
            await self.http.end_session(self.headers())

    # --- the desktop's messages ------------------------------------------------------------

    def send(self, message: Message, pending: Pending | None) -> None:
        """Requests and one-way messages each run in their own task, in the order the gate keeps."""
        self.state.remember(message)
        ticket = self.gate.ticket()
        if pending is not None:
            if pending.method == "initialize":
                self.epoch += 1
                self.spawn_request(pending, self._initialize, self.gate.hold())
            else:
                self.spawn_request(pending, self._forward_request, ticket)
            return
        hold = self.gate.hold() if message.method == "notifications/initialized" else None
        self.spawn_one_way(message, self._send_one_way, ticket, hold)

    def headers(self, *, with_session: bool = True) -> dict[str, str]:
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        if with_session and self.session_id:
            headers[SESSION_HEADER] = self.session_id
        if with_session and self.protocol_version:
            headers[PROTOCOL_VERSION_HEADER] = self.protocol_version
        return headers

    async def _forward_request(self, pending: Pending, ticket: int) -> None:
        message = pending.message
        drops = self.http.policy.start()
        await self.gate.wait(ticket)
        try:
            while True:
                if self._lost is not None:
                    await self.reinitialize(self.generation, self.epoch)
                    if self._lost is not None:
                        raise BridgeError(
                            BridgeErrorCode.SESSION_LOST,
                            f"The remote session ended and could not be re-established: {self._lost}. "
                            "The next request tries again.",
                        )
                generation, epoch = self.generation, self.epoch
                try:
                    async with self.http.open(
                        "POST", body=message.raw, headers=self.headers(), rpc_method=message.method
                    ) as response:
                        answer = await self.reader.read_answer(response, pending, self.headers)
                    self._pacer.proven()
                    self.state.confirm(pending, answer)
                    return
                except SessionExpired:
                    if pending.resent >= SESSION_RESENDS:
                        raise SessionExpired(
                            f"The remote keeps refusing the session for {message.method}, even a new one."
                        ) from None
                    logger.info("remote session expired (HTTP 404 to %s); opening a new one", message.method)
                    await self.reinitialize(generation, epoch)
                    await self.gate.wait()  # a desktop `initialize` under way brings the session to resend on
                    pending.resent += 1
                except ConnectionDropped:
                    if not await self.http.wait_to_resend(drops, message.method,
                                                          still_wanted=self.sink.is_open(pending)):
                        raise
        finally:
            self.state.forget(pending)

    async def _initialize(self, pending: Pending, hold: int) -> None:
        """The desktop's `initialize`: open a fresh session and learn the protocol version.

        It waits for nothing: the desktop starting over supersedes a re-opening under way.
        """
        try:
            if self.session_id is not None:
                # The desktop started over: end the session it leaves behind (best effort, in the background).
                self.spawn(self.http.end_session, self.headers())
            self.session_id = None
            self.protocol_version = None
            self._lost = None
            drops = self.http.policy.start()
            while True:
                try:
                    await self._open_session(pending)
                    return
                except ConnectionDropped:
                    if not await self.http.wait_to_resend(drops, "initialize", still_wanted=self.sink.is_open(pending)):
                        raise
        except (RemoteRpcError, BridgeError) as refused:
            status = refused.http_status
            if (self._on_refused_initialize is not None
                    and (isinstance(refused, RemoteRpcError) or status in (404, 405))
                    and await self._on_refused_initialize(pending, refused)):
                return
            raise
        finally:
            self.gate.release(hold)
            if self._on_initialize_settled is not None:
                self._on_initialize_settled()

    async def _open_session(self, pending: Pending) -> None:
        async with self.http.open(
            "POST", body=pending.message.raw, headers=self.headers(with_session=False), rpc_method="initialize"
        ) as response:
            session_id = self._session_id_of(response)
            answer = await self.reader.read_answer(response, pending, self.headers)
        if answer is None:
            return
        self.session_id = session_id
        result = answer.result if answer.kind is Kind.RESPONSE else None
        if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
            self.protocol_version = result["protocolVersion"]
        self.generation += 1
        logger.info(
            "connected to %s (protocol %s%s)",
            self.http.endpoint.display_url,
            self.protocol_version or "unknown",
            ", with session" if self.session_id else ", stateless",
        )

    def _session_id_of(self, response: httpx2.Response) -> str | None:
        """The session the remote opened; one that is not visible ASCII cannot be used and is refused."""
        raw = next((value for name, value in response.headers.raw if name.lower() == _SESSION_HEADER_BYTES), None)
        if raw is None:
            return None
        if not valid_session_id(raw):
            raise bad_response("The remote's Mcp-Session-Id is not visible ASCII, as MCP requires; the session "
                               "cannot be used. Report it to the server's owner.", http_status=response.status_code)
        return raw.decode("ascii")

    async def _send_one_way(self, message: Message, ticket: int, hold: int | None) -> None:
        """POST a notification or an answer to a server request.

        `hold` (for `notifications/initialized`) keeps later requests back until the notification is on the
        wire and the server-to-client stream is open (or could not be), so a request the remote makes
        during the desktop's first call has a stream to arrive on.
        """
        handed = False

        def sent() -> None:
            nonlocal handed
            if hold is not None and not handed:
                handed = True
                self.server_stream.start(opened=lambda: self.gate.release(hold), after=hold)
                self.spawn(self.server_stream.hold_back_at_most, hold)

        try:
            await self.gate.wait(ticket)
            generation, epoch = self.generation, self.epoch
            try:
                async with self.http.open(
                    "POST", body=message.raw, headers=self.headers(), rpc_method=message.method,
                    on_sent=sent if hold is not None else None,
                ) as response:
                    sent()  # a transport without the trace hook: accepted means sent
                    await self.reader.drain_one_way(response)
            except SessionExpired:
                logger.info("remote session expired (HTTP 404 to %s); opening a new one",
                            message.method or "an answer")
                await self.reinitialize(generation, epoch)
        finally:
            if hold is not None and not handed:
                self.gate.release(hold)
            if message.method == "notifications/initialized" and not handed:
                self.server_stream.start()  # not sent, or sent without the trace hook: open the stream anyway

    # --- session re-initialization -------------------------------------------------------

    async def reinitialize(self, generation: int, epoch: int) -> None:
        """Open a new session replaying the desktop's handshake; one run per expiry, shared by all."""
        async with self._reinit_lock:
            if generation != self.generation or epoch != self.epoch:
                return  # another task re-opened (or tried to) since, or the desktop started over
            if self.state.init_params is None:
                self._lost = "the desktop never initialized it"
                return
            hold = self.gate.hold()
            try:
                delay = self._pacer.delay()
                if delay:
                    logger.info("the remote keeps losing sessions; waiting %.1fs before opening another", delay)
                    await anyio.sleep(delay)
                self.http.stats.reinitializations += 1
                if await self._replay_session(epoch):
                    self._lost = None
                    logger.info("opened a new remote session; restored %s", self.state.describe())
            except RemoteFailure as failure:
                if epoch != self.epoch:
                    logger.info("a session re-opening failed, but the desktop has started a new one meanwhile")
                    return
                self._lost = failure.reason
                logger.error("could not re-open the remote session: %s", self._lost)
            finally:
                self.generation += 1
                self.gate.release(hold)
            self.server_stream.reopen(start=self.state.initialized)

    async def _replay_session(self, epoch: int) -> bool:
        """The desktop's `initialize` again, under the bridge's id, then what the remote had accepted.

        False when the desktop started over meanwhile: its own session wins, this one is ended.
        """
        assert self.state.init_params is not None
        # The old session id stays until the new one is known: a request that slips out with it
        # meanwhile gets a 404 and is resent after this re-initialization.
        result, session_id = await self._call_with_session("initialize", self.state.init_params, with_session=False)
        if epoch != self.epoch:
            if session_id:
                self.spawn(self.http.end_session, {**self.headers(with_session=False), SESSION_HEADER: session_id})
            return False
        version = result.get("protocolVersion")
        if self.protocol_version is not None and version != self.protocol_version:
            if session_id:
                self.spawn(self.http.end_session, {**self.headers(with_session=False), SESSION_HEADER: session_id})
            raise BridgeError(
                BridgeErrorCode.SESSION_LOST,
                f"the new session negotiated protocol {version!r} instead of {self.protocol_version!r}",
            )
        self.session_id = session_id
        await self.state.restore(self._call, self._notify)
        return True

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        result, _ = await self._call_with_session(method, params)
        return result

    async def _call_with_session(self, method: str, params: dict[str, Any], *,
                                 with_session: bool = True) -> tuple[dict[str, Any], str | None]:
        """A bridge-owned request: its answer is consumed here, never shown to the desktop."""
        request = self._own.request(method, params)
        headers = self.headers(with_session=with_session)
        async with self.http.open("POST", body=request.raw, headers=headers, rpc_method=method) as response:
            session_id = self._session_id_of(response) or (self.session_id if with_session else None)
            answer = await self.reader.fetch_answer(response, request, lambda: dict(headers))
        return result_of(answer), session_id

    async def _notify(self, method: str) -> None:
        body = build_notification(method).raw
        async with self.http.open("POST", body=body, headers=self.headers(), rpc_method=method) as response:
            await self.reader.drain_one_way(response)
