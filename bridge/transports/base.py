"""The contract between the relay and a remote transport (an "upstream"), and what every transport shares.

The relay hands each desktop message to an `Upstream` with `send()`, which
never waits on the network: the stdin loop must keep reading (a cancellation,
a `ping`, stdin's end) whatever the remote does with earlier messages. The
upstream hands everything the remote says back through the relay's `Sink`.

`TaskHost` is the shared machinery: it owns the tasks a transport spawns, and
runs each desktop request and one-way message in a task of its own under one
rule — whatever goes wrong with a request ends as that request's answer
(`Sink.fail`), and whatever goes wrong with a notification is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import anyio.abc

from bridge.errors import RemoteFailure, internal_error
from bridge.inflight import Pending
from bridge.messages import Message

logger = logging.getLogger(__name__)


class Sink(Protocol):
    """Where the upstream sends what the remote says (implemented by the relay)."""

    async def deliver(self, message: Message) -> None:
        """One message from the remote; answers only count for requests still in flight."""

    async def fail(self, pending: Pending, failure: RemoteFailure) -> None:
        """End a request with `failure.error_object()`, unless it was already answered."""

    def is_open(self, pending: Pending) -> bool:
        """Whether `pending` still awaits its answer."""


class Upstream(Protocol):
    """What the relay needs from any remote transport."""

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the transport's tasks until `aclose()`; report started once `send()` may be called."""

    def send(self, message: Message, pending: Pending | None) -> None:
        """Take one desktop message (`pending` for a request); never waits on the network."""

    async def aclose(self) -> None:
        """End the remote session (bounded) and stop every task."""


RequestHandler = Callable[..., Awaitable[None]]


async def _guarded(function: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
    try:
        await function(*args)
    except RemoteFailure as failure:
        logger.warning("%s failed: %s", getattr(function, "__name__", "a background task"), failure.reason)
    except Exception:  # a bug in one background task must not take the bridge down
        logger.exception("internal error in %s", getattr(function, "__name__", "a background task"))


class TaskHost:
    """Owns the tasks an upstream spawns (request handlers, streams) for as long as `run()` runs."""

    transport_name = "unknown"  # how `check` names it
    _tg: anyio.abc.TaskGroup | None = None
    _closed: bool = False
    sink: Sink

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    @property
    def closed(self) -> bool:
        """`stop_tasks()` has run: nothing new starts."""
        return self._closed

    @property
    def can_spawn(self) -> bool:
        """`run()` has started: background tasks may be spawned."""
        return self._tg is not None

    def stop_tasks(self) -> None:
        """Mark closed and cancel every task this upstream started."""
        self._closed = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run a background task; whatever it raises is logged, never fatal to the bridge."""
        assert self._tg is not None, "run() must have started"
        self._tg.start_soon(_guarded, function, args)

    def spawn_request(self, pending: Pending, handler: RequestHandler, *args: Any) -> None:
        """Run `handler(pending, *args)` in its own task; every way it can end answers the request."""
        self.spawn(self._run_request, pending, handler, args)

    def spawn_one_way(self, message: Message, handler: RequestHandler, *args: Any) -> None:
        """Run `handler(message, *args)` in its own task; a failure is logged, never fatal."""
        self.spawn(self._run_one_way, message, handler, args)

    async def _run_request(self, pending: Pending, handler: RequestHandler, args: tuple[Any, ...]) -> None:
        try:
            await handler(pending, *args)
        except RemoteFailure as failure:
            await self.sink.fail(pending, failure)
        except Exception:  # a bug must cost one request, never the bridge
            logger.exception("internal error while handling %s", pending.method)
            await self.sink.fail(pending, internal_error(pending.method))

    async def _run_one_way(self, message: Message, handler: RequestHandler, args: tuple[Any, ...]) -> None:
        what = message.method or f"the answer to remote request {message.id!r}"
        try:
            await handler(message, *args)
        except RemoteFailure as failure:
            logger.warning("could not deliver %s to the remote: %s", what, failure.reason)
        except Exception:
            logger.exception("internal error while sending %s", what)
