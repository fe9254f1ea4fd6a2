"""The in-flight table: every request from the desktop ends exactly one way.

A request is registered when it arrives from the desktop and removed by the
first of: its answer from the remote, or a failure the bridge reports. Any
later answer or failure for the same request finds nothing and is dropped, so
the desktop never sees a request answered twice — whatever races happen
between a session re-initialization, a resend and a late reply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bridge.messages import Message, RequestId


@dataclass(eq=False, slots=True)
class Pending:
    """One desktop request the bridge still owes an answer."""

    message: Message
    cancelled: bool = False
    resent: int = field(default=0)
    started: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> RequestId:
        assert self.message.id is not None
        return self.message.id

    @property
    def method(self) -> str:
        assert self.message.method is not None
        return self.message.method


class DuplicateRequestId(Exception):
    """The desktop reused the id of a request that is still in flight."""


class InFlightTable:
    """Requests awaiting an answer, by id."""

    def __init__(self) -> None:
        self._pending: dict[RequestId, Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, pending: Pending) -> None:
        if pending.id in self._pending:
            raise DuplicateRequestId(pending.id)
        self._pending[pending.id] = pending

    def get(self, request_id: RequestId) -> Pending | None:
        return self._pending.get(request_id)

    def answer(self, request_id: RequestId) -> Pending | None:
        """Claim the request an answer with this id belongs to; None if it is not in flight."""
        return self._pending.pop(request_id, None)

    def settle(self, pending: Pending) -> bool:
        """Claim exactly this request (not a later one reusing its id); False if already settled."""
        if self._pending.get(pending.id) is pending:
            del self._pending[pending.id]
            return True
        return False

    def drain(self) -> list[Pending]:
        """Remove and return everything still in flight (at shutdown)."""
        pending = list(self._pending.values())
        self._pending.clear()
        return pending
