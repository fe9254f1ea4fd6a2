"""The remote side: one Streamable HTTP MCP session, kept alive whatever the remote does.

`StreamableHttpUpstream` sends each desktop message to the remote and hands
everything the remote says back to the relay (`Sink`). It owns the session:

- `initialize` from the desktop opens it; the negotiated `protocolVersion` is
  stamped on every later request as `MCP-Protocol-Version`.
- A 404 to a request that carried the session id means the remote forgot the
  session (it restarted, or expired it). The upstream opens a new one —
  replaying the desktop's `initialize` under a bridge-owned id, sending
  `notifications/initialized`, restoring the log level and resource
  subscriptions — and resends the request that hit the 404. The desktop
  never notices. Concurrent 404s share one re-initialization.
- The GET stream for server-initiated messages is supervised: re-opened with
  backoff (and `Last-Event-ID`) whenever it drops.
- A response stream that drops is resumed with `Last-Event-ID` when the remote
  gave event ids; otherwise the request fails — "outcome unknown" for anything
  that may have run.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import httpx2

from bridge.contracts import Sink, TaskHost
from bridge.errors import INTERNAL_ERROR, BridgeError, BridgeErrorCode
from bridge.http import SESSION_HEADER, ConnectionDropped, RemoteHttp, RemoteRpcError, SessionExpired
from bridge.inflight import Pending
from bridge.messages import Kind, Message, classify, dumps
from bridge.responses import LAST_EVENT_ID, ResponseReader, media_type, reason, rpc_error_answer
from bridge.session import SessionState

logger = logging.getLogger("bridge.upstream")

PROTOCOL_VERSION_HEADER = "mcp-protocol-version"
_LISTEN_BACKOFF_MAX = 30.0
_SESSION_RESENDS = 3  # a request resent after this many session expiries fails instead


class StreamableHttpUpstream(TaskHost):
    """A Streamable HTTP MCP session to the remote, with resilience (see module docstring)."""

    def __init__(self, http: RemoteHttp, sink: Sink) -> None:
        self.http = http
        self.sink = sink
        self.reader = ResponseReader(http, sink)
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.state = SessionState()
        self._generation = 0
        self._session_lost = False
        self._lost_because = "the desktop never initialized it"
        self._reinit_lock = anyio.Lock()
        self._ready = anyio.Event()
        self._ready.set()
        self._bridge_ids = itertools.count(1)
        self._listener_scope: anyio.CancelScope | None = None
        self._listening = False
        # Called when the desktop's `initialize` is refused (404/405, or a JSON-RPC error such as -32022);
        # True means another transport or protocol adapter took the request over.
        self.fallback: Callable[[Pending, BridgeError | RemoteRpcError], Awaitable[bool]] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """End the remote session (HTTP DELETE), bounded so shutdown stays fast."""
        self.stop_tasks()
        if self.session_id:
            await self._end_session(self._headers())

    async def _end_session(self, headers: dict[str, str]) -> None:
        with anyio.move_on_after(1.0):
            try:
                await self.http.client.request("DELETE", self.http.url, headers=headers, timeout=httpx2.Timeout(1.0))
                logger.debug("remote session ended")
            except httpx2.HTTPError as exc:
                logger.debug("could not end the remote session: %s", exc)

    # --- sending ---------------------------------------------------------------------------

    async def send(self, message: Message, pending: Pending | None) -> None:
        """Send one desktop message: requests run concurrently; notifications and answers in order."""
        self.state.remember(message)
        if pending is not None:
            assert self._tg is not None
            if pending.method == "initialize":
                # Hold everything the desktop sends next until the session id is known.
                self._ready = anyio.Event()
            self._tg.start_soon(self._request, pending)
            return
        await self._send_one_way(message)

    def _headers(self, *, with_session: bool = True) -> dict[str, str]:
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        if with_session and self.session_id:
            headers[SESSION_HEADER] = self.session_id
        if with_session and self.protocol_version:
            headers[PROTOCOL_VERSION_HEADER] = self.protocol_version
        return headers

    async def _wait_ready(self) -> None:
        """Wait out a re-initialization in progress; re-open a session that was lost.

        Returns without yielding when the session is ready, so the caller's next
        synchronous step (building the headers) sees the same session.
        """
        while True:
            if self._session_lost and self._ready.is_set():
                await self._reinitialize(self._generation)
            if self._ready.is_set():
                return
            await self._ready.wait()

    async def _request(self, pending: Pending) -> None:
        try:
            if pending.method == "initialize":
                await self._initialize(pending)
            else:
                await self._forward_request(pending)
        except RemoteRpcError as refused:
            if pending.method == "initialize" and self.fallback is not None and await self.fallback(pending, refused):
                return
            await self.sink.deliver(rpc_error_answer(pending, refused.error))
        except BridgeError as error:
            if (
                pending.method == "initialize"
                and self.fallback is not None
                and error.data.get("httpStatus") in (404, 405)
                and await self.fallback(pending, error)
            ):
                return
            await self.sink.fail(pending, error)
        except Exception:  # a bug must cost one request, never the bridge
            logger.exception("internal error while handling %s", pending.method)
            bug = BridgeError(INTERNAL_ERROR, f"Internal bridge error handling {pending.method}; see its log.")
            await self.sink.fail(pending, bug)

    async def _forward_request(self, pending: Pending) -> None:
        message = pending.message
        drops = self.http.policy.start()
        while True:
            await self._wait_ready()
            if self._session_lost:
                raise BridgeError.of(
                    BridgeErrorCode.SESSION_LOST,
                    f"The remote session ended and could not be re-established: {self._lost_because}. "
                    "The next request tries again.",
                )
            generation = self._generation
            try:
                async with self.http.open(
                    "POST", body=message.raw, headers=self._headers(), rpc_method=message.method
                ) as response:
                    await self.reader.read_answer(response, pending, self._headers)
                return
            except SessionExpired:
                if pending.resent >= _SESSION_RESENDS:
                    raise BridgeError.of(
                        BridgeErrorCode.SESSION_LOST,
                        f"The remote keeps refusing the session for {message.method}, even a new one.",
                    ) from None
                logger.info("remote session expired (HTTP 404 to %s); opening a new one", message.method)
                await self._reinitialize(generation)
                pending.resent += 1
            except ConnectionDropped as dropped:
                delay = self.http.policy.delay_after_drop(drops, message.method)
                if delay is None or not self.sink.is_open(pending):
                    raise dropped.error from None
                logger.info("connection dropped during %s; resending it in %.1fs (safe to repeat)",
                            message.method, delay)
                await anyio.sleep(delay)

    async def _initialize(self, pending: Pending) -> None:
        """The desktop's `initialize`: open a fresh session and learn the protocol version."""
        if self.session_id is not None and self._tg is not None:
            # The desktop started over: end the session it leaves behind (best effort, in the background).
            self._tg.start_soon(self._end_session, self._headers())
        self.session_id = None
        self.protocol_version = None
        self._session_lost = False
        try:
            await self._open_session(pending)
        finally:
            self._ready.set()

    async def _open_session(self, pending: Pending) -> None:
        async with self.http.open(
            "POST", body=pending.message.raw, headers=self._headers(), rpc_method="initialize"
        ) as response:
            self.session_id = response.headers.get(SESSION_HEADER)

            def learn(answer: Message) -> None:
                if answer.kind is Kind.RESPONSE:
                    result = answer.body.get("result")
                    if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
                        self.protocol_version = result["protocolVersion"]

            try:
                await self.reader.read_answer(response, pending, self._headers, on_answer=learn)
            except ConnectionDropped as dropped:
                raise dropped.error from None
        self._generation += 1
        logger.info(
            "connected to %s (protocol %s%s)",
            self.http.endpoint.display_url,
            self.protocol_version or "unknown",
            ", with session" if self.session_id else ", stateless",
        )

    async def _send_one_way(self, message: Message) -> None:
        """POST a notification or an answer to a server request; failures are logged, never fatal."""
        await self._wait_ready()
        generation = self._generation
        try:
            async with self.http.open(
                "POST", body=message.raw, headers=self._headers(), rpc_method=message.method
            ) as response:
                await self.reader.drain_one_way(response)
        except SessionExpired:
            logger.info("remote session expired (HTTP 404 to %s); opening a new one", message.method or "an answer")
            await self._reinitialize(generation)
        except (BridgeError, RemoteRpcError) as error:
            what = message.method or f"the answer to remote request {message.id!r}"
            logger.warning("could not deliver %s to the remote: %s", what, reason(error))
        except ConnectionDropped as dropped:
            logger.warning("stream dropped while sending %s: %s", message.method, dropped.error.message)
        except Exception:
            logger.exception("internal error while sending %s", message.method)
        if message.method == "notifications/initialized":
            self._start_listener()

    # --- the GET stream ----------------------------------------------------------------------

    def _start_listener(self) -> None:
        if self._listening or self._tg is None or not self.session_id or self._closed:
            return
        self._listening = True
        self._tg.start_soon(self._listen)

    async def _listen(self) -> None:
        """Keep the server-to-client stream open for the life of the session."""
        delay = 1.0
        expiries = 0
        last_event_id: str | None = None
        generation = self._generation
        try:
            while not self._closed:
                await self._wait_ready()
                if not self.session_id:
                    return
                if generation != self._generation:
                    generation, last_event_id = self._generation, None
                headers = self._headers()
                headers["accept"] = "text/event-stream"
                if last_event_id:
                    headers[LAST_EVENT_ID] = last_event_id
                try:
                    with anyio.CancelScope() as scope:
                        self._listener_scope = scope
                        async with self.http.open(
                            "GET", headers=headers, timeout=self.http.quiet_stream_timeout
                        ) as response:
                            if media_type(response) != "text/event-stream":
                                logger.info("the remote offers no server-to-client stream (GET answered %s)",
                                            response.status_code)
                                return
                            logger.debug("server-to-client stream open")
                            delay, expiries = 1.0, 0
                            outcome = await self.reader.follow_events(response, None)
                            last_event_id = outcome.last_event_id or last_event_id
                            if outcome.error is not None and not isinstance(outcome.error, httpx2.ReadTimeout):
                                logger.info("server-to-client stream dropped (%s); re-opening",
                                            type(outcome.error).__name__)
                    if scope.cancelled_caught:
                        continue
                except SessionExpired:
                    await self._reinitialize(generation)
                    expiries += 1
                    if expiries < 2:
                        continue  # once is an ordinary expiry; again and again means back off
                except BridgeError as error:
                    if error.data.get("httpStatus") == 405:
                        logger.info("the remote offers no server-to-client stream (GET not allowed)")
                        return
                    logger.info("server-to-client stream unavailable: %s; retrying in %.0fs", error.message, delay)
                except ConnectionDropped as dropped:
                    logger.info("server-to-client stream dropped (%s); re-opening", dropped.error.message)
                except RemoteRpcError as refused:
                    if refused.http_status in (404, 405):
                        logger.info("the remote offers no server-to-client stream (%s)", refused)
                        return
                    logger.info("server-to-client stream refused: %s; retrying in %.0fs", refused, delay)
                except Exception:  # the listener must never take the bridge down
                    logger.exception("server-to-client stream failed; re-opening")
                await anyio.sleep(delay)
                delay = min(_LISTEN_BACKOFF_MAX, delay * 2)
        finally:
            self._listening = False
            self._listener_scope = None

    # --- session re-initialization -------------------------------------------------------

    async def _reinitialize(self, generation: int) -> None:
        """Open a new session replaying the desktop's handshake; one run per expiry, shared by all."""
        async with self._reinit_lock:
            if generation != self._generation and not self._session_lost:
                return  # another task already re-initialized
            if self.state.init_params is None:
                self._session_lost = True
                return
            self._ready = anyio.Event()
            try:
                # The old session id stays until the new one is known: a request that slips out with it
                # meanwhile gets a 404 and is resent after this re-initialization.
                result, session_id = await self._call_internal(
                    "initialize", self.state.init_params, with_session=False
                )
                self.session_id = session_id
                if isinstance(result.get("protocolVersion"), str):
                    self.protocol_version = result["protocolVersion"]
                await self.state.restore(self._call_internal, self._notify_internal)
                self._session_lost = False
                logger.info("opened a new remote session; restored %s", self.state.describe())
            except (BridgeError, SessionExpired, ConnectionDropped, RemoteRpcError) as exc:
                self._session_lost = True
                self._lost_because = reason(exc)
                logger.error("could not re-open the remote session: %s", self._lost_because)
            finally:
                self._generation += 1
                self._ready.set()
            if self._listener_scope is not None:
                self._listener_scope.cancel()
            elif self.state.initialized:
                self._start_listener()

    async def _call_internal(
        self, method: str, params: dict[str, Any] | None, *, with_session: bool = True
    ) -> tuple[dict[str, Any], str | None]:
        """A bridge-owned request: its answer is consumed here, never shown to the desktop."""
        request_id = f"alloy-mcp-bridge-{next(self._bridge_ids)}"
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            body["params"] = params
        request = classify(body, dumps(body))
        headers = self._headers(with_session=with_session)
        async with self.http.open("POST", body=request.raw, headers=headers, rpc_method=method) as response:
            session_id = response.headers.get(SESSION_HEADER) or self.session_id
            answer = await self.reader.fetch_answer(response, request, lambda: headers)
        if answer.kind is Kind.ERROR:
            error = answer.body["error"]
            raise BridgeError.of(BridgeErrorCode.REMOTE_ERROR, f"The remote refused {method}: {error.get('message')}")
        result = answer.body.get("result")
        return (result if isinstance(result, dict) else {}), session_id

    async def _notify_internal(self, method: str) -> None:
        body = dumps({"jsonrpc": "2.0", "method": method})
        async with self.http.open("POST", body=body, headers=self._headers(), rpc_method=method) as response:
            await self.reader.drain_one_way(response)


