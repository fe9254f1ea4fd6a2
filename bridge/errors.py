"""The bridge's failures: one table of error codes and hints, one exception hierarchy, one status mapping.

Errors the bridge creates itself (the remote could not be reached, rejected the
credentials, rate limited us past the retry budget, ...) reach the desktop
client as JSON-RPC errors in the implementation-defined server range. Every
message says what happened and what to do; `error.data` carries the machine
readable details (`httpStatus`, `retryAfterSeconds`, `hint`).

The hierarchy (everything a transport may raise for one request)::

    RemoteFailure                 ends a request without the remote's answer
    ├── BridgeError               the bridge's own JSON-RPC error (code, message, HTTP status, Retry-After, hint)
    │   ├── ConnectionDropped     the connection failed after sending: it may have run (resend only if idempotent)
    │   └── SessionExpired        the remote forgot the session: re-initialize and resend
    └── RemoteRpcError            the remote refused with a JSON-RPC error of its own: that is the answer

Every `RemoteFailure` knows the error object the desktop should read
(`error_object()`), so whoever catches one hands it on without asking what it is.

Codes the protocol itself defines (-32700 parse error, -32600 invalid request,
-32601 method not found) keep their standard meaning.
"""

from __future__ import annotations

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
HINTS: dict[int, str] = {
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
    BridgeErrorCode.TOOL_BLOCKED: (
        "This tool is blocked by the bridge's own tool policy (ALLOY_ALLOWED_TOOLS, ALLOY_BLOCKED_TOOLS or "
        "ALLOY_READ_ONLY); the message says which."
    ),
    BridgeErrorCode.SESSION_LOST: (
        "The remote session ended and could not be re-established. Restart the MCP server in your client."
    ),
    BridgeErrorCode.MESSAGE_TOO_LARGE: "The message exceeds ALLOY_MAX_MESSAGE_BYTES; raise it if this is expected.",
}


