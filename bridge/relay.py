"""The relay: pumps JSON-RPC between the desktop (stdio) and the remote (an `Upstream`).

It reads each line from stdin, parses it once to learn its kind, id and method,
and forwards the original bytes. It intercepts only what it must:

- malformed lines get a JSON-RPC parse error (-32700, id null) and the bridge
  keeps serving; valid JSON that is not JSON-RPC gets -32600;
- `server/discover` is answered with -32601, which keeps a 2026-era desktop on
  the `initialize` handshake that every remote serves;
- the tool policy hides tools from `tools/list` and refuses `tools/call`;
- every request is entered in the in-flight table so that it is answered
  exactly once, and an answer the remote sends for an unknown id is dropped.

At stdin EOF (or SIGTERM) it ends the remote session and returns promptly,
even with calls in flight.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from bridge.contracts import Sink, Upstream
from bridge.errors import (
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    BridgeError,
    BridgeErrorCode,
    bridge_error_line,
    error_line,
)
from bridge.inflight import DuplicateRequestId, InFlightTable, Pending
from bridge.messages import InvalidMessage, Kind, Message, RequestId, classify, dumps, parse
from bridge.policy import ToolPolicy
from bridge.stdio import OversizedLine, StdioChannel, StdoutClosed

logger = logging.getLogger("bridge.relay")

# At stdin EOF the desktop is leaving; the SDK's stdio client kills the process 2 s after closing stdin.
ANSWER_GRACE = 0.7  # seconds for answers already on their way to reach stdout
SHUTDOWN_GRACE = 0.8  # seconds for the session DELETE


class Relay(Sink):
    """Connects one desktop (stdio) to one remote (an `Upstream`) for the life of the process."""

    def __init__(
        self,
        channel: StdioChannel,
        make_upstream: Callable[[Sink], Upstream],
        policy: ToolPolicy | None = None,
    ) -> None:
        self.channel = channel
        self.policy = policy or ToolPolicy()
        self.inflight = InFlightTable()
        self.upstream = make_upstream(self)
        self._stdout_closed = False
        self._stop: anyio.CancelScope | None = None

    async def run(self) -> None:
        """Relay until stdin ends, stdout closes, or a termination signal arrives."""
        async with anyio.create_task_group() as tg:
            await tg.start(self.upstream.run)
            tg.start_soon(self._watch_signals)
            with anyio.CancelScope() as self._stop:
                try:
                    async for line in self.channel.lines():
                        await self._on_line(line)
                except StdoutClosed:
                    pass
            if self.inflight and not self._stdout_closed:
                deadline = time.monotonic() + ANSWER_GRACE
                while self.inflight and time.monotonic() < deadline:
                    await anyio.sleep(0.01)
            if self.inflight:
                logger.info("shutting down; %d request(s) still in flight are abandoned", len(self.inflight))
            else:
                logger.info("the desktop disconnected; shutting down")
            self.inflight.drain()
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_GRACE):
                await self.upstream.aclose()
            with anyio.CancelScope(shield=True), anyio.move_on_after(0.3):
                await self.channel.flush()
            tg.cancel_scope.cancel()

    async def _watch_signals(self) -> None:
        """SIGTERM, SIGINT and SIGHUP end the session cleanly, like stdin EOF (POSIX only)."""
        wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)]
        try:
            with anyio.open_signal_receiver(*wanted) as signals:
                async for signum in signals:
                    logger.info("received %s; shutting down", signal.Signals(signum).name)
                    self._request_stop()
                    return
        except NotImplementedError:  # pragma: no cover - Windows has no signal receiver in anyio
            await anyio.sleep_forever()

    def _request_stop(self) -> None:
        if self._stop is not None:
            self._stop.cancel()

    # --- desktop -> remote -----------------------------------------------------------------

    async def _on_line(self, line: bytes | OversizedLine) -> None:
        if isinstance(line, OversizedLine):
            logger.warning("dropped a %d-byte message from the desktop: over ALLOY_MAX_MESSAGE_BYTES", line.size)
            error = BridgeError.of(
                BridgeErrorCode.MESSAGE_TOO_LARGE,
                f"A message of {line.size} bytes exceeds the bridge's limit (ALLOY_MAX_MESSAGE_BYTES).",
            )
            await self._write(bridge_error_line(_id_from_head(line.head), error))
            return
        try:
            body = parse(line)
        except ValueError as exc:
            logger.warning("malformed line from the desktop (%d bytes): %s", len(line), type(exc).__name__)
            await self._write(error_line(None, PARSE_ERROR, "Parse error: the line is not valid JSON."))
            return
        if isinstance(body, list):
            if not body:
                await self._write(error_line(None, INVALID_REQUEST, "Invalid request: empty batch."))
            for item in body:
                await self._on_item(item, None)
            return
        await self._on_item(body, line)

    async def _on_item(self, body: Any, raw: bytes | None) -> None:
        try:
            message = classify(body, raw)
        except InvalidMessage as exc:
            await self._write(error_line(exc.request_id, INVALID_REQUEST, f"Invalid request: {exc}."))
            return
        if message.kind is Kind.REQUEST:
            await self._on_request(message)
        elif message.is_answer and message.id is None:
            logger.warning("the desktop reported an error without an id: %s", _short(message.body.get("error")))
        else:
            if message.method == "notifications/cancelled":
                self._mark_cancelled(message)
            await self.upstream.send(message, None)

    async def _on_request(self, message: Message) -> None:
        assert message.id is not None and message.method is not None
        if message.method == "server/discover":
            await self._write(error_line(
                message.id, METHOD_NOT_FOUND,
                "Method not found: server/discover. This bridge speaks the initialize handshake.",
            ))
            return
        if message.method == "tools/call" and self.policy.active:
            name = message.params.get("name")
            if not isinstance(name, str) or not self.policy.permits(name):
                error = BridgeError.of(BridgeErrorCode.TOOL_BLOCKED,
                                       f"Tool {name!r} is blocked by the bridge's tool policy.")
                await self._write(bridge_error_line(message.id, error))
                return
        pending = Pending(message)
        try:
            self.inflight.add(pending)
        except DuplicateRequestId:
            await self._write(error_line(
                message.id, INVALID_REQUEST,
                f"Invalid request: id {message.id!r} is already used by a request in flight.",
            ))
            return
        await self.upstream.send(message, pending)

    def _mark_cancelled(self, message: Message) -> None:
        request_id = message.params.get("requestId")
        pending = self.inflight.get(request_id) if isinstance(request_id, (str, int)) else None
        if pending is not None:
            pending.cancelled = True

    # --- remote -> desktop (Sink) ------------------------------------------------------------

    async def deliver(self, message: Message) -> None:
        """Forward one message from the remote; answers only for requests still in flight."""
        if message.is_answer:
            if message.id is None:
                logger.warning("the remote reported an error without an id: %s", _short(message.body.get("error")))
                return
            pending = self.inflight.answer(message.id)
            if pending is None:
                logger.warning("dropped an answer from the remote for unknown request id %r", message.id)
                return
            if pending.method == "tools/list" and self.policy.active and message.kind is Kind.RESPONSE:
                body = {**message.body, "result": self.policy.filter_tools_result(message.body.get("result"))}
                message = classify(body, dumps(body))
        await self._write(message.raw, newline=True)

    async def fail(self, pending: Pending, error: BridgeError) -> None:
        """Answer a request with the bridge's error, unless it was already answered."""
        if not self.inflight.settle(pending):
            return
        if pending.cancelled:
            logger.debug("%s %r ended after cancellation: %s", pending.method, pending.id, error.message)
            return
        logger.warning("%s (id %r) failed: %s", pending.method, pending.id, error.message)
        await self._write(bridge_error_line(pending.id, error))

    def is_open(self, pending: Pending) -> bool:
        return self.inflight.get(pending.id) is pending

    async def _write(self, data: bytes, *, newline: bool = False) -> None:
        if self._stdout_closed:
            return
        try:
            await self.channel.write(data, newline=newline)
        except StdoutClosed:
            self._stdout_closed = True
            self._request_stop()


_ID_IN_HEAD = re.compile(rb'"id"\s*:\s*("(?:[^"\\]|\\.){0,200}"|-?\d{1,19})\s*[,}]')


def _id_from_head(head: bytes) -> RequestId | None:
    """The request id of a message too large to parse, read from its first bytes (best effort)."""
    match = _ID_IN_HEAD.search(head)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if isinstance(value, (str, int)) else None


def _short(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"
