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
from typing import Any, Protocol

import anyio
import anyio.abc
import httpx2

from bridge.errors import INTERNAL_ERROR, BridgeError, BridgeErrorCode
from bridge.http import SESSION_HEADER, ConnectionDropped, RemoteHttp, RemoteRpcError, SessionExpired
from bridge.inflight import Pending
from bridge.messages import InvalidMessage, Kind, Message, classify, dumps, parse
from bridge.sse import Event, EventTooLarge, iter_events

logger = logging.getLogger("bridge.upstream")

PROTOCOL_VERSION_HEADER = "mcp-protocol-version"
LAST_EVENT_ID = "last-event-id"
_RESUME_ATTEMPTS = 3
_LISTEN_BACKOFF_MAX = 30.0
_DRAIN_AFTER_ANSWER = 1.0  # seconds to let a response stream end on its own after the answer


class Sink(Protocol):
    """Where the upstream sends what the remote says (implemented by the relay)."""

    async def deliver(self, message: Message) -> None: ...

    async def fail(self, pending: Pending, error: BridgeError) -> None: ...

    def is_open(self, pending: Pending) -> bool: ...


class Upstream(Protocol):
    """What the relay needs from any remote transport."""

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None: ...

    async def send(self, message: Message, pending: Pending | None) -> None: ...

    async def aclose(self) -> None: ...


class TaskHost:
    """Owns the tasks an upstream spawns (request handlers, streams) for as long as `run()` runs."""

    _tg: anyio.abc.TaskGroup | None = None
    _closed: bool = False

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    def stop_tasks(self) -> None:
        """Mark closed and cancel every task this upstream started."""
        self._closed = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()


def parse_remote(raw: bytes) -> list[Message]:
    """Messages in one JSON body or SSE event from the remote; malformed ones are logged and skipped."""
    try:
        body = parse(raw)
    except ValueError:
        logger.warning("dropped a malformed message from the remote (%d bytes of invalid JSON)", len(raw))
        return []
    items = body if isinstance(body, list) else [body]
    parsed: list[Message] = []
    for item in items:
        try:
            parsed.append(classify(item, raw if item is body else None))
        except InvalidMessage as exc:
            logger.warning("dropped an invalid message from the remote: %s", exc)
    return parsed


