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
- fields the desktop's revision does not have (`resultType`, `ttlMs`, `cacheScope`,
  the server-info and subscription-id stamps in `_meta`) are stripped.

The SDK supplies the protocol constants and header rules; it is imported only
when a remote turns out to need this adapter.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import anyio
import anyio.abc
import httpx2

from bridge.contracts import Sink, TaskHost
from bridge.errors import INTERNAL_ERROR, BridgeError, BridgeErrorCode
from bridge.http import ConnectionDropped, RemoteHttp, RemoteRpcError
from bridge.inflight import Pending
from bridge.messages import Kind, Message, classify, dumps
from bridge.responses import ResponseReader, reason, rpc_error_answer

logger = logging.getLogger("bridge.modern")

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


def _code(answer: Message) -> int | None:
    error = answer.body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) else None


def modern_versions_offered(refusal: RemoteRpcError) -> list[str]:
    """The 2026-era versions a -32022 refusal of `initialize` names (empty: not a modern-only remote)."""
    if refusal.code != -32022:
        return []
    data = refusal.error.get("data")
    supported = data.get("supported") if isinstance(data, dict) else None
    return [v for v in supported or [] if isinstance(v, str) and v >= MODERN_VERSION]


class ModernUpstream(TaskHost):
    """Serves a handshake-era desktop from a 2026-07-28-only remote (see module docstring)."""

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
        self._asks: dict[str, tuple[anyio.Event, list[Message]]] = {}
        self._header_maps: dict[str, Any] = {}
        self._ids = itertools.count(1)

    async def aclose(self) -> None:
        """Nothing to end on the remote: 2026-07-28 has no sessions."""
        self.stop_tasks()

    # --- the desktop's messages ----------------------------------------------------------------

    async def send(self, message: Message, pending: Pending | None) -> None:
        if pending is None:
            self._one_way(message)
            return
        assert self._tg is not None
        method = pending.method
        if method == "initialize":
            self._tg.start_soon(self._guard, pending, self.answer_initialize)
        elif method == "ping":
            await self._answer(pending, {})
        elif method == "logging/setLevel":
            level = message.params.get("level")
            self._log_level = level if isinstance(level, str) else None
            await self._answer(pending, {})
        elif method in ("resources/subscribe", "resources/unsubscribe"):
            uri = message.params.get("uri")
            if isinstance(uri, str):
                (self._subscriptions.add if method == "resources/subscribe" else self._subscriptions.discard)(uri)
                self._relisten()
            await self._answer(pending, {})
        else:
            self._tg.start_soon(self._guard, pending, self._forward)

    def _one_way(self, message: Message) -> None:
        """Notifications have no 2026 HTTP spelling; answers settle the bridge's own questions."""
        if message.is_answer:
            waiter = self._asks.pop(message.id, None) if isinstance(message.id, str) else None
            if waiter is not None:
                waiter[1].append(message)
                waiter[0].set()
            else:
                logger.debug("dropped an answer from the desktop for unknown id %r", message.id)
            return
        if message.method == "notifications/cancelled":
            scope = self._running.get(message.params.get("requestId"))
            if scope is not None:
                scope.cancel()  # closing the response stream is the 2026 cancellation
            return
        logger.debug("%s has no 2026-07-28 equivalent; not forwarded", message.method)

    async def _guard(self, pending: Pending, handler: Any) -> None:
        """Run one request's handler; every failure ends as an answer to that request."""
        with anyio.CancelScope() as scope:
            self._running[pending.id] = scope
            try:
                await handler(pending)
            except RemoteRpcError as refused:
                await self.sink.deliver(rpc_error_answer(pending, refused.error))
            except BridgeError as error:
                await self.sink.fail(pending, error)
            except ConnectionDropped as dropped:
                await self.sink.fail(pending, dropped.error)
            except Exception:
                logger.exception("internal error while handling %s", pending.method)
                await self.sink.fail(pending, BridgeError(INTERNAL_ERROR, "Internal bridge error; see its log."))
            finally:
                self._running.pop(pending.id, None)
        if scope.cancelled_caught:
            await self.sink.fail(pending, BridgeError.of(BridgeErrorCode.REMOTE_ERROR, "Cancelled by the desktop."))

    async def _answer(self, pending: Pending, result: dict[str, Any]) -> None:
        body = {"jsonrpc": "2.0", "id": pending.id, "result": result}
        await self.sink.deliver(classify(body, dumps(body)))

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
        params = self._envelope(pending.message.params)
        original = dict(params)
        relisted = False
        for _ in range(_MAX_INPUT_ROUNDS):
            answer = await self._exchange(pending.id, method, params)
            if answer.kind is Kind.ERROR and _code(answer) == _HEADER_MISMATCH and not relisted:
                # The tool's Mcp-Param-* headers are unknown or stale: learn them and send again (it did not run).
                relisted = True
                await self._relearn_tools()
                answer = await self._exchange(pending.id, method, self._envelope(pending.message.params))
            if answer.kind is Kind.ERROR:
                await self.sink.deliver(answer)
                return
            result = answer.body.get("result")
            result = result if isinstance(result, dict) else {}
            if result.get("resultType") != "input_required":
                if method == "tools/list":
                    self._learn_tool_headers(result)
                body = {"jsonrpc": "2.0", "id": pending.id, "result": self._for_desktop(result)}
                await self.sink.deliver(classify(body, dumps(body)))
                return
            responses: dict[str, Any] = {}
            for key, request in _object(result.get("inputRequests")).items():
                responses[key] = await self._ask_desktop(request)
            params = dict(original)
            if responses:
                params["inputResponses"] = responses
            if result.get("requestState") is not None:
                params["requestState"] = result["requestState"]
        raise BridgeError.of(
            BridgeErrorCode.BAD_RESPONSE,
            f"The remote asked for input more than {_MAX_INPUT_ROUNDS} times for {method}; giving up.",
        )

    async def _ask_desktop(self, request: Any) -> dict[str, Any]:
        """Turn one input request into a real request to the desktop and wait for its answer."""
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            raise BridgeError.of(BridgeErrorCode.BAD_RESPONSE, "The remote sent a malformed input request.")
        request_id = f"alloy-mcp-bridge-input-{next(self._ids)}"
        done: anyio.Event = anyio.Event()
        box: list[Message] = []
        self._asks[request_id] = (done, box)
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": request["method"]}
        if isinstance(request.get("params"), dict):
            body["params"] = request["params"]
        try:
            await self.sink.deliver(classify(body, dumps(body)))
            await done.wait()
        finally:
            self._asks.pop(request_id, None)
        answer = box[0]
        if answer.kind is Kind.ERROR:
            error = answer.body["error"]
            raise RemoteRpcError({"code": error.get("code", INTERNAL_ERROR),
                                  "message": f"The desktop refused {request['method']}: {error.get('message')}"}, 200)
        result = answer.body.get("result")
        return result if isinstance(result, dict) else {}

    async def _exchange(
        self, request_id: Any, method: str, params: dict[str, Any], timeout: httpx2.Timeout | None = None
    ) -> Message:
        """POST one request; forward the notifications that stream before its answer; return the answer."""
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        request = classify(body, dumps(body))
        headers = self._headers(method, params)
        try:
            async with self.http.open("POST", body=request.raw, headers=headers, rpc_method=method,
                                      timeout=timeout) as response:
                return await self.reader.fetch_answer(response, request, lambda: dict(headers))
        except RemoteRpcError as refused:
            error_body = {"jsonrpc": "2.0", "id": request_id, "error": refused.error}
            return classify(error_body, dumps(error_body))

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A bridge-owned request; returns its result."""
        request_id = f"alloy-mcp-bridge-{next(self._ids)}"
        answer = await self._exchange(request_id, method, self._envelope(params))
        if answer.kind is Kind.ERROR:
            raise RemoteRpcError(answer.body["error"], 200)
        result = answer.body.get("result")
        return result if isinstance(result, dict) else {}

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
            body = {"jsonrpc": "2.0", "method": message.method, "params": params}
            message = classify(body, dumps(body))
        await self.sink.deliver(message)

    async def fail(self, pending: Pending, error: BridgeError) -> None:
        await self.sink.fail(pending, error)

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
            self._tg.start_soon(self._listen)

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
        delay = 1.0
        while not self._closed:
            self._listen_changed = anyio.Event()
            wanted = self._filter()
            if not wanted:
                await self._listen_changed.wait()
                continue
            with anyio.CancelScope() as scope:
                self._listen_scope = scope
                try:
                    answer = await self._exchange(f"alloy-mcp-bridge-listen-{next(self._ids)}",
                                                  "subscriptions/listen",
                                                  self._envelope({"notifications": wanted}),
                                                  self.http.quiet_stream_timeout)
                    if answer.kind is Kind.ERROR:
                        logger.warning("the remote refused subscriptions/listen: %s",
                                       answer.body["error"].get("message"))
                        await self._listen_changed.wait()
                        continue
                    delay = 1.0
                except (BridgeError, ConnectionDropped) as exc:
                    logger.info("subscription stream ended (%s); re-opening in %.0fs", reason(exc), delay)
                except Exception:  # the subscription stream must never take the bridge down
                    logger.exception("subscription stream failed; re-opening in %.0fs", delay)
            self._listen_scope = None
            if scope.cancelled_caught or self._listen_changed.is_set():
                continue
            await anyio.sleep(delay)
            delay = min(30.0, delay * 2)
