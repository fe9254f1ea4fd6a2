"""Server-sent events, decoded from bytes as they arrive (WHATWG rules: CR, LF or CRLF line ends).

Why not httpx2's `EventSource`: it decodes every chunk to text and re-splits
it in Python, ~2.5 ms per MiB here, and the bridge would then encode the data
back to bytes for stdout. This decoder finds line ends in raw chunks with
`bytes.find` (memchr speed), never rescans bytes it has seen, copies each
kept value once, and yields event data as bytes, ready to validate and forward.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


class EventTooLarge(Exception):
    """One event exceeded the size limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a server-sent event exceeded the {limit} byte limit")
        self.limit = limit


@dataclass(slots=True)
class Event:
    event: str
    data: bytes
    id: str | None
    retry: int | None


class SseDecoder:
    """Feed bytes, get complete events."""

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._max = max_event_bytes
        self._buffer = bytearray()
        self._scanned = 0
        self._data: list[bytes] = []
        self._size = 0
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self.last_event_id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        buffer = self._buffer
        buffer += chunk
        size = len(buffer)
        events: list[Event] = []
        start = 0  # where the current line begins
        position = self._scanned  # bytes before this were already searched for line ends
        while True:
            newline = buffer.find(b"\n", position)
            carriage = buffer.find(b"\r", position, newline if newline >= 0 else size)
            if carriage >= 0:
                if carriage == size - 1:
                    position = carriage  # maybe the first half of a CRLF: decide when more arrives
                    break
                line_end = carriage
                next_start = carriage + (2 if buffer[carriage + 1] == 0x0A else 1)
            elif newline >= 0:
                line_end, next_start = newline, newline + 1
            else:
                position = size
                break
            event = self._line(buffer, start, line_end)
            start = position = next_start
            if event is not None:
                events.append(event)
        if start:
            del buffer[:start]
            position -= start
        self._scanned = position
        if self._max is not None and self._size + len(buffer) > self._max:
            raise EventTooLarge(self._max)
        return events

    def flush(self) -> list[Event]:
        """At end of stream: a last line without its terminator still counts (an unterminated event does not)."""
        if self._buffer:
            end = len(self._buffer) - (1 if self._buffer.endswith(b"\r") else 0)
            self._line(self._buffer, 0, end)
            self._buffer.clear()
            self._scanned = 0
        return []

    def _line(self, buffer: bytearray, start: int, end: int) -> Event | None:
        """Interpret buffer[start:end], one line, copying only the value that is kept."""
        if start == end:
            return self._dispatch()
        if buffer[start] == 0x3A:  # ":" starts a comment
            return None
        colon = buffer.find(b":", start, end)
        if colon < 0:
            name, value_start = bytes(buffer[start:end]), end
        else:
            name, value_start = bytes(buffer[start:colon]), colon + 1
            if value_start < end and buffer[value_start] == 0x20:
                value_start += 1
        with memoryview(buffer) as view:
            value = bytes(view[value_start:end])
        if name == b"data":
            self._data.append(value)
            self._size += len(value) + 1
            if self._max is not None and self._size > self._max:
                raise EventTooLarge(self._max)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
                self.last_event_id = self._id
        elif name == b"retry":
            if value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        if not self._data and self._id is None and self._retry is None and not self._event:
            return None
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = Event(self._event or "message", data, self._id, self._retry)
        self._data = []
        self._size = 0
        self._event = ""
        self._id = None
        self._retry = None
        return event


async def iter_events(chunks: AsyncIterator[bytes], max_event_bytes: int | None) -> AsyncIterator[Event]:
    """Events from an async stream of byte chunks (e.g. `response.aiter_bytes()`)."""
    decoder = SseDecoder(max_event_bytes)
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    decoder.flush()
