"""What a remote's error response says: a JSON-RPC error, a forgotten session, its own words.

Read from the first bytes of the body (bounded in size and time), strictly: an error in
lenient JSON only (NaN, Infinity) is refused, never relayed.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import anyio
import httpx2

from bridge.errors import bad_response
from bridge.messages import NotJson, decode_value


def forgot_session(status: int, rpc_error: dict[str, Any] | None) -> bool:
    """Whether an error to a request that carried a session id means "I do not know that session".

    404 is the spec's answer (unless it is a JSON-RPC "method not found"); some servers (the TypeScript
    SDK's examples among them) answer 400 "No valid session ID provided" instead.
    """
    if status == 404:
        return rpc_error is None or rpc_error.get("code") != -32601
    if status == 400 and rpc_error is not None:
        return "session" in str(rpc_error.get("message", "")).lower()
    return False


async def read_some(response: httpx2.Response, limit: int = 65536) -> bytes:
    """The first bytes of an error response's body (enough for any JSON-RPC error), read for a bounded time."""
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(5.0):
        try:
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
        except httpx2.HTTPError:
            pass
    return b"".join(chunks)[:limit]


def jsonrpc_error(raw: bytes) -> dict[str, Any] | None:
    """The `error` object of a JSON-RPC error body, or None.

    Raises:
        BridgeError: the body is a JSON-RPC error in lenient JSON only (NaN, Infinity): refused as invalid.
    """
    try:
        body = decode_value(raw)
    except NotJson:
        if _is_lenient_jsonrpc_error(raw):
            raise bad_response("The remote's JSON-RPC error is not strict JSON (it holds NaN or Infinity); "
                               "it was refused.") from None
        return None
    if isinstance(body, dict) and body.get("jsonrpc") == "2.0" and isinstance(body.get("error"), dict):
        error = body["error"]
        if isinstance(error.get("code"), int) and isinstance(error.get("message"), str):
            return error
    return None


def _is_lenient_jsonrpc_error(raw: bytes) -> bool:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return isinstance(body, dict) and body.get("jsonrpc") == "2.0" and isinstance(body.get("error"), dict)


def error_detail(raw: bytes, limit: int = 8192) -> str:
    """The remote's own explanation of an error status (JSON `error`/`message` or text), uncut."""
    text = raw[:limit].decode("utf-8", "replace").strip()
    if not text:
        return ""
    with contextlib.suppress(NotJson):
        body: Any = decode_value(raw[:limit])
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict):
                return str(err.get("message") or err)
            for key in ("error_description", "message", "error", "detail"):
                if isinstance(body.get(key), str):
                    return str(body[key])
    if text.startswith("<"):
        return ""  # an HTML error page says nothing useful on one line
    return " ".join(text.split())
