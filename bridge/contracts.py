"""The contracts between the relay and a remote transport (an "upstream").

The relay hands each desktop message to an `Upstream`; the upstream hands
everything the remote says back through the relay's `Sink`. Three upstreams
exist: Streamable HTTP (`upstream.py`), legacy HTTP+SSE (`legacy_sse.py`) and
the 2026-07-28 adapter (`modern.py`).
"""

from __future__ import annotations

from typing import Protocol

import anyio
import anyio.abc

from bridge.errors import BridgeError
from bridge.inflight import Pending
from bridge.messages import Message


class Sink(Protocol):
    """Where the upstream sends what the remote says (implemented by the relay)."""

    async def deliver(self, message: Message) -> None: ...

    async def fail(self, pending: Pending, error: BridgeError) -> None: ...

    def is_open(self, pending: Pending) -> bool: ...


class Upstream(Protocol):
    """What the relay needs from any remote transport."""

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None: ...

    async def send(self, message: Message, pending: Pending | None) -> None: ...

    async def aclose(self) -> None: ...


class TaskHost:
    """Owns the tasks an upstream spawns (request handlers, streams) for as long as `run()` runs."""

    _tg: anyio.abc.TaskGroup | None = None
    _closed: bool = False

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    def stop_tasks(self) -> None:
        """Mark closed and cancel every task this upstream started."""
        self._closed = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
