"""The bridge's JSON-RPC error codes and messages: one table, one place.

Errors the bridge creates itself (the remote could not be reached, rejected the
credentials, rate limited us past the retry budget, ...) reach the desktop
client as JSON-RPC errors in the implementation-defined server range. Every
message says what happened and what to do; `error.data` carries the machine
readable details (`httpStatus`, `retryAfterSeconds`, `hint`).

Codes the protocol itself defines (-32700 parse error, -32600 invalid request,
-32601 method not found) keep their standard meaning.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INTERNAL_ERROR = -32603


class BridgeErrorCode(IntEnum):
    """Codes of errors the bridge raises on the remote's behalf (range -32050..-32069)."""

    REMOTE_UNREACHABLE = -32050
    REMOTE_TIMEOUT = -32051
    OUTCOME_UNKNOWN = -32052
    AUTH_REJECTED = -32053
    FORBIDDEN = -32054
    NOT_FOUND = -32055
    RATE_LIMITED = -32056
    REMOTE_UNAVAILABLE = -32057
    REMOTE_ERROR = -32058
    BAD_RESPONSE = -32059
    TOOL_BLOCKED = -32060
    SESSION_LOST = -32061
    MESSAGE_TOO_LARGE = -32062


# What each code means and what the user should do about it; README's error table mirrors this.
HINTS: dict[BridgeErrorCode, str] = {
    BridgeErrorCode.REMOTE_UNREACHABLE: (
        "Check the URL (ALLOY_MCP_URL or ALLOY_BASE_URL), your network and proxy settings; "
        "the bridge keeps running and the next request retries."
    ),
    BridgeErrorCode.REMOTE_TIMEOUT: (
        "The remote did not answer in time. Retry, or raise ALLOY_READ_TIMEOUT for slow tools."
    ),
    BridgeErrorCode.OUTCOME_UNKNOWN: (
        "The request may have run on the remote before the connection failed; it was NOT retried "
        "automatically so an action is never executed twice. Check its effect before retrying."
    ),
    BridgeErrorCode.AUTH_REJECTED: (
        "Check ALLOY_API_KEY and ALLOY_USER_ID (or ALLOY_USER_TOKEN); a token URL stops working "
        "once its access token is regenerated."
    ),
    BridgeErrorCode.FORBIDDEN: (
        "The remote refused this action (a connector or action restriction on the server). "
        "Ask the server's owner to allow it, or use another tool."
    ),
    BridgeErrorCode.NOT_FOUND: (
        "Check the server id (ALLOY_SERVER_ID or the path of ALLOY_MCP_URL); the server may have been deleted."
    ),
    BridgeErrorCode.RATE_LIMITED: (
        "The remote is rate limiting this key (Alloy allows 100 requests per minute by default). "
        "Wait before retrying; ALLOY_RETRY_BUDGET sets how long the bridge waits on its own."
    ),
    BridgeErrorCode.REMOTE_UNAVAILABLE: "The remote is temporarily unavailable. Retry in a moment.",
    BridgeErrorCode.REMOTE_ERROR: "The remote failed to handle the request. Retry, or report it to the server's owner.",
    BridgeErrorCode.BAD_RESPONSE: (
        "The remote's answer was not valid MCP (JSON-RPC over JSON or SSE). Check that the URL points at an "
        "MCP endpoint."
    ),
    BridgeErrorCode.TOOL_BLOCKED: "This tool is blocked by the bridge's ALLOY_ALLOWED_TOOLS / ALLOY_BLOCKED_TOOLS.",
    BridgeErrorCode.SESSION_LOST: (
        "The remote session ended and could not be re-established. Restart the MCP server in your client."
    ),
    BridgeErrorCode.MESSAGE_TOO_LARGE: "The message exceeds ALLOY_MAX_MESSAGE_BYTES; raise it if this is expected.",
}


class BridgeError(Exception):
    """A failure the desktop must hear about as the JSON-RPC error of one request."""

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data: dict[str, Any] = data or {}

    def __str__(self) -> str:
        return self.message

    @classmethod
    def of(
        cls,
        code: BridgeErrorCode,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        **extra: Any,
    ) -> BridgeError:
        """Build an error whose `data` carries the code's hint plus any HTTP details."""
        data: dict[str, Any] = {"source": "alloy-mcp-bridge", "hint": HINTS[code]}
        if http_status is not None:
            data["httpStatus"] = http_status
        if retry_after is not None:
            data["retryAfterSeconds"] = round(retry_after, 3)
        data.update({key: value for key, value in extra.items() if value is not None})
        return cls(int(code), message, data)


def error_line(request_id: Any, code: int, message: str, data: dict[str, Any] | None = None) -> bytes:
    """One JSON-RPC error message, serialised as a stdout line."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data:
        error["data"] = data
    payload = {"jsonrpc": "2.0", "id": request_id, "error": error}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def bridge_error_line(request_id: Any, error: BridgeError) -> bytes:
    """Serialise a `BridgeError` as the answer to `request_id`."""
    return error_line(request_id, error.code, error.message, error.data)
