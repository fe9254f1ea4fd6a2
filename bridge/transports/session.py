"""Session state shared by the transports that keep a remote session (Streamable HTTP, legacy SSE).

- `SessionState`: what a new remote session must be told so the desktop cannot
  tell it from the old one — the desktop's `initialize`, then what it set up
  since and the remote *accepted*: `notifications/initialized`, the log level,
  the resource subscriptions. Replaying a step the remote refused once would
  only fail again; a step that fails on replay is a warning, never a lost session.
- `Gate`: holds desktop messages until the session they need exists (the
  desktop's `initialize`, a re-initialization, the `notifications/initialized`
  that must precede later requests). Each hold is released exactly once, by its
  owner, and sets only its own event: a waiter can never be left on an event
  nobody will set.
- `valid_session_id()`: what an `Mcp-Session-Id` may contain.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from bridge.errors import RemoteFailure, RemoteRpcError
from bridge.inflight import Pending
from bridge.messages import Kind, Message, RequestId

logger = logging.getLogger(__name__)

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]
Notify = Callable[[str], Awaitable[None]]
_MAX_SESSION_ID = 1024


def valid_session_id(value: bytes) -> bool:
    """MCP session ids are visible ASCII (0x21-0x7E): anything else cannot even be sent back."""
    return 0 < len(value) <= _MAX_SESSION_ID and all(0x21 <= byte <= 0x7E for byte in value)


@dataclass
class SessionState:
    init_params: dict[str, Any] | None = None
    initialized: bool = False
    log_level: str | None = None
    subscriptions: set[str] = field(default_factory=set)
    _proposed: dict[RequestId, tuple[str, str]] = field(default_factory=dict)

    def remember(self, message: Message) -> None:
        """Note what one desktop message asks of the session (settings wait for the remote's yes)."""
        method = message.method
        if method is None or not (method == "initialize" or method == "notifications/initialized"
                                  or method == "logging/setLevel" or method.startswith("resources/")):
            return
        params = message.params
        if method == "initialize" and message.kind is Kind.REQUEST:
            self.init_params = params
            self.initialized = False
        elif method == "notifications/initialized":
            self.initialized = True
        elif method == "logging/setLevel" and message.id is not None and isinstance(params.get("level"), str):
            self._proposed[message.id] = (method, params["level"])
        elif method == "resources/subscribe" and message.id is not None and isinstance(params.get("uri"), str):
            self._proposed[message.id] = (method, params["uri"])
        elif method == "resources/unsubscribe" and isinstance(params.get("uri"), str):
            self.subscriptions.discard(params["uri"])  # never replay what the desktop wants gone

    def confirm(self, pending: Pending, answer: Message | None) -> None:
        """The remote answered a request: keep what it accepted, forget what it refused."""
        proposed = self._proposed.pop(pending.id, None) if self._proposed else None
        if proposed is None or answer is None or answer.kind is not Kind.RESPONSE:
            return
        method, value = proposed
        if method == "logging/setLevel":
            self.log_level = value
        else:
            self.subscriptions.add(value)

    def forget(self, pending: Pending) -> None:
        """The request ended without an answer from the remote."""
        if self._proposed:
            self._proposed.pop(pending.id, None)

    async def restore(self, call: Call, notify: Notify) -> None:
        """After the replayed `initialize`: the rest of the handshake, then the desktop's settings.

        A step that fails is logged and skipped (refused steps are dropped for good); the caller's
        request goes through on the new session either way.
        """
        if self.initialized:
            await self._step("notifications/initialized", notify("notifications/initialized"))
        if self.log_level is not None and not await self._step(
                "logging/setLevel", call("logging/setLevel", {"level": self.log_level})):
            self.log_level = None
        for uri in sorted(self.subscriptions):
            if not await self._step(f"resources/subscribe {uri}", call("resources/subscribe", {"uri": uri})):
                self.subscriptions.discard(uri)

    async def _step(self, what: str, step: Awaitable[Any]) -> bool:
        """Run one replay step; False when the remote refused it (drop it), True otherwise."""
        try:
            await step
        except RemoteRpcError as refused:
            logger.warning("the new remote session refused %s (%s); continuing without it", what, refused.reason)
            return False
        except RemoteFailure as failure:
            logger.warning("could not restore %s on the new remote session: %s", what, failure.reason)
        return True

    def describe(self) -> str:
        """What `restore` brings back, for the log."""
        return f"{len(self.subscriptions)} subscription(s)" + (" and the log level" if self.log_level else "")


class Gate:
    """Holds messages until the session they need exists.

    `ticket()` marks a message's place when it arrives; `wait(ticket)` returns once every hold
    taken before that place is released. A hold's owner takes it with `hold()` and must
    `release()` it exactly once (bounded by the owner's own timeouts).
    """

    def __init__(self) -> None:
        self._holds: dict[int, anyio.Event] = {}
        self._next = 0

    def ticket(self) -> int:
        return self._next

    def hold(self) -> int:
        number = self._next
        self._next += 1
        self._holds[number] = anyio.Event()
        return number

    def release(self, number: int) -> None:
        event = self._holds.pop(number, None)
        if event is not None:
            event.set()

    async def wait(self, ticket: int | None = None) -> None:
        """Until every hold taken before `ticket` (None: every hold) is released; no await when none is."""
        while self._holds:
            blocking = next((event for number, event in self._holds.items() if ticket is None or number < ticket),
                            None)
            if blocking is None:
                return
            await blocking.wait()
