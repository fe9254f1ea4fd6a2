"""The SSE decoder: events do not depend on how the bytes were split, and memory is bounded by the limit."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.transports.event_stream import Event, EventTooLarge, SseDecoder

STREAM = (
    b": a comment\r\n"
    b"event: message\r\n"
    b"id: 7\r\n"
    b"retry: 1500\r\n"
    b'data: {"jsonrpc":"2.0","method":"notifications/progress"}\r\n'
    b"\r\n"
    b"data: line one\n"
    b"data:line two\n"
    b"data\n"
    b"\n"
    b"event: endpoint\r"
    b"data: /messages?session=abc\r"
    b"\r"
    b"id: only-an-id\n\n"
    b'data: {"caf\xc3\xa9": "\xf0\x9f\x98\x80"}\n\n'
)


def decode(chunks: list[bytes], limit: int | None = None) -> list[Event]:
    decoder = SseDecoder(limit)
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events


EXPECTED = decode([STREAM])


def test_the_reference_stream_decodes_to_the_documented_events():
    assert [(e.event, e.data, e.id, e.retry) for e in EXPECTED] == [
        ("message", b'{"jsonrpc":"2.0","method":"notifications/progress"}', "7", 1500),
        ("message", b"line one\nline two\n", None, None),
        ("endpoint", b"/messages?session=abc", None, None),
        ("message", b"", "only-an-id", None),
        ("message", '{"café": "😀"}'.encode(), None, None),
    ]


def test_splitting_the_stream_at_any_single_offset_changes_nothing():
    for offset in range(len(STREAM) + 1):
        assert decode([STREAM[:offset], STREAM[offset:]]) == EXPECTED, offset


def test_feeding_one_byte_at_a_time_changes_nothing():
    assert decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_splitting_the_stream_anywhere_changes_nothing(offsets):
    cuts = sorted(set(offsets))
    pieces = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
    assert decode(pieces) == EXPECTED


def test_an_event_over_the_limit_is_refused_as_it_arrives():
    decoder = SseDecoder(1000)
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            decoder.feed(b"data: " + b"x" * 50 + b"\n")


def test_a_line_without_end_over_the_limit_is_refused():
    with pytest.raises(EventTooLarge):
        SseDecoder(1000).feed(b"data: " + b"x" * 2000)


def test_comments_do_not_count_towards_the_limit():
    decoder = SseDecoder(1000)
    for _ in range(100):
        decoder.feed(b": keep-alive comment\n")
    assert decoder.feed(b"data: ok\n\n")[0].data == b"ok"


def test_many_tiny_data_lines_cost_memory_in_proportion_to_their_bytes():
    """Two-byte `data:` lines must not cost a Python object each (that turned 64 MiB into a gigabyte)."""
    line = b"data:x\n"
    chunk = line * 4096
    decoder = SseDecoder(64 * 1024 * 1024)
    tracemalloc.start()
    try:
        for _ in range(64):  # 1.8 MiB of stream, 262,144 lines
            decoder.feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak
