"""Reading a message's envelope: kinds, ids, strict JSON, and bytes forwarded as they came."""

from __future__ import annotations

import json
import tracemalloc

import msgspec
import pytest

from bridge.messages import InvalidMessage, Kind, Message, NotJson, build_answer, decode_messages, dumps


def one(data: bytes) -> Message:
    items, batch = decode_messages(data)
    assert not batch and len(items) == 1
    item = items[0]
    assert isinstance(item, Message), item
    return item


@pytest.mark.parametrize(("text", "kind", "request_id", "method"), [
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', Kind.REQUEST, 1, "tools/list"),
    (b'{"jsonrpc":"2.0","id":"a","method":"x","params":{"k":[1,2]}}', Kind.REQUEST, "a", "x"),
    (b'{"jsonrpc":"2.0","method":"notifications/initialized"}', Kind.NOTIFICATION, None, "notifications/initialized"),
    (b'{"jsonrpc":"2.0","id":3,"result":{}}', Kind.RESPONSE, 3, None),
    (b'{"jsonrpc":"2.0","id":4,"error":{"code":-1,"message":"no"}}', Kind.ERROR, 4, None),
    (b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}', Kind.ERROR, None, None),
])
def test_each_kind_of_message_is_recognised(text, kind, request_id, method):
    message = one(text)
    assert (message.kind, message.id, message.method) == (kind, request_id, method)
    assert message.raw == text


@pytest.mark.parametrize("text", [
    b'{"jsonrpc":"1.0","id":1,"method":"x"}',
    b'{"jsonrpc":"2.0","id":true,"method":"x"}',
    b'{"jsonrpc":"2.0","id":1.5,"method":"x"}',
    b'{"jsonrpc":"2.0","id":null,"method":"x"}',
    b'{"jsonrpc":"2.0","id":1,"method":7}',
    b'{"jsonrpc":"2.0","id":1}',
    b'{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"m"}}',
    b'"just a string"',
    b"42",
    b"null",
])
def test_valid_json_that_is_not_json_rpc_is_an_invalid_message(text):
    items, _ = decode_messages(text)
    assert len(items) == 1 and isinstance(items[0], InvalidMessage)


def test_an_invalid_message_keeps_its_id_when_one_could_be_read():
    items, _ = decode_messages(b'{"jsonrpc":"1.0","id":"r-9","method":"x"}')
    assert isinstance(items[0], InvalidMessage) and items[0].request_id == "r-9"


@pytest.mark.parametrize("text", [
    b"{", b"nope", b'{"a":1} trailing', b'{"jsonrpc":"2.0","id":1,"result":NaN}',
    b'{"jsonrpc":"2.0","id":1,"result":Infinity}', b'{"jsonrpc":"2.0","id":1,"result":"\xff"}',
    b"[" * 5000 + b"]" * 5000, b'{"jsonrpc":"2.0","id":1,"result":' + b"[" * 5000 + b"]" * 5000 + b"}",
])
def test_what_is_not_strict_json_is_refused_without_raising_anything_else(text):
    with pytest.raises(NotJson):
        decode_messages(text)


def test_a_batch_is_split_into_its_messages_each_on_one_line():
    items, batch = decode_messages(b'[{"jsonrpc":"2.0","id":1,"result":{"x":1e400}},\n 5,'
                                   b'\n {"jsonrpc":"2.0","method":"n"}]')
    assert batch
    first, second, third = items
    assert isinstance(first, Message) and first.raw == b'{"jsonrpc":"2.0","id":1,"result":{"x":1e400}}'
    assert isinstance(second, InvalidMessage)
    assert isinstance(third, Message) and third.method == "n"


def test_a_pretty_printed_message_is_forwarded_on_one_line_and_still_strict_json():
    text = b'{\n  "jsonrpc": "2.0",\n  "id": 1,\n  "result": {"big": 1e400, "s": "a\\nb"}\n}'
    message = one(text)
    assert b"\n" not in message.raw and b"\r" not in message.raw
    assert b"1e400" in message.raw and b"Infinity" not in message.raw
    json.loads(message.raw, parse_constant=lambda name: pytest.fail(name))


def test_escaped_lone_surrogates_are_valid_json_and_pass_unchanged():
    text = b'{"jsonrpc":"2.0","id":"\\ud800x","error":{"code":-1,"message":"cut \\ud83d emoji"}}'
    message = one(text)
    assert message.id == "\ud800x" and message.raw == text
    assert message.error["message"] == "cut \ud83d emoji"


def test_params_are_decoded_only_when_asked(monkeypatch):
    from bridge import messages

    message = one(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}')
    assert message._params is messages._MISSING and message._body is None  # nothing built for params yet
    assert isinstance(message._parts["params"], msgspec.Raw)  # only the raw slice is kept
    decoded: list[bytes] = []
    real = messages.decode_value
    monkeypatch.setattr(messages, "decode_value", lambda data: decoded.append(data) or real(data))
    assert message.params["name"] == "echo"
    assert message.params is message.params
    assert decoded == [b'{"name":"echo","arguments":{}}']  # the params slice alone, once


def test_the_envelope_of_a_huge_message_costs_no_objects_per_value():
    """60 MiB of `[[],[],…]` built 1.8 GB of Python lists; the envelope must not build them at all."""
    body = b'{"jsonrpc":"2.0","id":1,"result":[' + b",".join([b"[]"] * 2_000_000) + b"]}"
    tracemalloc.start()
    try:
        message = one(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message.kind is Kind.RESPONSE
    assert peak < 2 * len(body), peak


def test_dumps_is_strict_and_always_encodable():
    assert dumps({"m": "cut \ud800"}) == b'{"m":"cut \\ud800"}'
    assert dumps({"m": "café"}) == '{"m":"café"}'.encode()
    with pytest.raises(ValueError):
        dumps({"v": float("inf")})
    with pytest.raises(ValueError):
        build_answer(1, result={"v": float("nan")})