class StreamableHttpUpstream(TaskHost):
    """A Streamable HTTP MCP session to the remote, with resilience (see module docstring)."""

    def __init__(self, http: RemoteHttp, sink: Sink) -> None:
        self.http = http
        self.sink = sink
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._init_params: dict[str, Any] | None = None
        self._initialized = False
        self._log_level: str | None = None
        self._subscriptions: set[str] = set()
        self._generation = 0
        self._session_lost = False
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
        if not self.session_id:
            return
        with anyio.move_on_after(1.0):
            try:
                await self.http.client.request(
                    "DELETE", self.http.url, headers=self._headers(), timeout=httpx2.Timeout(1.0)
                )
                logger.debug("remote session ended")
            except httpx2.HTTPError as exc:
                logger.debug("could not end the remote session: %s", exc)

    # --- sending ---------------------------------------------------------------------------

    async def send(self, message: Message, pending: Pending | None) -> None:
        """Send one desktop message: requests run concurrently; notifications and answers in order."""
        if pending is not None:
            assert self._tg is not None
            self._remember_state(message)
            self._tg.start_soon(self._request, pending)
            return
        await self._send_one_way(message)

    def _remember_state(self, message: Message) -> None:
        """Track what a new session must restore: log level and resource subscriptions."""
        params = message.params
        if message.method == "logging/setLevel" and isinstance(params.get("level"), str):
            self._log_level = params["level"]
        elif message.method == "resources/subscribe" and isinstance(params.get("uri"), str):
            self._subscriptions.add(params["uri"])
        elif message.method == "resources/unsubscribe" and isinstance(params.get("uri"), str):
            self._subscriptions.discard(params["uri"])

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
            await self.sink.fail(pending, BridgeError(INTERNAL_ERROR, f"Internal bridge error handling {pending.method}; see the bridge's log."))

    async def _forward_request(self, pending: Pending) -> None:
        message = pending.message
        drops = self.http.policy.start()
        while True:
            await self._wait_ready()
            if self._session_lost:
                raise BridgeError.of(
                    BridgeErrorCode.SESSION_LOST, "The remote session ended and could not be re-established."
                )
            generation = self._generation
            try:
                async with self.http.open(
                    "POST", body=message.raw, headers=self._headers(), rpc_method=message.method
                ) as response:
                    await self._read_answer(response, pending)
                return
            except SessionExpired:
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
        self._init_params = pending.message.params
        self.session_id = None
        self.protocol_version = None
        self._session_lost = False
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
                await self._read_answer(response, pending, on_answer=learn)
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
        if message.method == "notifications/initialized":
            self._initialized = True
        await self._wait_ready()
        generation = self._generation
        try:
            async with self.http.open(
                "POST", body=message.raw, headers=self._headers(), rpc_method=message.method
            ) as response:
                await self._drain_one_way(response)
        except SessionExpired:
            logger.info("remote session expired (HTTP 404 to %s); opening a new one", message.method or "an answer")
            await self._reinitialize(generation)
        except (BridgeError, RemoteRpcError) as error:
            what = message.method or f"the answer to remote request {message.id!r}"
            logger.warning("could not deliver %s to the remote: %s", what, _reason(error))
        except ConnectionDropped as dropped:
            logger.warning("stream dropped while sending %s: %s", message.method, dropped.error.message)
        except Exception:
            logger.exception("internal error while sending %s", message.method)
        if message.method == "notifications/initialized":
            self._start_listener()

    async def _drain_one_way(self, response: httpx2.Response) -> None:
        """A notification's response is normally 202; deliver anything a remote sends anyway."""
        if response.status_code == 202:
            return
        content_type = _content_type(response)
        if content_type == "text/event-stream":
            await self._follow_events(response, None)
        elif content_type == "application/json":
            body = await self._read_body(response)
            if body.strip():
                for message in parse_remote(body):
                    await self.sink.deliver(message)

    # --- reading answers -------------------------------------------------------------------

    async def _read_answer(
        self, response: httpx2.Response, pending: Pending, on_answer: Callable[[Message], None] | None = None
    ) -> None:
        """Deliver everything on a request's response until its answer; fail the request if none comes."""
        content_type = _content_type(response)
        if response.status_code == 202:
            raise BridgeError.of(
                BridgeErrorCode.BAD_RESPONSE,
                f"The remote accepted {pending.method} (HTTP 202) but sent no answer.",
                http_status=202,
            )
        if content_type == "application/json":
            body = await self._read_body(response, pending.method)
            answered = False
            for message in parse_remote(body):
                answered = await self._deliver_remote(message, pending, on_answer) or answered
            if not answered and self.sink.is_open(pending):
                raise BridgeError.of(
                    BridgeErrorCode.BAD_RESPONSE,
                    f"The remote's JSON response to {pending.method} was not a valid answer.",
                    http_status=response.status_code,
                )
            return
        if content_type != "text/event-stream":
            raise BridgeError.of(
                BridgeErrorCode.BAD_RESPONSE,
                f"The remote answered {pending.method} with content type {content_type or 'none'!r}, "
                "not JSON or an event stream; is the URL an MCP endpoint?",
                http_status=response.status_code,
            )
        outcome = await self._follow_events(response, pending, on_answer)
        attempts = 0
        while not outcome.answered and outcome.last_event_id and attempts < _RESUME_ATTEMPTS:
            if isinstance(outcome.error, httpx2.TimeoutException) or not self.sink.is_open(pending):
                break
            attempts += 1
            await anyio.sleep((outcome.retry_ms or 1000) / 1000)
            logger.info("response stream for %s dropped; resuming after event %s", pending.method,
                        outcome.last_event_id)
            headers = self._headers()
            headers["accept"] = "text/event-stream"
            headers[LAST_EVENT_ID] = outcome.last_event_id
            try:
                async with self.http.open("GET", headers=headers, rpc_method=pending.method) as resumed:
                    if _content_type(resumed) != "text/event-stream":
                        break
                    resumed_outcome = await self._follow_events(resumed, pending, on_answer)
            except (BridgeError, SessionExpired, ConnectionDropped, RemoteRpcError) as exc:
                logger.info("could not resume the response stream: %s", _reason(exc))
                break
            resumed_outcome.last_event_id = resumed_outcome.last_event_id or outcome.last_event_id
            outcome = resumed_outcome
        if outcome.answered or not self.sink.is_open(pending):
            return
        if outcome.error is not None:
            error = self.http.lost(outcome.error, pending.method)
            if isinstance(outcome.error, (httpx2.TimeoutException, EventTooLarge)):
                raise error
            raise ConnectionDropped(error)
        if outcome.garbage:
            raise BridgeError.of(
                BridgeErrorCode.BAD_RESPONSE,
                f"The remote sent a malformed message and no answer to {pending.method}.",
            )
        raise ConnectionDropped(self.http.lost(httpx2.RemoteProtocolError("stream ended without an answer"),
                                            pending.method))

    async def _follow_events(
        self, response: httpx2.Response, pending: Pending | None, on_answer: Callable[[Message], None] | None = None
    ) -> _StreamOutcome:
        """Deliver each SSE event until the answer to `pending`, then let the stream finish briefly.

        Reading the stream to its end (the remote closes it right after the answer)
        lets the connection go back to the pool instead of being torn down.
        """
        outcome = _StreamOutcome()
        events = iter_events(response.aiter_bytes(), self.http.max_message_bytes).__aiter__()
        try:
            async for event in events:
                await self._on_event(event, pending, on_answer, outcome)
                if outcome.answered:
                    break
        except (httpx2.HTTPError, EventTooLarge) as exc:
            outcome.error = exc
            return outcome
        if outcome.answered:
            with anyio.move_on_after(_DRAIN_AFTER_ANSWER):
                try:
                    async for event in events:
                        await self._on_event(event, None, None, outcome)
                except (httpx2.HTTPError, EventTooLarge):
                    pass
        return outcome

    async def _on_event(
        self,
        event: Event,
        pending: Pending | None,
        on_answer: Callable[[Message], None] | None,
        outcome: _StreamOutcome,
    ) -> None:
        if event.id:
            outcome.last_event_id = event.id
        if event.retry is not None:
            outcome.retry_ms = event.retry
        if event.event != "message" or not event.data:
            return
        batch = parse_remote(event.data)
        if not batch:
            outcome.garbage = True
        for message in batch:
            if await self._deliver_remote(message, pending, on_answer):
                outcome.answered = True

    async def _deliver_remote(
        self, message: Message, pending: Pending | None, on_answer: Callable[[Message], None] | None
    ) -> bool:
        """Hand one remote message to the relay; True if it answered `pending`."""
        is_answer = pending is not None and message.is_answer and message.id == pending.id
        if is_answer and on_answer is not None:
            on_answer(message)
        await self.sink.deliver(message)
        return is_answer

    async def _read_body(self, response: httpx2.Response, method: str | None = None) -> bytes:
        limit = self.http.max_message_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise BridgeError.of(
                        BridgeErrorCode.MESSAGE_TOO_LARGE,
                        f"The remote's answer exceeded ALLOY_MAX_MESSAGE_BYTES ({limit} bytes).",
                    )
                chunks.append(chunk)
        except httpx2.HTTPError as exc:
            error = self.http.lost(exc, method)
            if isinstance(exc, httpx2.TimeoutException):
                raise error from None
            raise ConnectionDropped(error) from None
        return b"".join(chunks)

    # --- the GET stream ----------------------------------------------------------------------

    def _start_listener(self) -> None:
        if self._listening or self._tg is None or not self.session_id or self._closed:
            return
        self._listening = True
        self._tg.start_soon(self._listen)

    async def _listen(self) -> None:
        """Keep the server-to-client stream open for the life of the session."""
        delay = 1.0
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
                long_read = httpx2.Timeout(self.http.client.timeout.connect, read=max(300.0, self.http.read_timeout))
                try:
                    with anyio.CancelScope() as scope:
                        self._listener_scope = scope
                        async with self.http.open("GET", headers=headers, timeout=long_read) as response:
                            if _content_type(response) != "text/event-stream":
                                logger.info("the remote offers no server-to-client stream (GET answered %s)",
                                            response.status_code)
                                return
                            logger.debug("server-to-client stream open")
                            delay = 1.0
                            outcome = await self._follow_events(response, None)
                            last_event_id = outcome.last_event_id or last_event_id
                            if outcome.error is not None and not isinstance(outcome.error, httpx2.ReadTimeout):
                                logger.info("server-to-client stream dropped (%s); re-opening",
                                            type(outcome.error).__name__)
                    if scope.cancelled_caught:
                        continue
                except SessionExpired:
                    await self._reinitialize(generation)
                    continue
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
            if self._init_params is None:
                self._session_lost = True
                return
            self._ready = anyio.Event()
            try:
                # The old session id stays until the new one is known: a request that slips out with it
                # meanwhile gets a 404 and is resent after this re-initialization.
                result, session_id = await self._call_internal("initialize", self._init_params, with_session=False)
                self.session_id = session_id
                if isinstance(result.get("protocolVersion"), str):
                    self.protocol_version = result["protocolVersion"]
                if self._initialized:
                    await self._notify_internal("notifications/initialized")
                if self._log_level is not None:
                    await self._call_internal("logging/setLevel", {"level": self._log_level})
                for uri in sorted(self._subscriptions):
                    await self._call_internal("resources/subscribe", {"uri": uri})
                self._session_lost = False
                logger.info("opened a new remote session; restored %d subscription(s)%s",
                            len(self._subscriptions), " and the log level" if self._log_level else "")
            except (BridgeError, SessionExpired, ConnectionDropped, RemoteRpcError) as exc:
                self._session_lost = True
                logger.error("could not re-open the remote session: %s", _reason(exc))
            finally:
                self._generation += 1
                self._ready.set()
            if self._listener_scope is not None:
                self._listener_scope.cancel()
            elif self._initialized:
                self._start_listener()

    async def _call_internal(
        self, method: str, params: dict[str, Any] | None, *, with_session: bool = True
    ) -> tuple[dict[str, Any], str | None]:
        """A bridge-owned request: its answer is consumed here, never shown to the desktop."""
        request_id = f"alloy-mcp-bridge-{next(self._bridge_ids)}"
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            body["params"] = params
        own = Pending(classify(body, dumps(body)))
        answer: list[Message] = []
        async with self.http.open(
            "POST", body=own.message.raw, headers=self._headers(with_session=with_session), rpc_method=method
        ) as response:
            session_id = response.headers.get(SESSION_HEADER) or self.session_id
            content_type = _content_type(response)
            if content_type == "application/json":
                found = parse_remote(await self._read_body(response, method))
            elif content_type == "text/event-stream":
                found = []
                async for event in iter_events(response.aiter_bytes(), self.http.max_message_bytes):
                    if event.event == "message" and event.data:
                        found.extend(parse_remote(event.data))
                        if any(m.is_answer and m.id == request_id for m in found):
                            break
            else:
                found = []
        for message in found:
            if message.is_answer and message.id == request_id:
                answer.append(message)
            else:
                await self.sink.deliver(message)
        if not answer:
            raise BridgeError.of(BridgeErrorCode.BAD_RESPONSE, f"The remote sent no answer to {method}.")
        if answer[0].kind is Kind.ERROR:
            error = answer[0].body["error"]
            raise BridgeError.of(BridgeErrorCode.REMOTE_ERROR, f"The remote refused {method}: {error.get('message')}")
        result = answer[0].body.get("result")
        return (result if isinstance(result, dict) else {}), session_id

    async def _notify_internal(self, method: str) -> None:
        body = dumps({"jsonrpc": "2.0", "method": method})
        async with self.http.open("POST", body=body, headers=self._headers(), rpc_method=method) as response:
            await self._drain_one_way(response)


class _StreamOutcome:
    __slots__ = ("answered", "last_event_id", "retry_ms", "error", "garbage")

    def __init__(self) -> None:
        self.answered = False
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None
        self.error: Exception | None = None
        self.garbage = False


def _content_type(response: httpx2.Response) -> str:
    return response.headers.get("content-type", "").partition(";")[0].strip().lower()


def rpc_error_answer(pending: Pending, error: dict[str, Any]) -> Message:
    """The remote's JSON-RPC error, as the answer to the desktop's request."""
    body = {"jsonrpc": "2.0", "id": pending.id, "error": error}
    return classify(body, dumps(body))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RemoteRpcError):
        return f"{exc.error.get('message')} (JSON-RPC error {exc.code}, HTTP {exc.http_status})"
    if isinstance(exc, BridgeError):
        return exc.message
    if isinstance(exc, ConnectionDropped):
        return exc.error.message
    if isinstance(exc, SessionExpired):
        return "the new session was rejected too (HTTP 404)"
    return str(exc)


DeliverFn = Callable[[Message], Awaitable[None]]
