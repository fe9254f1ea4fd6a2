"""JSON-RPC messages as the relay sees them: the exact bytes, plus just enough structure.

The relay never re-models MCP methods. It reads each message's envelope once —
`jsonrpc`, `id`, `method`, and whether `result` or `error` is there — and
forwards the original bytes untouched, so fields it does not know (`_meta`,
cursors, a method added to the protocol next year) pass through by construction.

Why an envelope-only decode (msgspec, with `params` / `result` / `error` kept as
raw slices): building the whole value costs memory in proportion to the number
of JSON values, not bytes — 60 MiB of `[[],[],…]` is 1.8 GB of Python lists.
msgspec still checks every byte is strict JSON (no NaN, no Infinity, no
trailing garbage, bounded nesting) while skipping the parts the relay never
reads; the parts it does read (`params` of a `tools/call` under a tool policy,
the desktop's `initialize`) are decoded on first use.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any, TypeGuard

import msgspec
from msgspec import UNSET, Raw

RequestId = str | int

# Each lone or paired UTF-16 surrogate escape: valid JSON that msgspec refuses. Replaced (same length, so every
# offset stays put) by U+FFFD only in the copy that is checked; the original bytes are what is forwarded.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SMALL = 4096  # the most bytes of `jsonrpc`, `id` or `method` worth decoding
_EXACT_FALLBACK = 1 << 20  # messages up to this size with surrogate escapes are decoded exactly by the stdlib


class Kind(Enum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESPONSE = "response"
    ERROR = "error"


class NotJson(ValueError):
    """The bytes are not one strict JSON value (or not UTF-8)."""


class InvalidMessage(ValueError):
    """Valid JSON that is not a JSON-RPC 2.0 message; `request_id` is set when one could be read."""

    def __init__(self, reason: str, request_id: RequestId | None = None) -> None:
        super().__init__(reason)
        self.request_id = request_id


class _Envelope(msgspec.Struct):
    jsonrpc: Raw = UNSET  # type: ignore[assignment]
    id: Raw = UNSET  # type: ignore[assignment]
    method: Raw = UNSET  # type: ignore[assignment]
    params: Raw = UNSET  # type: ignore[assignment]
    result: Raw = UNSET  # type: ignore[assignment]
    error: Raw = UNSET  # type: ignore[assignment]


_TOP = msgspec.json.Decoder(_Envelope | list[Raw])
_ENVELOPE = msgspec.json.Decoder(_Envelope)
_ANY = msgspec.json.Decoder()
_MISSING: Any = object()


class Message:
    """One JSON-RPC message: its serialized text (one line, no newline) and its envelope.

    `params`, `result`, `error` and `body` are decoded on first use.
    """

    __slots__ = ("raw", "kind", "id", "method", "_parts", "_body", "_params")

    def __init__(self, raw: bytes, kind: Kind, request_id: RequestId | None = None, method: str | None = None) -> None:
        self.raw = raw
        self.kind = kind
        self.id = request_id
        self.method = method
        self._parts: dict[str, Any] = {}  # the undecoded `params`, `result`, `error` (set by the decoder)
        self._body: dict[str, Any] | None = None
        self._params: Any = _MISSING

    def __repr__(self) -> str:
        return f"Message({self.kind.value}, id={self.id!r}, method={self.method!r}, {len(self.raw)} bytes)"

    @property
    def is_answer(self) -> bool:
        """A response or an error: the end of a request."""
        return self.kind is Kind.RESPONSE or self.kind is Kind.ERROR

    def _part(self, name: str) -> Any:
        if self._body is not None:
            return self._body.get(name)
        raw = self._parts.get(name)
        return None if raw is None else decode_value(bytes(raw))

    @property
    def params(self) -> dict[str, Any]:
        if self._params is _MISSING:
            params = self._part("params")
            self._params = params if isinstance(params, dict) else {}
        return self._params  # type: ignore[no-any-return]

    @property
    def result(self) -> Any:
        return self._part("result")

    @property
    def error(self) -> dict[str, Any]:
        error = self._part("error")
        return error if isinstance(error, dict) else {}

    @property
    def body(self) -> dict[str, Any]:
        """The whole message as Python values (decoded once, on first use)."""
        if self._body is None:
            body = decode_value(self.raw)
            self._body = body if isinstance(body, dict) else {}
        return self._body

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Message:
        """A message the bridge builds; raises `InvalidMessage` if it is not JSON-RPC, ValueError if not JSON."""
        message = _classify(body, lambda name: name in body, lambda name: body.get(name), dumps(body))
        message._body = body
        return message


# --- decoding --------------------------------------------------------------------------------------------------


def decode_value(data: bytes) -> Any:
    """Any strict JSON value; raises `NotJson`. Escaped lone surrogates (a cut emoji) are kept."""
    try:
        return _ANY.decode(data)
    except msgspec.DecodeError:
        pass
    except RecursionError:
        raise NotJson("nested too deeply") from None
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise NotJson(str(exc)) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_messages(data: bytes) -> tuple[list[Message | InvalidMessage], bool]:
    """The messages in one line from the desktop or one body / event from the remote, and whether it was a batch.

    Raises:
        NotJson: the bytes are not one strict JSON value in UTF-8.
    """
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise NotJson("not UTF-8") from None
    try:
        top = _decode_top(data)
    except NotJson:
        if _SURROGATE_ESCAPE.search(data) is None:
            raise
        if len(data) <= _EXACT_FALLBACK:
            return _decode_exactly(data)
        top = _decode_top(_SURROGATE_ESCAPE.sub(rb"\\ufffd", data))
    if top is None:
        return [InvalidMessage("a JSON-RPC message must be a JSON object")], False
    if isinstance(top, _Envelope):
        return [_from_envelope(top, _one_line(data))], False
    items: list[Message | InvalidMessage] = []
    for raw in top:
        item = bytes(raw)
        try:
            envelope = _ENVELOPE.decode(item)
        except msgspec.ValidationError:
            items.append(InvalidMessage("a JSON-RPC message must be a JSON object"))
            continue
        except (msgspec.DecodeError, RecursionError):  # a surrogate escape inside the item: the slow path
            try:
                value = decode_value(item)
            except NotJson:
                items.append(InvalidMessage("unreadable batch item"))
                continue
            items.append(_from_value(value, None))
            continue
        items.append(_from_envelope(envelope, _one_line(item)))
    return items, True


def _decode_top(data: bytes) -> _Envelope | list[Raw] | None:
    """The top-level object or array; None for valid JSON of another shape."""
    try:
        return _TOP.decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError:
        pass  # valid JSON of the wrong shape, or not JSON at all: tell which
    except (msgspec.DecodeError, RecursionError) as exc:
        raise NotJson(str(exc)) from None
    try:
        msgspec.json.decode(data, type=Raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise NotJson(str(exc)) from None
    return None


def _decode_exactly(data: bytes) -> tuple[list[Message | InvalidMessage], bool]:
    """The slow path for a small message holding surrogate escapes: the stdlib builds it whole."""
    value = decode_value(data)
    if isinstance(value, list):
        return [_from_value(item, None) for item in value], True
    return [_from_value(value, _one_line(data))], False


def _one_line(raw: bytes) -> bytes:
    """Line breaks in valid JSON are insignificant whitespace (inside strings they must be escaped)."""
    if b"\n" in raw or b"\r" in raw:
        return raw.replace(b"\r", b" ").replace(b"\n", b" ")
    return raw


def _small(raw: Raw) -> Any:
    data = bytes(raw)
    if len(data) > _SMALL:
        return _MISSING
    try:
        return decode_value(data)
    except NotJson:
        return _MISSING


def _from_envelope(envelope: _Envelope, raw: bytes) -> Message | InvalidMessage:
    fields = {name: getattr(envelope, name) for name in _Envelope.__struct_fields__}
    present = {name: value for name, value in fields.items() if value is not UNSET}
    small: dict[str, Any] = {}

    def value(name: str) -> Any:
        if name not in small:
            if name not in present:
                small[name] = None
            elif name == "error":  # an error object is read whole (its data may be large)
                try:
                    small[name] = decode_value(bytes(present[name]))
                except NotJson:
                    small[name] = None
            else:
                small[name] = _small(present[name])
        return small[name]

    try:
        message = _classify(present, lambda name: name in present, value, raw)
    except InvalidMessage as invalid:
        return invalid
    message._parts = {name: present[name] for name in ("params", "result", "error") if name in present}
    return message


def _from_value(value: Any, raw: bytes | None) -> Message | InvalidMessage:
    if not isinstance(value, dict):
        return InvalidMessage("a JSON-RPC message must be a JSON object")
    try:
        message = _classify(value, lambda name: name in value, lambda name: value.get(name),
                            raw if raw is not None else dumps(value))
    except (InvalidMessage, ValueError) as exc:
        return exc if isinstance(exc, InvalidMessage) else InvalidMessage(str(exc))
    message._body = value
    return message


def _classify(container: Any, has: Any, get: Any, raw: bytes) -> Message:
    has_id = has("id")
    request_id = get("id") if has_id else None
    if has_id and request_id is not None and not valid_id(request_id):
        raise InvalidMessage("id must be a string or an integer")
    if get("jsonrpc") != "2.0":
        raise InvalidMessage('"jsonrpc" must be "2.0"', request_id if has_id else None)
    if has("method"):
        method = get("method")
        if not isinstance(method, str):
            raise InvalidMessage('"method" must be a string', request_id if has_id else None)
        if has_id:
            if request_id is None:
                raise InvalidMessage("a request id must be a string or an integer, not null")
            return Message(raw, Kind.REQUEST, request_id, method)
        return Message(raw, Kind.NOTIFICATION, None, method)
    has_result, has_error = has("result"), has("error")
    if has_id and has_result and not has_error and request_id is not None:
        return Message(raw, Kind.RESPONSE, request_id)
    if has_id and has_error and not has_result and isinstance(get("error"), dict):
        # `"id": null` is an error the peer could not attribute to a request (e.g. its own parse error).
        return Message(raw, Kind.ERROR, request_id)
    raise InvalidMessage("not a request, notification, response or error", request_id if has_id else None)


def valid_id(value: Any) -> TypeGuard[RequestId]:
    """Whether `value` can be a JSON-RPC id (or a progress token): a string or an integer, never a bool."""
    return (isinstance(value, str) or isinstance(value, int)) and not isinstance(value, bool)


# --- encoding ------------------------------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """Compact strict JSON on one line, always encodable.

    Raises ValueError for what strict JSON cannot carry (NaN, Infinity). A string holding a
    lone surrogate (a cut emoji the remote sent escaped) is written escaped again, never as
    invalid UTF-8.
    """
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode()


def build_request(request_id: RequestId, method: str, params: dict[str, Any] | None = None) -> Message:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return Message.from_body(body)


def build_notification(method: str, params: dict[str, Any] | None = None) -> Message:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        body["params"] = params
    return Message.from_body(body)


def build_answer(request_id: RequestId | None, *, result: Any = None, error: dict[str, Any] | None = None) -> Message:
    """A response (`result`) or an error answer to `request_id`."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
    if error is not None:
        body["error"] = error
    else:
        body["result"] = result
    return Message.from_body(body)
