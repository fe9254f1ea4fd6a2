"""Bridging a handshake-era desktop to a remote that serves only the 2026-07-28 revision.

Such a remote refuses `initialize` with -32022: it has no sessions, no GET
stream and no server-to-client requests. Each request instead carries its own
envelope in `_meta` (protocol version, client info, client capabilities), and
a request that needs the user or the model answers with an `input_required`
result that the client fulfils and retries. This adapter makes that look like
the handshake era the desktop speaks:

- `initialize` is answered locally from `server/discover`; `notifications/initialized`
  and `ping` stay local; `logging/setLevel` is remembered and sent as the per-request
  log-level opt-in;
- every other request is sent with the envelope (built from the desktop's own
  `initialize`: its client info and capabilities, unchanged) and the routing headers
  (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`);
- an `input_required` result becomes real `sampling/createMessage`,
  `elicitation/create` and `roots/list` requests to the desktop, whose answers
  are sent back with the retried request, as often as the remote asks (bounded);
- `resources/subscribe` and list-changed notifications map onto one
  `subscriptions/listen` stream, re-opened when the subscriptions change;
- `notifications/cancelled` closes the request's response stream (the 2026
  spelling of cancellation);
- every wait is bounded: a request to the desktop unanswered after
  `ALLOY_READ_TIMEOUT` fails the tool call that needed it;
- fields the desktop's revision does not have (`resultType`, `ttlMs`, `cacheScope`,
  the server-info and subscription-id stamps in `_meta`) are stripped.

The translation itself (envelope, routing headers, what the desktop must not see) is
`modern_wire.py`; this module runs the exchanges.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc

from bridge.errors import INTERNAL_ERROR, BridgeError, BridgeErrorCode, RemoteFailure, RemoteRpcError, bad_response
from bridge.http import RemoteHttp
from bridge.inflight import Pending
from bridge.messages import InvalidMessage, Kind, Message, build_answer, build_request, valid_id
from bridge.retry import Backoff
from bridge.transports.base import Sink, TaskHost
from bridge.transports.modern_wire import (
    MODERN_VERSION,
    ModernWire,
    json_object,
    notification_params_for_desktop,
)
from bridge.transports.replies import Replies, result_of
from bridge.transports.responses import ResponseReader

logger = logging.getLogger(__name__)

_MAX_INPUT_ROUNDS = 8
_HEADER_MISMATCH = -32020
_LIST_CHANGED = (("toolsListChanged", "tools"), ("promptsListChanged", "prompts"),
                 ("resourcesListChanged", "resources"))


class StatelessUpstream(TaskHost):
    """Serves a handshake-era desktop from a 2026-07-28-only remote (see module docstring)."""

    transport_name = "stateless (2026-07-28)"

    def __init__(self, http: RemoteHttp, sink: Sink, version: str = MODERN_VERSION) -> None:
        self.wire = ModernWire(version)
        self.http = http
        self.sink = sink
        # Streams are read on the adapter's own behalf: it sees the notifications first (see `deliver`).
        self.reader = ResponseReader(http, self)
        self._server_capabilities: dict[str, Any] = {}
        self._subscriptions: set[str] = set()
        self._listen_changed = anyio.Event()
        self._listen_scope: anyio.CancelScope | None = None
        self._listening = False
        self._running: dict[Any, anyio.CancelScope] = {}
        self._own = Replies()
        self._asks = Replies("input")

    async def aclose(self) -> None:
        """Nothing to end on the remote: 2026-07-28 has no sessions."""
        self.stop_tasks()

    # --- the desktop's messages ----------------------------------------------------------------

    def send(self, message: Message, pending: Pending | None) -> None:
        if pending is None:
            self._one_way(message)
            return
        method = pending.method
        if method == "initialize":
            self.spawn_request(pending, self._cancellable, self.answer_initialize)
        elif method == "ping":
            self.spawn_request(pending, self._answer, {})
        elif method == "logging/setLevel":
            level = message.params.get("level")
            self.wire.log_level = level if isinstance(level, str) else None
            self.spawn_request(pending, self._answer, {})
        elif method in ("resources/subscribe", "resources/unsubscribe"):
            uri = message.params.get("uri")
            if isinstance(uri, str):
                (self._subscriptions.add if method == "resources/subscribe" else self._subscriptions.discard)(uri)
                self._relisten()
            self.spawn_request(pending, self._answer, {})
        else:
            self.spawn_request(pending, self._cancellable, self._forward)

    def _one_way(self, message: Message) -> None:
        """Notifications have no 2026 HTTP spelling; answers settle the bridge's own questions."""
        if message.is_answer:
            if not self._asks.resolve(message):
                logger.debug("dropped an answer from the desktop for unknown id %r", message.id)
            return
        if message.method == "notifications/cancelled":
            request_id = message.params.get("requestId")
            scope = self._running.get(request_id) if valid_id(request_id) else None
            if scope is not None:
                scope.cancel()  # closing the response stream is the 2026 cancellation
            return
        logger.debug("%s has no 2026-07-28 equivalent; not forwarded", message.method)

    async def _cancellable(self, pending: Pending, handler: Any) -> None:
        """Run one request's handler so that the desktop's `notifications/cancelled` can end it."""
        with anyio.CancelScope() as scope:
            self._running[pending.id] = scope
            try:
                await handler(pending)
            finally:
                self._running.pop(pending.id, None)
        if scope.cancelled_caught:
            raise BridgeError(BridgeErrorCode.REMOTE_ERROR, "Cancelled by the desktop.")

    async def _answer(self, pending: Pending, result: dict[str, Any]) -> None:
        try:
            answer = build_answer(pending.id, result=result)
        except (ValueError, InvalidMessage):
            raise bad_response(f"The remote's answer to {pending.method} cannot be written as strict JSON.") from None
        await self.sink.deliver(answer)

    # --- initialize --------------------------------------------------------------------------

    async def answer_initialize(self, pending: Pending) -> None:
        """Answer the desktop's `initialize` from the remote's `server/discover`."""
        params = pending.message.params
        self.wire.client_info = json_object(params.get("clientInfo"))
        self.wire.capabilities = json_object(params.get("capabilities"))
        discovered = await self._call("server/discover", {})
        self._server_capabilities = json_object(discovered.get("capabilities"))
        result = self.wire.initialize_result(discovered, params.get("protocolVersion"))
        logger.info("the remote serves only protocol %s; adapting it for a desktop speaking %s",
                    self.wire.version, result["protocolVersion"])
        await self._answer(pending, result)
        self._relisten()

    # --- requests ---------------------------------------------------------------------------

    async def _forward(self, pending: Pending) -> None:
        """Send a desktop request; fulfil `input_required` rounds; deliver the final answer."""
        method = pending.method
        original = self.wire.envelope(pending.message.params)
        params = original
        relisted = False
        for _ in range(_MAX_INPUT_ROUNDS):
            answer = await self._exchange(pending.id, method, params)
            if answer.kind is Kind.ERROR and answer.error.get("code") == _HEADER_MISMATCH and not relisted:
                # The tool's Mcp-Param-* headers are unknown or stale: learn them and send the same round
                # again (it did not run), with this round's input responses and request state.
                relisted = True
                await self._relearn_tools()
                answer = await self._exchange(pending.id, method, params)
            if answer.kind is Kind.ERROR:
                await self.sink.deliver(answer)
                return
            result = answer.result
            result = result if isinstance(result, dict) else {}
            if result.get("resultType") != "input_required":
                if method == "tools/list":
                    self.wire.learn_tool_headers(result)
                await self._answer(pending, self.wire.for_desktop(result))
                return
            responses: dict[str, Any] = {}
            for key, request in json_object(result.get("inputRequests")).items():
                responses[key] = await self._ask_desktop(request)
            params = dict(original)
            if responses:
                params["inputResponses"] = responses
            if result.get("requestState") is not None:
                params["requestState"] = result["requestState"]
        raise bad_response(f"The remote asked for input more than {_MAX_INPUT_ROUNDS} times for {method}; giving up.")

    async def _ask_desktop(self, request: Any) -> dict[str, Any]:
        """Turn one input request into a real request to the desktop and wait (bounded) for its answer."""
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            raise bad_response("The remote sent a malformed input request.")
        params = request.get("params") if isinstance(request.get("params"), dict) else None
        try:
            question = build_request(self._asks.new_id(), request["method"], params)
        except (ValueError, InvalidMessage):
            raise bad_response("The remote sent an input request that cannot be written as strict JSON.") from None
        assert question.id is not None
        with self._asks.expect(question.id) as reply:
            await self.sink.deliver(question)
            answer = await reply.wait(self.http.read_timeout, f"the desktop's {request['method']}")
        if answer.kind is Kind.ERROR:
            error = answer.error
            raise RemoteRpcError({"code": error.get("code", INTERNAL_ERROR),
                                  "message": f"The desktop refused {request['method']}: {error.get('message')}"})
        result = answer.result
        return result if isinstance(result, dict) else {}

    async def _exchange(self, request_id: Any, method: str, params: dict[str, Any], *, quiet: bool = False) -> Message:
        """POST one request; forward the notifications that stream before its answer; return the answer."""
        try:
            request = build_request(request_id, method, params)
        except (ValueError, InvalidMessage):
            raise bad_response(f"The request {method} cannot be written as strict JSON.") from None
        headers = self.wire.headers(method, params)
        try:
            async with self.http.open("POST", body=request.raw, headers=headers, rpc_method=method,
                                      timeout=self.http.quiet_stream_timeout if quiet else None) as response:
                return await self.reader.fetch_answer(response, request, lambda: dict(headers), quiet=quiet)
        except RemoteRpcError as refused:
            return build_answer(request_id, error=refused.error)

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A bridge-owned request; returns its result."""
        answer = await self._exchange(self._own.new_id(), method, self.wire.envelope(params))
        return result_of(answer)

    # --- what streams back (the reader's sink) ----------------------------------------------------

    async def deliver(self, message: Message) -> None:
        """A message on a response stream that is not the answer being read: forward notifications only."""
        if message.kind is not Kind.NOTIFICATION:
            logger.debug("dropped a %s from the remote on a 2026-07-28 stream", message.kind.value)
            return
        if message.method == "notifications/subscriptions/acknowledged":
            return
        params = notification_params_for_desktop(message.params)
        if params is not None:  # stamps of the 2026 wire (subscription id, server info) mean nothing to the desktop
            try:
                message = Message.from_body({"jsonrpc": "2.0", "method": message.method, "params": params})
            except (ValueError, InvalidMessage):
                logger.warning("dropped a %s from the remote that cannot be written as strict JSON", message.method)
                return
        await self.sink.deliver(message)

    async def fail(self, pending: Pending, failure: RemoteFailure) -> None:
        await self.sink.fail(pending, failure)

    def is_open(self, pending: Pending) -> bool:
        return self.sink.is_open(pending)

    async def _relearn_tools(self) -> None:
        cursor = None
        for _ in range(100):
            listed = await self._call("tools/list", {"cursor": cursor} if cursor else {})
            self.wire.learn_tool_headers(listed)
            cursor = listed.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                return

    # --- subscriptions ----------------------------------------------------------------------

    def _relisten(self) -> None:
        """(Re)open the `subscriptions/listen` stream with the current filter."""
        self._listen_changed.set()
        if self._listen_scope is not None:
            self._listen_scope.cancel()
        if not self._listening and self._tg is not None:
            self._listening = True
            self.spawn(self._listen)

    def _filter(self) -> dict[str, Any]:
        wanted: dict[str, Any] = {}
        for flag, capability in _LIST_CHANGED:
            entry = self._server_capabilities.get(capability)
            if isinstance(entry, dict) and entry.get("listChanged"):
                wanted[flag] = True
        if self._subscriptions:
            wanted["resourceSubscriptions"] = sorted(self._subscriptions)
        return wanted

    async def _listen(self) -> None:
        backoff = Backoff()
        while not self._closed:
            self._listen_changed = anyio.Event()
            wanted = self._filter()
            if not wanted:
                await self._listen_changed.wait()
                continue
            with anyio.CancelScope() as scope:
                self._listen_scope = scope
                try:
                    answer = await self._exchange(self._own.new_id(), "subscriptions/listen",
                                                  self.wire.envelope({"notifications": wanted}), quiet=True)
                    if answer.kind is Kind.ERROR:
                        logger.warning("the remote refused subscriptions/listen: %s", answer.error.get("message"))
                        await self._listen_changed.wait()
                        continue
                    backoff.reset()
                except RemoteFailure as failure:
                    logger.info("subscription stream ended (%s); re-opening", failure.reason)
                except Exception:  # the subscription stream must never take the bridge down
                    logger.exception("subscription stream failed; re-opening")
            self._listen_scope = None
            if scope.cancelled_caught or self._listen_changed.is_set():
                continue
            await anyio.sleep(backoff.next_delay())
