"""The remote side for legacy HTTP+SSE servers (the 2024-11-05 transport).

The client GETs the endpoint and keeps the event stream open; the server's
first event (`endpoint`) names the URL to POST messages to, and every message
from the server — answers included — arrives on that one stream. A POST is
answered 202 Accepted.

The stream is the session: when it drops, the bridge reconnects, replays the
desktop's `initialize` (and log level and subscriptions) under bridge-owned
ids, then resends requests that are safe to repeat and fails the others with
"outcome unknown", since their answers were lost with the stream.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio
import anyio.abc
import httpx2

from bridge.contracts import Sink, TaskHost
from bridge.errors import INTERNAL_ERROR, BridgeError, BridgeErrorCode
from bridge.http import ConnectionDropped, RemoteHttp, RemoteRpcError, SessionExpired
from bridge.inflight import Pending
from bridge.messages import Message, classify, dumps
from bridge.responses import media_type, parse_remote, reason, rpc_error_answer
from bridge.retry import is_idempotent
from bridge.session import SessionState
from bridge.sse import EventTooLarge, iter_events

logger = logging.getLogger("bridge.sse")

_RECONNECT_MAX = 30.0


class LegacySseUpstream(TaskHost):
    """A legacy HTTP+SSE MCP session to the remote (see module docstring)."""

    def __init__(self, http: RemoteHttp, sink: Sink) -> None:
        self.http = http
        self.sink = sink
        self.post_url: str | None = None
        self._connected = anyio.Event()
        self._lost = anyio.Event()
        self._waiting: dict[Any, Pending] = {}
        self._internal: dict[str, tuple[anyio.Event, list[Message]]] = {}
        self.state = SessionState()
        self._bridge_ids = itertools.count(1)
        self._lock = anyio.Lock()
        self._recovering = False
        self._recovered = anyio.Event()

    async def aclose(self) -> None:
        """Legacy SSE has no session to end: closing the event stream is enough."""
        self.stop_tasks()

    async def probe(self) -> bool:
        """Open the event stream and wait for the `endpoint` event; False if this is not an SSE endpoint."""
        try:
            await self._ensure_stream()
        except BridgeError as error:
            logger.debug("legacy SSE probe failed: %s", error.message)
            return False
        return True

    # --- the event stream ------------------------------------------------------------------

    async def _ensure_stream(self) -> None:
        async with self._lock:
            if self.post_url is not None and not self._lost.is_set():
                return
            assert self._tg is not None
            self._connected = anyio.Event()
            self._lost = anyio.Event()
            failure: list[BridgeError] = []
            self._tg.start_soon(self._read_stream, failure)
            with anyio.move_on_after(self.http.client.timeout.connect or 10.0):
                await self._connected.wait()
            if not self._connected.is_set():
                self._lost.set()
                raise failure[0] if failure else BridgeError.of(
                    BridgeErrorCode.BAD_RESPONSE,
                    f"{self.http.endpoint.display_url} opened an event stream but never sent its endpoint event.",
                )

    async def _read_stream(self, failure: list[BridgeError]) -> None:
        headers = {"accept": "text/event-stream"}
        try:
            async with self.http.open("GET", headers=headers, timeout=self.http.quiet_stream_timeout) as response:
                content_type = media_type(response)
                if content_type != "text/event-stream":
                    failure.append(BridgeError.of(
                        BridgeErrorCode.BAD_RESPONSE,
                        f"{self.http.endpoint.display_url} is not an SSE endpoint (content type {content_type!r}).",
                    ))
                    return
                async for event in iter_events(response.aiter_bytes(), self.http.max_message_bytes):
                    if event.event == "endpoint":
                        self._set_endpoint(event.data.decode("utf-8", "replace"))
                        continue
                    if event.event != "message" or not event.data:
                        continue
                    for message in parse_remote(event.data):
                        await self._on_message(message)
        except BridgeError as error:
            failure.append(error)
        except ConnectionDropped as dropped:
            failure.append(dropped.error)
        except RemoteRpcError as refused:
            failure.append(BridgeError.of(BridgeErrorCode.BAD_RESPONSE, f"The SSE endpoint refused: {refused}",
                                          http_status=refused.http_status))
        except (httpx2.HTTPError, SessionExpired, EventTooLarge) as exc:
            logger.info("legacy SSE stream dropped: %s", type(exc).__name__)
        finally:
            was_connected = self._connected.is_set()
            self._lost.set()
            self.post_url = None if not self._closed else self.post_url
            if was_connected and not self._closed and self._tg is not None:
                self._tg.start_soon(self._recover)

    def _set_endpoint(self, data: str) -> None:
        target = urljoin(self.http.url, data.strip())
        here, there = urlsplit(self.http.url), urlsplit(target)
        if (here.scheme, here.netloc) != (there.scheme, there.netloc):
            logger.error("legacy SSE endpoint points at another origin; refusing it")
            return
        self.post_url = target
        self._connected.set()

    async def _on_message(self, message: Message) -> None:
        if message.is_answer and isinstance(message.id, str) and message.id in self._internal:
            done, box = self._internal.pop(message.id)
            box.append(message)
            done.set()
            return
        if message.is_answer:
            self._waiting.pop(message.id, None)
        await self.sink.deliver(message)

    # --- sending ---------------------------------------------------------------------------

    async def send(self, message: Message, pending: Pending | None) -> None:
        self.state.remember(message)
        if pending is not None:
            assert self._tg is not None
            self._tg.start_soon(self._request, pending)
            return
        try:
            await self._post(message)
        except (BridgeError, ConnectionDropped, RemoteRpcError) as error:
            logger.warning("could not deliver %s to the remote: %s", message.method or "an answer", reason(error))

    async def _request(self, pending: Pending) -> None:
        try:
            self._waiting[pending.id] = pending
            await self._post(pending.message)
        except BridgeError as error:
            self._waiting.pop(pending.id, None)
            await self.sink.fail(pending, error)
        except ConnectionDropped as dropped:
            self._waiting.pop(pending.id, None)
            await self.sink.fail(pending, dropped.error)
        except RemoteRpcError as refused:
            self._waiting.pop(pending.id, None)
            await self.sink.deliver(rpc_error_answer(pending, refused.error))
        except Exception:
            self._waiting.pop(pending.id, None)
            logger.exception("internal error while handling %s", pending.method)
            await self.sink.fail(pending, BridgeError(INTERNAL_ERROR, "Internal bridge error; see the bridge's log."))

    async def _post(self, message: Message, *, internal: bool = False, retried: bool = False) -> None:
        """POST one message to the session's endpoint; desktop messages wait out a recovery in progress."""
        if not internal:
            with anyio.move_on_after(self.http.read_timeout) as waiting:
                if self._recovering:
                    await self._recovered.wait()
                elif self._lost.is_set() and self.state.initialized:
                    await self._recover()
            if waiting.cancelled_caught:
                raise BridgeError.of(
                    BridgeErrorCode.SESSION_LOST,
                    "The remote's event stream dropped and could not be re-opened in time; the bridge keeps trying.",
                )
        await self._ensure_stream()
        assert self.post_url is not None
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        try:
            async with self.http.open("POST", url=self.post_url, body=message.raw, headers=headers,
                                      rpc_method=message.method) as response:
                await response.aread()
        except BridgeError as error:
            if error.data.get("httpStatus") == 404 and not internal and not retried:
                # The server forgot this stream's session: reconnect and send again (it did not run).
                self._lost.set()
                await self._recover()
                await self._post(message, retried=True)
                return
            raise

    # --- recovery ----------------------------------------------------------------------------

    async def _recover(self) -> None:
        """After the stream dropped: reconnect, restore the session, settle what was in flight."""
        if self._recovering:
            await self._recovered.wait()
            return
        self._recovering = True
        self._recovered = anyio.Event()
        try:
            await self._restore()
        finally:
            self._recovering = False
            self._recovered.set()

    async def _restore(self) -> None:
        delay = 0.5
        stranded = list(self._waiting.values())
        while not self._closed:
            try:
                await self._ensure_stream()
                if self.state.init_params is not None and self.state.initialized:
                    await self._call_internal("initialize", self.state.init_params)
                    await self.state.restore(self._call_internal, self._notify_internal)
                break
            except (BridgeError, ConnectionDropped, RemoteRpcError) as error:
                logger.info("legacy SSE reconnect failed (%s); retrying in %.1fs", reason(error), delay)
                await anyio.sleep(delay)
                delay = min(_RECONNECT_MAX, delay * 2)
        for pending in stranded:
            if not self.sink.is_open(pending) or self._waiting.get(pending.id) is not pending:
                continue
            if is_idempotent(pending.method):
                logger.info("resending %s after the event stream dropped", pending.method)
                assert self._tg is not None
                self._tg.start_soon(self._request, pending)
            else:
                self._waiting.pop(pending.id, None)
                await self.sink.fail(pending, BridgeError.of(
                    BridgeErrorCode.OUTCOME_UNKNOWN,
                    f"The remote's event stream dropped before the answer to {pending.method}; it may or may not "
                    "have run, so it was not retried. Check its effect before trying again.",
                ))

    async def _notify_internal(self, method: str) -> None:
        await self._post(classify({"jsonrpc": "2.0", "method": method}), internal=True)

    async def _call_internal(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        request_id = f"alloy-mcp-bridge-sse-{next(self._bridge_ids)}"
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            body["params"] = params
        done = anyio.Event()
        box: list[Message] = []
        self._internal[request_id] = (done, box)
        await self._post(classify(body, dumps(body)), internal=True)
        with anyio.move_on_after(self.http.read_timeout):
            await done.wait()
        if not box:
            self._internal.pop(request_id, None)
            raise BridgeError.of(BridgeErrorCode.REMOTE_TIMEOUT, f"The remote did not answer {method}.")
        result = box[0].body.get("result")
        return result if isinstance(result, dict) else {}
