"""JSON-RPC messages as the relay sees them: the exact bytes, plus just enough structure.

The relay never re-models MCP methods. It parses each message once to learn
its kind, id and method (and nothing else), then forwards the original bytes
untouched, so fields it does not know — `_meta`, cursors, a method added to the
protocol next year — pass through by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic_core import from_json

RequestId = str | int


class Kind(Enum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESPONSE = "response"
    ERROR = "error"


@dataclass(slots=True)
class Message:
    """One JSON-RPC message: its serialized text (no trailing newline) and parsed form."""

    raw: bytes
    body: dict[str, Any]
    kind: Kind
    id: RequestId | None = None
    method: str | None = None

    @property
    def is_answer(self) -> bool:
        """A response or an error: the end of a request."""
        return self.kind is Kind.RESPONSE or self.kind is Kind.ERROR

    @property
    def params(self) -> dict[str, Any]:
        params = self.body.get("params")
        return params if isinstance(params, dict) else {}


class InvalidMessage(ValueError):
    """Valid JSON that is not a JSON-RPC 2.0 message; `request_id` is set when one could be read."""

    def __init__(self, reason: str, request_id: RequestId | None = None) -> None:
        super().__init__(reason)
        self.request_id = request_id


def dumps(body: Any) -> bytes:
    """Compact JSON on one line (JSON escapes any newline inside strings)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def parse(text: bytes | str) -> Any:
    """Parse strict JSON (no NaN/Infinity); raises ValueError on malformed input or invalid UTF-8.

    pydantic-core's parser is ~20x faster than `json` on large messages; the
    stdlib parser is the fallback for what it refuses but JSON allows (an
    escaped lone surrogate, which a truncated emoji produces).
    """
    try:
        return from_json(text, allow_inf_nan=False)
    except ValueError:
        if isinstance(text, bytes):
            text = text.decode("utf-8")  # invalid UTF-8 raises UnicodeDecodeError, a ValueError
        return json.loads(text, parse_constant=_reject_constant)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def classify(body: Any, raw: bytes | None = None) -> Message:
    """Turn one parsed JSON value into a `Message`, or raise `InvalidMessage`.

    `raw` is the original text; when it would not fit on one line (pretty-printed
    JSON) or is absent, the message is re-serialized compactly.
    """
    if not isinstance(body, dict):
        raise InvalidMessage("a JSON-RPC message must be a JSON object")
    request_id = body.get("id")
    has_id = "id" in body
    if has_id and not _valid_id(request_id):
        raise InvalidMessage("id must be a string or an integer")
    if body.get("jsonrpc") != "2.0":
        raise InvalidMessage('"jsonrpc" must be "2.0"', request_id if has_id else None)
    if raw is None or b"\n" in raw or b"\r" in raw:
        raw = dumps(body)
    method = body.get("method")
    if method is not None:
        if not isinstance(method, str):
            raise InvalidMessage('"method" must be a string', request_id if has_id else None)
        if has_id:
            return Message(raw, body, Kind.REQUEST, request_id, method)
        return Message(raw, body, Kind.NOTIFICATION, None, method)
    if has_id and "result" in body and "error" not in body:
        return Message(raw, body, Kind.RESPONSE, request_id)
    if has_id and "error" in body and "result" not in body and isinstance(body["error"], dict):
        return Message(raw, body, Kind.ERROR, request_id)
    if "id" in body and body["id"] is None and isinstance(body.get("error"), dict):
        # An error the peer could not attribute to a request (e.g. its own parse error).
        return Message(raw, body, Kind.ERROR, None)
    raise InvalidMessage("not a request, notification, response or error", request_id if has_id else None)


def _valid_id(value: Any) -> bool:
    return (isinstance(value, str) or isinstance(value, int)) and not isinstance(value, bool)


def build_request(request_id: RequestId, method: str, params: dict[str, Any] | None = None) -> Message:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return classify(body)


def build_notification(method: str, params: dict[str, Any] | None = None) -> Message:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        body["params"] = params
    return classify(body)
