"""The relay: pumps JSON-RPC between the desktop (stdio) and the remote (an `Upstream`).

It reads each line from stdin, reads its envelope once (kind, id, method), and
forwards the original bytes. It intercepts only what it must:

- malformed lines get a JSON-RPC parse error (-32700, id null) and the bridge
  keeps serving; valid JSON that is not JSON-RPC gets -32600;
- `server/discover` is answered with -32601, which keeps a 2026-era desktop on
  the `initialize` handshake that every remote serves;
- the tool policy hides tools from `tools/list` and refuses `tools/call`;
- every request is entered in the in-flight table so that it is answered
  exactly once, and an answer the remote sends for an unknown id is dropped.

Everything written to stdout passes one door (`_write`) and is strict JSON.
Every error written — the bridge's own and the remote's — is redacted there,
whole (message and data), with every secret the bridge knows: no path can skip
it. Results and notifications are the remote's business and pass unchanged.

At stdin EOF (or SIGTERM) it answers what is still in flight, ends the remote
session and returns promptly.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from bridge.error_answers import ErrorAnswers, plain_error_line
from bridge.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    BridgeError,
    BridgeErrorCode,
    RemoteFailure,
)
from bridge.inflight import DuplicateRequestId, InFlightTable, Pending
from bridge.logs import SecretList
from bridge.messages import (
    InvalidMessage,
    Kind,
    Message,
    NotJson,
    RequestId,
    build_answer,
    decode_messages,
    valid_id,
)
from bridge.policy import ToolPolicy
from bridge.retry import is_idempotent
from bridge.stats import SessionStats
from bridge.stdio import OversizedLine, StdioChannel, StdoutClosed
from bridge.transports import Sink, Upstream

logger = logging.getLogger(__name__)

# At stdin EOF the desktop is leaving; the SDK's stdio client kills the process 2 s after closing stdin.
ANSWER_GRACE = 1.0  # seconds for answers already on their way to reach stdout
SHUTDOWN_GRACE = 0.6  # seconds for the session DELETE


class Relay(Sink):
    """Connects one desktop (stdio) to one remote (an `Upstream`) for the life of the process."""

    def __init__(
        self,
        channel: StdioChannel,
        make_upstream: Callable[[Sink], Upstream],
        policy: ToolPolicy | None = None,
        secrets: SecretList | None = None,
        stats: SessionStats | None = None,
        trace: bool = False,
    ) -> None:
        self.channel = channel
        self.policy = policy or ToolPolicy()
        self.secrets = secrets or SecretList()
        self.errors = ErrorAnswers(self.secrets)
        self.stats = stats or SessionStats()
        self.trace = trace
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
            await self._finish()
            tg.cancel_scope.cancel()

    async def _finish(self) -> None:
        """Answers on their way get a moment; what is left is answered by the bridge; the session ends."""
        with anyio.CancelScope(shield=True):
            if self.inflight and not self._stdout_closed:
                deadline = time.monotonic() + ANSWER_GRACE
                while self.inflight and time.monotonic() < deadline:
                    await anyio.sleep(0.01)
            abandoned = self.inflight.drain()
            if abandoned:
                logger.info("shutting down; %d request(s) still in flight are answered with an error",
                            len(abandoned))
            else:
                logger.info("the desktop disconnected; shutting down")
            with anyio.move_on_after(ANSWER_GRACE):  # a desktop that stopped reading cannot hold the exit
                for pending in abandoned:
                    if not pending.cancelled:
                        await self._write_error(pending.id, _abandoned(pending).error_object(), pending=pending)
            with anyio.move_on_after(SHUTDOWN_GRACE):
                await self.upstream.aclose()
            with anyio.move_on_after(0.3):
                await self.channel.flush()
            logger.info("%s", self.stats.summary())

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
        self.stats.bytes_in += (line.size if isinstance(line, OversizedLine) else len(line)) + 1
        if isinstance(line, OversizedLine):
            logger.warning("dropped a %d-byte message from the desktop: over ALLOY_MAX_MESSAGE_BYTES", line.size)
            error = BridgeError(
                BridgeErrorCode.MESSAGE_TOO_LARGE,
                f"A message of {line.size} bytes exceeds the bridge's limit (ALLOY_MAX_MESSAGE_BYTES).",
            )
            await self._write_error(line.request_id, error.error_object())
            return
        try:
            items, batch = decode_messages(line)
        except NotJson as exc:
            logger.warning("malformed line from the desktop (%d bytes): %s", len(line), exc)
            await self._write_error(None, {"code": PARSE_ERROR, "message": "Parse error: the line is not valid JSON."})
            return
        if batch and not items:
            await self._write_error(None, {"code": INVALID_REQUEST, "message": "Invalid request: empty batch."})
        for item in items:
            if isinstance(item, InvalidMessage):
                await self._write_error(item.request_id, {"code": INVALID_REQUEST,
                                                          "message": f"Invalid request: {item}."})
            else:
                await self._on_message(item)

    async def _on_message(self, message: Message) -> None:
        if self.trace:
            _trace("desktop → remote", message)
        if message.kind is Kind.REQUEST:
            await self._on_request(message)
            return
        if message.method == "notifications/cancelled":
            self._mark_cancelled(message)
        self.upstream.send(message, None)

    async def _on_request(self, message: Message) -> None:
        assert message.id is not None and message.method is not None
        self.stats.calls += 1
        if message.method == "server/discover":
            await self._write_error(message.id, {
                "code": METHOD_NOT_FOUND,
                "message": "Method not found: server/discover. This bridge speaks the initialize handshake.",
            })
            return
        if message.method == "tools/call" and self.policy.active:
            name = message.params.get("name")
            refused = self.policy.refused_call(name)
            if refused is not None:
                error = BridgeError(BridgeErrorCode.TOOL_BLOCKED, refused)
                logger.info("refused tools/call %r (id %r) locally: %s", name, message.id, refused)
                await self._write_error(message.id, error.error_object())
                return
        pending = Pending(message)
        try:
            self.inflight.add(pending)
        except DuplicateRequestId:
            await self._write_error(message.id, {
                "code": INVALID_REQUEST,
                "message": f"Invalid request: id {message.id!r} is already used by a request in flight.",
            })
            return
        self.upstream.send(message, pending)

    def _mark_cancelled(self, message: Message) -> None:
        request_id = message.params.get("requestId")
        pending = self.inflight.get(request_id) if valid_id(request_id) else None
        if pending is not None:
            pending.cancelled = True

    # --- remote -> desktop (Sink) ------------------------------------------------------------

    async def deliver(self, message: Message) -> None:
        """Forward one message from the remote; answers only for requests still in flight."""
        if message.is_answer:
            if message.id is None:  # the remote could not attribute an error to a request (its parse error)
                logger.warning("the remote reported an error without an id: %s",
                               self.secrets.shorten(str(message.error), 200))
                await self._write_error(None, message.error, raw=message.raw)
                return
            pending = self.inflight.answer(message.id)
            if pending is None:
                logger.warning("dropped an answer from the remote for unknown request id %r", message.id)
                return
            if message.kind is Kind.ERROR:
                await self._write_error(pending.id, message.error, raw=message.raw, pending=pending)
                return
            if pending.method == "tools/list" and self.policy.active:
                await self._write_filtered_tools(pending, message)
                return
            if self.trace:
                _trace("remote → desktop", message, pending)
        elif self.trace:
            _trace("remote → desktop", message)
        await self._write(message.raw, newline=True)

    async def fail(self, pending: Pending, failure: RemoteFailure) -> None:
        """Answer a request with the error `failure` stands for, unless it was already answered."""
        if not self.inflight.settle(pending):
            return
        if pending.cancelled:
            logger.debug("%s %r ended after cancellation: %s", pending.method, pending.id, failure.reason)
            return
        logger.warning("%s (id %r) failed: %s", pending.method, pending.id, failure.reason)
        await self._write_error(pending.id, failure.error_object(), pending=pending)

    def is_open(self, pending: Pending) -> bool:
        return self.inflight.get(pending.id) is pending

    async def _write_filtered_tools(self, pending: Pending, message: Message) -> None:
        try:
            filtered = build_answer(pending.id, result=self.policy.filter_tools_result(message.result))
        except (ValueError, InvalidMessage):
            error = BridgeError(BridgeErrorCode.BAD_RESPONSE,
                                "The remote's tools/list result cannot be written as strict JSON.")
            await self._write_error(pending.id, error.error_object(), pending=pending)
            return
        if self.trace:
            _trace("remote → desktop", filtered, pending)
        await self._write(filtered.raw, newline=True)

    # --- the one door to stdout ------------------------------------------------------------------

    async def _write_error(self, request_id: RequestId | None, error: Any, *, raw: bytes | None = None,
                           pending: Pending | None = None) -> None:
        """An error answer, redacted whole; never raises (this runs inside every error path)."""
        try:
            line = self.errors.line(request_id, error, raw)
            code = error.get("code") if isinstance(error, dict) else None
            self.stats.errors[code if isinstance(code, int) else INTERNAL_ERROR] += 1
            if self.trace:
                _trace_error(request_id, code, len(line), pending)
        except Exception:  # noqa: BLE001 - whatever went wrong, the desktop still gets an answer
            logger.exception("could not write an error answer for id %r", request_id)
            line = plain_error_line(request_id)
        await self._write(line, newline=True)

    async def _write(self, data: bytes, *, newline: bool = False) -> None:
        if self._stdout_closed:
            return
        self.stats.bytes_out += len(data) + newline
        try:
            await self.channel.write(data, newline=newline)
        except StdoutClosed:
            self._stdout_closed = True
            self._request_stop()


_trace_log = logging.getLogger("bridge.trace")


def _trace(direction: str, message: Message, pending: Pending | None = None) -> None:
    """One line per message (`ALLOY_TRACE`): never the payload, only its envelope and size."""
    method = message.method or (pending.method if pending is not None else "-")
    took = f" after {(time.monotonic() - pending.started) * 1000:.1f} ms" if pending is not None else ""
    ident = f" id={message.id!r}" if message.id is not None else ""
    _trace_log.info("%s %s %s%s %d B%s", direction, message.kind.value, method, ident, len(message.raw), took)


def _trace_error(request_id: RequestId | None, code: Any, size: int, pending: Pending | None) -> None:
    method = pending.method if pending is not None else "-"
    took = f" after {(time.monotonic() - pending.started) * 1000:.1f} ms" if pending is not None else ""
    _trace_log.info("→ desktop error %s id=%r code=%s %d B%s", method, request_id, code, size, took)


def _abandoned(pending: Pending) -> BridgeError:
    """The answer to a request still in flight when the desktop leaves."""
    what = f"The bridge is shutting down (its input closed) before the remote answered {pending.method}"
    if is_idempotent(pending.method):
        return BridgeError(BridgeErrorCode.REMOTE_UNAVAILABLE, f"{what}.")
    return BridgeError(BridgeErrorCode.OUTCOME_UNKNOWN, f"{what}; it may or may not have run.")
