"""What a new remote session must be told so the desktop cannot tell it from the old one.

When the remote forgets a session (it expired, restarted, or a legacy SSE
stream dropped), the upstream opens a new one with the desktop's own
`initialize` and then replays, from here, what the desktop had set up since:
`notifications/initialized`, the log level, the resource subscriptions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.messages import Kind, Message


@dataclass
class SessionState:
    init_params: dict[str, Any] | None = None
    initialized: bool = False
    log_level: str | None = None
    subscriptions: set[str] = field(default_factory=set)

    def remember(self, message: Message) -> None:
        """Note what one desktop message changes in the session."""
        params = message.params
        if message.method == "initialize" and message.kind is Kind.REQUEST:
            self.init_params = params
        elif message.method == "notifications/initialized":
            self.initialized = True
        elif message.method == "logging/setLevel" and isinstance(params.get("level"), str):
            self.log_level = params["level"]
        elif message.method == "resources/subscribe" and isinstance(params.get("uri"), str):
            self.subscriptions.add(params["uri"])
        elif message.method == "resources/unsubscribe" and isinstance(params.get("uri"), str):
            self.subscriptions.discard(params["uri"])

    async def restore(
        self,
        call: Callable[[str, dict[str, Any]], Awaitable[Any]],
        notify: Callable[[str], Awaitable[None]],
    ) -> None:
        """After the replayed `initialize`: the rest of the handshake, then the desktop's settings."""
        if self.initialized:
            await notify("notifications/initialized")
        if self.log_level is not None:
            await call("logging/setLevel", {"level": self.log_level})
        for uri in sorted(self.subscriptions):
            await call("resources/subscribe", {"uri": uri})

    def describe(self) -> str:
        """What `restore` brings back, for the log."""
        return f"{len(self.subscriptions)} subscription(s)" + (" and the log level" if self.log_level else "")
