"""Reading what the remote sends back on one HTTP response (JSON or an SSE stream).

`ResponseReader` delivers every message on a response to the relay, stops at
the answer to the request it belongs to, lets the stream finish so the
connection can be reused, and resumes a dropped stream with `Last-Event-ID`
when the remote gave event ids. If no answer comes it raises the error the
desktop should see: "outcome unknown" for anything that may have run.

Bounds: a request's stream fails after `ALLOY_READ_TIMEOUT` without a message
(SSE comments keep a connection open but prove nothing: they do not count); a
resumption waits the stream's `retry:` but never past what is left of that time.
An answer that arrives on another request's stream, or on the standalone GET
stream, is not that stream's to give: it is dropped (logged) and the real one awaited.

Every transport reads through it: the desktop's requests (the answer goes to
the relay) and the bridge's own (`deliver_answer=False`: the answer is returned
instead), so size limits, garbage handling and resumption are one code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import httpx2

from bridge.errors import RemoteFailure, bad_response
from bridge.http import RemoteHttp
from bridge.inflight import Pending
from bridge.messages import InvalidMessage, Message, NotJson, decode_messages
from bridge.retry import RESUME_ATTEMPTS, resume_delay
from bridge.transports.base import Sink
from bridge.transports.event_stream import Event, EventTooLarge, iter_events

logger = logging.getLogger(__name__)

LAST_EVENT_ID = "last-event-id"
_DRAIN_AFTER_ANSWER = 1.0  # seconds to let a response stream end on its own after the answer


def parse_remote(raw: bytes) -> list[Message]:
    """Messages in one JSON body or SSE event from the remote; malformed ones are logged and skipped."""
    try:
        items, _ = decode_messages(raw)
    except NotJson as exc:
        logger.warning("dropped a malformed message from the remote (%d bytes, not strict JSON: %s)", len(raw), exc)
        return []
    messages: list[Message] = []
    for item in items:
        if isinstance(item, InvalidMessage):
            logger.warning("dropped an invalid message from the remote: %s", item)
        else:
            messages.append(item)
    return messages


def media_type(response: httpx2.Response) -> str:
    return response.headers.get("content-type", "").partition(";")[0].strip().lower()


class StreamOutcome:
    """What following one event stream produced."""

    __slots__ = ("answer", "last_event_id", "retry_ms", "error", "garbage", "idle_deadline")

    def __init__(self) -> None:
        self.answer: Message | None = None
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None
        self.error: BaseException | None = None
        self.garbage = False
        self.idle_deadline = 0.0


class ResponseReader:
    """Reads the responses of one upstream and hands what they carry to a sink."""

    def __init__(self, http: RemoteHttp, sink: Sink) -> None:
        self.http = http
        self.sink = sink

    async def drain_one_way(self, response: httpx2.Response) -> None:
        """A notification's response is normally 202; deliver anything a remote sends anyway."""
        if response.status_code == 202:
            return
        content_type = media_type(response)
        if content_type == "text/event-stream":
            await self.follow_events(response, None)
        elif content_type == "application/json":
            body = await self.http.read_body(response)
            if body.strip():
                for message in parse_remote(body):
                    await self._deliver_remote(message, None, True)

    async def read_answer(
        self,
        response: httpx2.Response,
        pending: Pending,
        resume_headers: Callable[[], dict[str, str]],
        *,
        deliver_answer: bool = True,
        still_wanted: Callable[[], bool] | None = None,
        quiet: bool = False,
    ) -> Message | None:
        """Deliver everything on a request's response up to its answer, and return the answer.

        `resume_headers` gives the session's headers for a `GET` that resumes a dropped stream;
        `still_wanted` says whether an answer is still owed (default: the request is in flight).
        None means the answer stopped mattering (the request was settled another way). A `quiet`
        request (a subscription stream) may go without messages for as long as the remote likes.

        Raises:
            RemoteFailure: no answer came (`ConnectionDropped` when the connection failed first).
        """
        if still_wanted is None:
            def still_wanted() -> bool:
                return self.sink.is_open(pending)

        content_type = media_type(response)
        if response.status_code == 202:
            raise bad_response(f"The remote accepted {pending.method} (HTTP 202) but sent no answer.", http_status=202)
        if content_type == "application/json":
            body = await self.http.read_body(response, pending.method)
            answer: Message | None = None
            for message in parse_remote(body):
                if await self._deliver_remote(message, pending, deliver_answer):
                    answer = message
            if answer is None and still_wanted():
                raise bad_response(f"The remote's JSON response to {pending.method} was not a valid answer.",
                                   http_status=response.status_code)
            return answer
        if content_type != "text/event-stream":
            raise bad_response(
                f"The remote answered {pending.method} with content type {content_type or 'none'!r}, "
                "not JSON or an event stream; is the URL an MCP endpoint?",
                http_status=response.status_code,
            )
        outcome = await self.follow_events(response, pending, deliver_answer, idle=not quiet)
        attempts = 0
        while outcome.answer is None and outcome.last_event_id and attempts < RESUME_ATTEMPTS:
            if isinstance(outcome.error, (httpx2.TimeoutException, EventTooLarge, TimeoutError)) or not still_wanted():
                break
            left = outcome.idle_deadline - anyio.current_time() if not quiet else self.http.read_timeout
            delay = resume_delay(outcome.retry_ms, left)
            if delay is None:
                outcome.error = TimeoutError()
                break
            attempts += 1
            await anyio.sleep(delay)
            logger.info("response stream for %s dropped; resuming after event %s", pending.method,
                        outcome.last_event_id)
            headers = resume_headers()
            headers["accept"] = "text/event-stream"
            headers[LAST_EVENT_ID] = outcome.last_event_id
            try:
                async with self.http.open("GET", headers=headers, rpc_method=pending.method) as resumed:
                    if media_type(resumed) != "text/event-stream":
                        break
                    resumed_outcome = await self.follow_events(resumed, pending, deliver_answer, idle=not quiet,
                                                               idle_deadline=outcome.idle_deadline)
            except RemoteFailure as failure:
                logger.info("could not resume the response stream: %s", failure.reason)
                break
            resumed_outcome.last_event_id = resumed_outcome.last_event_id or outcome.last_event_id
            outcome = resumed_outcome
        if outcome.answer is not None or not still_wanted():
            return outcome.answer
        if outcome.error is not None:
            if isinstance(outcome.error, EventTooLarge):
                raise self.http.too_large()
            raise self.http.lost(outcome.error, pending.method)
        if outcome.garbage:
            raise bad_response(f"The remote sent a malformed message and no answer to {pending.method}.")
        raise self.http.lost(httpx2.RemoteProtocolError("stream ended without an answer"), pending.method)

    async def fetch_answer(self, response: httpx2.Response, request: Message,
                           resume_headers: Callable[[], dict[str, str]], *, quiet: bool = False) -> Message:
        """For a bridge-owned request: deliver everything else on the response, return its answer."""
        answer = await self.read_answer(response, Pending(request), resume_headers, deliver_answer=False,
                                        still_wanted=lambda: True, quiet=quiet)
        assert answer is not None  # still_wanted stays true until an answer is found
        return answer

    async def follow_events(
        self,
        response: httpx2.Response,
        pending: Pending | None,
        deliver_answer: bool = True,
        *,
        idle: bool = True,
        idle_deadline: float | None = None,
    ) -> StreamOutcome:
        """Deliver each SSE event until the answer to `pending`, then let the stream finish briefly.

        With a `pending` request and `idle`, the stream fails once `ALLOY_READ_TIMEOUT` passes without a message
        (`idle_deadline` continues the clock of a stream being resumed). Reading the stream to its end
        after the answer (the remote closes it right after) lets the connection go back to the pool.
        """
        outcome = StreamOutcome()
        limit = self.http.read_timeout
        watched = idle and pending is not None
        events = iter_events(response.aiter_bytes(), self.http.max_message_bytes).__aiter__()
        with anyio.CancelScope() as watch:
            if watched:
                watch.deadline = outcome.idle_deadline = (
                    idle_deadline if idle_deadline is not None else anyio.current_time() + limit)
            try:
                async for event in events:
                    if await self._on_event(event, pending, deliver_answer, outcome) and watched:
                        watch.deadline = outcome.idle_deadline = anyio.current_time() + limit
                    if outcome.answer is not None:
                        break
            except (httpx2.HTTPError, EventTooLarge) as exc:
                outcome.error = exc
                return outcome
        if watch.cancelled_caught:
            outcome.error = TimeoutError()
            return outcome
        if outcome.answer is not None:
            with anyio.move_on_after(_DRAIN_AFTER_ANSWER):
                try:
                    async for event in events:
                        await self._on_event(event, None, True, outcome)
                except (httpx2.HTTPError, EventTooLarge):
                    pass
        return outcome

    async def _on_event(self, event: Event, pending: Pending | None, deliver_answer: bool,
                        outcome: StreamOutcome) -> bool:
        """Handle one event; True when it carried a message (the remote is making progress)."""
        if event.id:
            outcome.last_event_id = event.id
        if event.retry is not None:
            outcome.retry_ms = event.retry
        if event.event != "message" or not event.data:
            return False
        batch = parse_remote(event.data)
        if not batch:
            outcome.garbage = True
        for message in batch:
            if await self._deliver_remote(message, pending, deliver_answer):
                outcome.answer = message
        return bool(batch)

    async def _deliver_remote(self, message: Message, pending: Pending | None, deliver_answer: bool) -> bool:
        """Hand one remote message to the sink; True if it is the answer to `pending`."""
        if message.is_answer and message.id is not None:
            if pending is not None and message.id == pending.id:
                if deliver_answer:
                    await self.sink.deliver(message)
                return True
            logger.warning("dropped an answer for request id %r that arrived on %s", message.id,
                           "the server-to-client stream" if pending is None else "another request's stream")
            return False
        await self.sink.deliver(message)
        return False