class RemoteFailure(Exception):
    """A request ended without the remote's answer; `error_object()` is what the desktop reads instead."""

    def error_object(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def reason(self) -> str:
        """One line for the log."""
        return str(self)


class BridgeError(RemoteFailure):
    """A failure the desktop hears about as the bridge's JSON-RPC error of one request."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.http_status = http_status
        self.retry_after = retry_after
        self.hint = hint if hint is not None else HINTS.get(self.code)
        self.detail = detail  # the remote's own words about an HTTP error (redacted, shortened)

    def __str__(self) -> str:
        return self.message

    @property
    def data(self) -> dict[str, Any]:
        """The machine-readable details: hint, HTTP status, `Retry-After`."""
        data: dict[str, Any] = {"source": "alloy-mcp-bridge"}
        if self.hint:
            data["hint"] = self.hint
        if self.http_status is not None:
            data["httpStatus"] = self.http_status
        if self.retry_after is not None:
            data["retryAfterSeconds"] = round(self.retry_after, 3)
        return data

    def error_object(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": self.data}


class ConnectionDropped(BridgeError):
    """The connection failed after the request was sent: it may have run.

    `retry.py` decides whether it is resent (only what is safe to repeat); otherwise the
    desktop reads it as is ("outcome unknown" for anything that may have had an effect).
    """


class SessionExpired(BridgeError):
    """The remote answered 404 (or "no valid session") to a request that carried a session id."""

    def __init__(
        self, message: str = "The remote forgot the session (HTTP 404) and a new one could not be used."
    ) -> None:
        super().__init__(BridgeErrorCode.SESSION_LOST, message, http_status=404)


class RemoteRpcError(RemoteFailure):
    """The remote refused a request with a JSON-RPC error of its own (in a 4xx body, or for a bridge-owned
    request in its answer): the desktop reads that error unchanged.

    Spec-correct servers send errors such as -32602 (invalid params), -32601 (method not found) or
    -32022 (unsupported protocol version) this way, at 400 / 404.
    """

    def __init__(self, error: dict[str, Any], http_status: int | None = None) -> None:
        super().__init__(str(error.get("message")))
        self.error = error
        self.http_status = http_status

    @property
    def code(self) -> int | None:
        code = self.error.get("code")
        return code if isinstance(code, int) and not isinstance(code, bool) else None

    @property
    def reason(self) -> str:
        status = f", HTTP {self.http_status}" if self.http_status is not None else ""
        return f"{self.error.get('message')} (JSON-RPC error {self.code}{status})"

    def error_object(self) -> dict[str, Any]:
        return self.error


def internal_error(what: str) -> BridgeError:
    """A bug in the bridge, costing one request (the traceback is in the log)."""
    return BridgeError(INTERNAL_ERROR, f"Internal bridge error handling {what}; see the bridge's log.", hint="")


def status_error(status: int, *, where: str, detail: str = "", retry_after: float | None = None,
                 rpc_method: str | None = None, location: str | None = None) -> BridgeError:
    """The error for an HTTP status the remote answered with: what happened and what to check.

    `where` is the endpoint as it may be shown, `detail` the remote's own words (already redacted and
    shortened), `location` a redirect target (already redacted).
    """
    said = f" Remote said: {detail}" if detail else ""
    what = rpc_method or "the request"
    wait = f" Retry after {retry_after:.0f}s." if retry_after is not None else ""
    code: int
    if 300 <= status < 400:
        target = f" to {location}" if location else ""
        code, text = BridgeErrorCode.BAD_RESPONSE, (
            f"The remote redirected{target} (HTTP {status}); the bridge does not follow redirects. "
            f"Point ALLOY_MCP_URL there."
        )
    elif status == 401:
        code, text = BridgeErrorCode.AUTH_REJECTED, (
            f"The remote rejected the credentials (HTTP 401 Unauthorized). Check ALLOY_API_KEY and "
            f"ALLOY_USER_ID / ALLOY_USER_TOKEN; a token URL expires when its token is regenerated.{said}"
        )
    elif status == 403:
        code, text = BridgeErrorCode.FORBIDDEN, (
            f"The remote refused {what} (HTTP 403 Forbidden): the server restricts this action or connector.{said}"
        )
    elif status == 404:
        code, text = BridgeErrorCode.NOT_FOUND, (
            f"No MCP server at {where} (HTTP 404 Not Found). Check the server id; the server may have been "
            f"deleted.{said}"
        )
    elif status == 413:
        code, text = BridgeErrorCode.MESSAGE_TOO_LARGE, f"The remote refused a message as too large (HTTP 413).{said}"
    elif status == 429:
        code, text = BridgeErrorCode.RATE_LIMITED, (
            f"The remote is rate limiting requests (HTTP 429 Too Many Requests) and the bridge's retry budget "
            f"is spent.{wait}{said}"
        )
    elif status in (502, 503, 504):
        code = BridgeErrorCode.REMOTE_UNAVAILABLE
        text = f"The remote is temporarily unavailable (HTTP {status}).{wait}{said}"
    elif status in (405, 406, 415):
        code, text = BridgeErrorCode.BAD_RESPONSE, (
            f"{where} did not accept an MCP request (HTTP {status}); is it a Streamable HTTP MCP endpoint?{said}"
        )
    else:
        code, text = BridgeErrorCode.REMOTE_ERROR, f"The remote failed with HTTP {status}.{said}"
    return BridgeError(code, text, http_status=status, retry_after=retry_after, detail=detail or None)


def bad_response(text: str, *, http_status: int | None = None) -> BridgeError:
    """The remote's answer was not valid MCP."""
    return BridgeError(BridgeErrorCode.BAD_RESPONSE, text, http_status=http_status)


def management_message(error: BridgeError, name: str) -> str:
    """What a failed call of the Server Management API (`servers …`, `name` like `servers/get`) tells the user."""
    said = f" The API said: {error.detail}" if error.detail else ""
    status = error.http_status
    if status == 400:
        text = f"The request was refused as invalid (HTTP 400).{said}"
    elif status == 401:
        text = ("The API key was rejected (HTTP 401): check ALLOY_API_KEY, and ALLOY_USER_ID / ALLOY_USER_TOKEN "
                f"if you set them.{said}")
    elif status == 403:
        text = f"Not allowed (HTTP 403): the server belongs to another user, or your key is restricted.{said}"
    elif status == 404:
        text = (f"No such server (HTTP 404): check the id with `alloy-mcp-bridge servers list`.{said}"
                if name != "servers/list" else f"No management API at that address (HTTP 404): check "
                                               f"ALLOY_BASE_URL.{said}")
    elif status == 409:
        text = f"That name is taken (HTTP 409): server names are unique per user; choose another.{said}"
    elif status == 429:
        wait = f" Wait {error.retry_after:.0f} s." if error.retry_after is not None else " Wait a minute."
        text = f"Rate limited (HTTP 429; 100 requests per minute) past the retry budget.{wait}{said}"
    elif error.code == BridgeErrorCode.OUTCOME_UNKNOWN:
        text = (f"The connection failed after the {name} request was sent; it may or may not have been done. "
                "Check with `alloy-mcp-bridge servers list` before trying again.")
    else:
        text = error.message
    return text
