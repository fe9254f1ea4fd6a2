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

The SDK supplies the protocol constants and header rules; it is imported only
when a remote turns out to need this adapter.
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
from bridge.transports.replies import Replies, result_of
from bridge.transports.responses import ResponseReader

logger = logging.getLogger(__name__)

MODERN_VERSION = "2026-07-28"
_MAX_INPUT_ROUNDS = 8
_RESULT_ONLY_FIELDS = ("resultType", "ttlMs", "cacheScope")
_HANDSHAKE_CAPABILITIES = ("experimental", "logging", "completions", "prompts", "resources", "tools", "tasks")
_HEADER_MISMATCH = -32020
_PROTOCOL_META = "io.modelcontextprotocol/"
_LIST_CHANGED = (("toolsListChanged", "tools"), ("promptsListChanged", "prompts"),
                 ("resourcesListChanged", "resources"))


def _object(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (remote data is never trusted to have a shape)."""
    return value if isinstance(value, dict) else {}


def modern_versions_offered(refusal: RemoteRpcError) -> list[str]:
    """The 2026-era versions a -32022 refusal of `initialize` names (empty: not a modern-only remote)."""
    if refusal.code != -32022:
        return []
    data = refusal.error.get("data")
    supported = data.get("supported") if isinstance(data, dict) else None
    return [v for v in supported or [] if isinstance(v, str) and v >= MODERN_VERSION]


class StatelessUpstream(TaskHost):
    """Serves a handshake-era desktop from a 2026-07-28-only remote (see module docstring)."""

    transport_name = "stateless (2026-07-28)"

    def __init__(self, http: RemoteHttp, sink: Sink, version: str = MODERN_VERSION) -> None:
        from mcp.shared import inbound
        from mcp_types import (
            CLIENT_CAPABILITIES_META_KEY,
            CLIENT_INFO_META_KEY,
            LOG_LEVEL_META_KEY,
            PROTOCOL_VERSION_META_KEY,
            SERVER_INFO_META_KEY,
        )
        from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

        self._inbound = inbound
        self._keys = (PROTOCOL_VERSION_META_KEY, CLIENT_INFO_META_KEY, CLIENT_CAPABILITIES_META_KEY)
        self._log_level_key = LOG_LEVEL_META_KEY
        self._server_info_key = SERVER_INFO_META_KEY
        self._handshake_versions = HANDSHAKE_PROTOCOL_VERSIONS
        self._latest_handshake = LATEST_HANDSHAKE_VERSION
        self.http = http
        self.sink = sink
        # Streams are read on the adapter's own behalf: it sees the notifications first (see `deliver`).
        self.reader = ResponseReader(http, self)
        self.version = version
        self._client_info: dict[str, Any] = {}
        self._capabilities: dict[str, Any] = {}
        self._server_capabilities: dict[str, Any] = {}
        self._log_level: str | None = None
        self._subscriptions: set[str] = set()
        self._listen_changed = anyio.Event()
        self._listen_scope: anyio.CancelScope | None = None
        self._listening = False
        self._running: dict[Any, anyio.CancelScope] = {}
        self._own = Replies()
        self._asks = Replies("input")
        self._header_maps: dict[str, Any] = {}

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
            self._log_level = level if isinstance(level, str) else None
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
        self._client_info = _object(params.get("clientInfo"))
        self._capabilities = _object(params.get("capabilities"))
        discovered = await self._call("server/discover", {})
        capabilities = _object(discovered.get("capabilities"))
        self._server_capabilities = capabilities
        requested = params.get("protocolVersion")
        version = requested if requested in self._handshake_versions else self._latest_handshake
        server_info = _object(discovered.get("_meta")).get(self._server_info_key)
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": {k: v for k, v in capabilities.items() if k in _HANDSHAKE_CAPABILITIES},
            "serverInfo": server_info if isinstance(server_info, dict) else {"name": "remote", "version": "unknown"},
        }
        if isinstance(discovered.get("instructions"), str):
            result["instructions"] = discovered["instructions"]
        resources = result["capabilities"].get("resources")
        if isinstance(resources, dict):
            result["capabilities"]["resources"] = {**resources, "subscribe": True}  # served by subscriptions/listen
        logger.info("the remote serves only protocol %s; adapting it for a desktop speaking %s", self.version, version)
        await self._answer(pending, result)
        self._relisten()

    # --- requests ---------------------------------------------------------------------------

    def _envelope(self, params: dict[str, Any]) -> dict[str, Any]:
        meta = dict(params.get("_meta") or {})
        version_key, info_key, capabilities_key = self._keys
        meta[version_key] = self.version
        meta[info_key] = self._client_info
        meta[capabilities_key] = self._capabilities
        if self._log_level is not None:
            meta.setdefault(self._log_level_key, self._log_level)
        return {**params, "_meta": meta}

    def _headers(self, method: str, params: dict[str, Any]) -> dict[str, str]:
        inbound = self._inbound
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
                   inbound.MCP_PROTOCOL_VERSION_HEADER: self.version, inbound.MCP_METHOD_HEADER: method}
        name_key = inbound.NAME_BEARING_METHODS.get(method)
        if name_key is not None and isinstance(params.get(name_key), str):
            headers[inbound.MCP_NAME_HEADER] = inbound.encode_header_value(params[name_key])
        if method == "tools/call" and isinstance(params.get("name"), str):
            header_map = self._header_maps.get(params["name"])
            arguments = params.get("arguments")
            if header_map and isinstance(arguments, dict):
                headers.update(inbound.mcp_param_headers(header_map, arguments))
        return headers

    async def _forward(self, pending: Pending) -> None:
        """Send a desktop request; fulfil `input_required` rounds; deliver the final answer."""
        method = pending.method
        original = self._envelope(pending.message.params)
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
                    self._learn_tool_headers(result)
                await self._answer(pending, self._for_desktop(result))
                return
            responses: dict[str, Any] = {}
            for key, request in _object(result.get("inputRequests")).items():
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
        headers = self._headers(method, params)
        try:
            async with self.http.open("POST", body=request.raw, headers=headers, rpc_method=method,
                                      timeout=self.http.quiet_stream_timeout if quiet else None) as response:
                return await self.reader.fetch_answer(response, request, lambda: dict(headers), quiet=quiet)
        except RemoteRpcError as refused:
            return build_answer(request_id, error=refused.error)

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A bridge-owned request; returns its result."""
        answer = await self._exchange(self._own.new_id(), method, self._envelope(params))
        return result_of(answer)

    # --- what streams back (the reader's sink) ----------------------------------------------------

    async def deliver(self, message: Message) -> None:
        """A message on a response stream that is not the answer being read: forward notifications only."""
        if message.kind is not Kind.NOTIFICATION:
            logger.debug("dropped a %s from the remote on a 2026-07-28 stream", message.kind.value)
            return
        if message.method == "notifications/subscriptions/acknowledged":
            return
        meta = message.params.get("_meta")
        if isinstance(meta, dict) and any(k.startswith(_PROTOCOL_META) for k in meta):
            # Stamps of the 2026 wire (the subscription id, the server info) mean nothing to the desktop.
            params = {k: v for k, v in message.params.items() if k != "_meta"}
            kept = {k: v for k, v in meta.items() if not k.startswith(_PROTOCOL_META)}
            if kept:
                params["_meta"] = kept
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

    def _for_desktop(self, result: dict[str, Any]) -> dict[str, Any]:
        """Strip what a handshake-era result does not have."""
        cleaned = {k: v for k, v in result.items() if k not in _RESULT_ONLY_FIELDS}
        meta = cleaned.get("_meta")
        if isinstance(meta, dict) and self._server_info_key in meta:
            meta = {k: v for k, v in meta.items() if k != self._server_info_key}
            if meta:
                cleaned["_meta"] = meta
            else:
                cleaned.pop("_meta")
        return cleaned

    async def _relearn_tools(self) -> None:
        cursor = None
        for _ in range(100):
            listed = await self._call("tools/list", {"cursor": cursor} if cursor else {})
            self._learn_tool_headers(listed)
            cursor = listed.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                return

    def _learn_tool_headers(self, result: dict[str, Any]) -> None:
        """Remember which tool arguments a `tools/call` must mirror as `Mcp-Param-*` headers."""
        for tool in result.get("tools") or []:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                schema = tool.get("inputSchema")
                try:
                    if self._inbound.find_invalid_x_mcp_header(schema) is None:
                        self._header_maps[tool["name"]] = self._inbound.x_mcp_header_map(schema)
                except (TypeError, ValueError, AttributeError):
                    continue

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
                                                  self._envelope({"notifications": wanted}), quiet=True)
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
