"""Reading what the remote sends back on one HTTP response (JSON or an SSE stream).

`ResponseReader` delivers every message on a response to the relay, stops at
the answer to the request it belongs to, lets the stream finish so the
connection can be reused, and resumes a dropped stream with `Last-Event-ID`
when the remote gave event ids. If no answer comes it raises the error the
desktop should see: "outcome unknown" for anything that may have run.

Every transport reads through it: the desktop's requests (`read_answer`, the
answer goes to the relay) and the bridge's own (`fetch_answer`, the answer is
returned instead), so size limits, garbage handling and resumption are one code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import httpx2

from bridge.contracts import Sink
from bridge.errors import BridgeError, BridgeErrorCode
from bridge.http import ConnectionDropped, RemoteHttp, RemoteRpcError, SessionExpired
from bridge.inflight import Pending
from bridge.messages import InvalidMessage, Message, classify, dumps, parse
from bridge.sse import Event, EventTooLarge, iter_events

logger = logging.getLogger("bridge.responses")

LAST_EVENT_ID = "last-event-id"
# Sees the answer to the request being read; returning True keeps it from the relay (a bridge-owned answer).
OnAnswer = Callable[[Message], bool | None]
_RESUME_ATTEMPTS = 3
_DRAIN_AFTER_ANSWER = 1.0  # seconds to let a response stream end on its own after the answer


def parse_remote(raw: bytes) -> list[Message]:
    """Messages in one JSON body or SSE event from the remote; malformed ones are logged and skipped."""
    try:
        body = parse(raw)
    except ValueError:
        logger.warning("dropped a malformed message from the remote (%d bytes of invalid JSON)", len(raw))
        return []
    items = body if isinstance(body, list) else [body]
    parsed: list[Message] = []
    for item in items:
        try:
            parsed.append(classify(item, raw if item is body else None))
        except InvalidMessage as exc:
            logger.warning("dropped an invalid message from the remote: %s", exc)
    return parsed


def rpc_error_answer(pending: Pending, error: dict[str, Any]) -> Message:
    """The remote's JSON-RPC error, as the answer to the desktop's request."""
    body = {"jsonrpc": "2.0", "id": pending.id, "error": error}
    return classify(body, dumps(body))


def media_type(response: httpx2.Response) -> str:
    return response.headers.get("content-type", "").partition(";")[0].strip().lower()


def reason(exc: BaseException) -> str:
    if isinstance(exc, RemoteRpcError):
        return f"{exc.error.get('message')} (JSON-RPC error {exc.code}, HTTP {exc.http_status})"
    if isinstance(exc, BridgeError):
        return exc.message
    if isinstance(exc, ConnectionDropped):
        return exc.error.message
    if isinstance(exc, SessionExpired):
        return "the new session was rejected too (HTTP 404)"
    return str(exc)



class StreamOutcome:
    """What following one event stream produced."""

    __slots__ = ("answered", "last_event_id", "retry_ms", "error", "garbage")

    def __init__(self) -> None:
        self.answered = False
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None
        self.error: Exception | None = None
        self.garbage = False


class ResponseReader:
    """Reads the responses of one upstream and hands what they carry to the relay."""

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
            body = await self.read_body(response)
            if body.strip():
                for message in parse_remote(body):
                    await self.sink.deliver(message)

    async def read_answer(
        self,
        response: httpx2.Response,
        pending: Pending,
        resume_headers: Callable[[], dict[str, str]],
        on_answer: OnAnswer | None = None,
        still_wanted: Callable[[], bool] | None = None,
    ) -> None:
        """Deliver everything on a request's response until its answer; fail the request if none comes.

        `resume_headers` gives the session's headers for a `GET` that resumes a dropped stream;
        `still_wanted` says whether an answer is still owed (default: the request is in flight).
        """
        if still_wanted is None:
            def still_wanted() -> bool:
                return self.sink.is_open(pending)

        content_type = media_type(response)
        if response.status_code == 202:
            raise BridgeError.of(
                BridgeErrorCode.BAD_RESPONSE,
                f"The remote accepted {pending.method} (HTTP 202) but sent no answer.",
                http_status=202,
            )
        if content_type == "application/json":
            body = await self.read_body(response, pending.method)
            answered = False
            for message in parse_remote(body):
                answered = await self._deliver_remote(message, pending, on_answer) or answered
            if not answered and still_wanted():
                raise BridgeError.of(
                    BridgeErrorCode.BAD_RESPONSE,
                    f"The remote's JSON response to {pending.method} was not a valid answer.",
                    http_status=response.status_code,
                )
            return
        if content_type != "text/event-stream":
            raise BridgeError.of(
                BridgeErrorCode.BAD_RESPONSE,
                f"The remote answered {pending.method} with content type {content_type or 'none'!r}, "
                "not JSON or an event stream; is the URL an MCP endpoint?",
                http_status=response.status_code,
            )
        outcome = await self.follow_events(response, pending, on_answer)
        attempts = 0
        while not outcome.answered and outcome.last_event_id and attempts < _RESUME_ATTEMPTS:
            if isinstance(outcome.error, httpx2.TimeoutException) or not still_wanted():
                break
            attempts += 1
            await anyio.sleep((outcome.retry_ms or 1000) / 1000)
            logger.info("response stream for %s dropped; resuming after event %s", pending.method,
                        outcome.last_event_id)
            headers = resume_headers()
            headers["accept"] = "text/event-stream"
            headers[LAST_EVENT_ID] = outcome.last_event_id
            try:
                async with self.http.open("GET", headers=headers, rpc_method=pending.method) as resumed:
                    if media_type(resumed) != "text/event-stream":
                        break
                    resumed_outcome = await self.follow_events(resumed, pending, on_answer)
            except (BridgeError, SessionExpired, ConnectionDropped, RemoteRpcError) as exc:
                logger.info("could not resume the response stream: %s", reason(exc))
                break
            resumed_outcome.last_event_id = resumed_outcome.last_event_id or outcome.last_event_id
            outcome = resumed_outcome
        if outcome.answered or not still_wanted():
            return
        if outcome.error is not None:
            error = self.http.lost(outcome.error, pending.method)
            if isinstance(outcome.error, (httpx2.TimeoutException, EventTooLarge)):
                raise error
            raise ConnectionDropped(error)
        if outcome.garbage:
            raise BridgeError.of(
                BridgeErrorCode.BAD_RESPONSE,
                f"The remote sent a malformed message and no answer to {pending.method}.",
            )
        raise ConnectionDropped(self.http.lost(httpx2.RemoteProtocolError("stream ended without an answer"),
                                            pending.method))

    async def fetch_answer(
        self, response: httpx2.Response, request: Message, resume_headers: Callable[[], dict[str, str]]
    ) -> Message:
        """For a bridge-owned request: deliver everything else on the response, return its answer.

        Raises what `read_answer` raises when no answer comes.
        """
        found: list[Message] = []

        def keep(answer: Message) -> bool:
            found.append(answer)
            return True

        await self.read_answer(response, Pending(request), resume_headers, on_answer=keep,
                               still_wanted=lambda: not found)
        return found[0]

    async def follow_events(
        self, response: httpx2.Response, pending: Pending | None, on_answer: OnAnswer | None = None
    ) -> StreamOutcome:
        """Deliver each SSE event until the answer to `pending`, then let the stream finish briefly.

        Reading the stream to its end (the remote closes it right after the answer)
        lets the connection go back to the pool instead of being torn down.
        """
        outcome = StreamOutcome()
        events = iter_events(response.aiter_bytes(), self.http.max_message_bytes).__aiter__()
        try:
            async for event in events:
                await self._on_event(event, pending, on_answer, outcome)
                if outcome.answered:
                    break
        except (httpx2.HTTPError, EventTooLarge) as exc:
            outcome.error = exc
            return outcome
        if outcome.answered:
            with anyio.move_on_after(_DRAIN_AFTER_ANSWER):
                try:
                    async for event in events:
                        await self._on_event(event, None, None, outcome)
                except (httpx2.HTTPError, EventTooLarge):
                    pass
        return outcome

    async def _on_event(
        self,
        event: Event,
        pending: Pending | None,
        on_answer: OnAnswer | None,
        outcome: StreamOutcome,
    ) -> None:
        if event.id:
            outcome.last_event_id = event.id
        if event.retry is not None:
            outcome.retry_ms = event.retry
        if event.event != "message" or not event.data:
            return
        batch = parse_remote(event.data)
        if not batch:
            outcome.garbage = True
        for message in batch:
            if await self._deliver_remote(message, pending, on_answer):
                outcome.answered = True

    async def _deliver_remote(self, message: Message, pending: Pending | None, on_answer: OnAnswer | None) -> bool:
        """Hand one remote message to the relay (unless `on_answer` keeps it); True if it answered `pending`."""
        is_answer = pending is not None and message.is_answer and message.id == pending.id
        if not (is_answer and on_answer is not None and on_answer(message)):
            await self.sink.deliver(message)
        return is_answer

    async def read_body(self, response: httpx2.Response, method: str | None = None) -> bytes:
        limit = self.http.max_message_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise BridgeError.of(
                        BridgeErrorCode.MESSAGE_TOO_LARGE,
                        f"The remote's answer exceeded ALLOY_MAX_MESSAGE_BYTES ({limit} bytes).",
                    )
                chunks.append(chunk)
        except httpx2.HTTPError as exc:
            error = self.http.lost(exc, method)
            if isinstance(exc, httpx2.TimeoutException):
                raise error from None
            raise ConnectionDropped(error) from None
        return b"".join(chunks)
