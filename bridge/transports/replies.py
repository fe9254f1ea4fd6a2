"""The bridge's own requests and the answers they wait for.

Some requests are the bridge's, not the desktop's: the replayed `initialize`
and restored subscriptions after a session expiry, `server/discover` for the
2026-07-28 adapter, the `sampling` / `elicitation` / `roots` requests that
adapter asks the desktop. Their ids carry the bridge's prefix (they can never
collide with a desktop id the relay tracks), their answers are consumed here,
never shown to the desktop, and every wait for one is bounded.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import anyio

from bridge.errors import INTERNAL_ERROR, BridgeError, BridgeErrorCode, RemoteRpcError
from bridge.messages import Kind, Message, RequestId, build_request

PREFIX = "alloy-mcp-bridge-"


class Reply:
    """One awaited answer (a fresh event per reply, set once)."""

    __slots__ = ("_arrived", "answer")

    def __init__(self) -> None:
        self._arrived = anyio.Event()
        self.answer: Message | None = None

    def resolve(self, answer: Message) -> None:
        if self.answer is None:
            self.answer = answer
            self._arrived.set()

    async def wait(self, timeout: float, what: str) -> Message:
        """The answer, or a timeout error naming `what` after `timeout` seconds."""
        with anyio.move_on_after(timeout):
            await self._arrived.wait()
        if self.answer is None:
            raise BridgeError(BridgeErrorCode.REMOTE_TIMEOUT, f"No answer to {what} within {timeout:g}s.")
        return self.answer


class Replies:
    """Bridge-owned request ids and the replies awaited for them."""

    def __init__(self, kind: str = "") -> None:
        self._prefix = PREFIX + (f"{kind}-" if kind else "")
        self._ids = itertools.count(1)
        self._waiting: dict[RequestId, Reply] = {}

    def new_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    def request(self, method: str, params: dict[str, Any] | None = None) -> Message:
        """A request with a fresh bridge-owned id."""
        return build_request(self.new_id(), method, params)

    @contextlib.contextmanager
    def expect(self, request_id: RequestId) -> Iterator[Reply]:
        """Await the answer to `request_id` while inside the block; forgotten on the way out, whatever happens."""
        reply = self._waiting[request_id] = Reply()
        try:
            yield reply
        finally:
            if self._waiting.get(request_id) is reply:
                del self._waiting[request_id]

    def resolve(self, message: Message) -> bool:
        """Hand an answer to whoever awaits it; False if nobody does."""
        if message.id is None or not message.is_answer:
            return False
        reply = self._waiting.pop(message.id, None)
        if reply is None:
            return False
        reply.resolve(message)
        return True


def result_of(answer: Message) -> dict[str, Any]:
    """A bridge-owned request's result; an error answer raises `RemoteRpcError` with it."""
    if answer.kind is Kind.ERROR:
        raise RemoteRpcError(answer.error or {"code": INTERNAL_ERROR, "message": "error without details"})
    result = answer.result
    return result if isinstance(result, dict) else {}
