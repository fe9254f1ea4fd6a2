"""Error answers for the desktop: well formed, strict JSON, every secret the bridge knows redacted.

An error the remote sent is passed on byte for byte when it is already all of that; otherwise it is
rewritten: a missing or non-integer code becomes -32603, a non-string message a string, every string
(message, data, keys) redacted, and one that cannot be strict JSON (NaN) refused as an invalid answer.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.errors import INTERNAL_ERROR, BridgeError, BridgeErrorCode
from bridge.logs import SecretList
from bridge.messages import RequestId, decode_value, dumps


class ErrorAnswers:
    """Writes error answers with one `SecretList` (the one the logs use)."""

    def __init__(self, secrets: SecretList) -> None:
        self.secrets = secrets

    def line(self, request_id: RequestId | None, error: Any, raw: bytes | None = None) -> bytes:
        """The answer line for `error` (the remote's `raw` message, when it came as one), redacted whole."""
        clean = well_formed(error)
        redacted = self.secrets.redact_value(clean)
        if raw is not None and clean is error and not self._holds_secret(raw):
            return raw  # nothing to hide and already strict JSON: the remote's bytes as they came
        try:
            return dumps({"jsonrpc": "2.0", "id": request_id, "error": redacted})
        except ValueError:  # NaN or Infinity in the remote's error data
            refused = BridgeError(BridgeErrorCode.BAD_RESPONSE,
                                  "The remote's error answer cannot be written as strict JSON; it was refused. "
                                  f"It said: {self.secrets.shorten(str(clean.get('message')))}")
            return dumps({"jsonrpc": "2.0", "id": request_id, "error": refused.error_object()})

    def _holds_secret(self, raw: bytes) -> bool:
        """Whether any known secret appears anywhere in the message as the desktop will read it.

        Fields outside `error` count too, and so do JSON escapes (`\\u0073k_live_…` reads as `sk_live_…`).
        """
        if not self.secrets.values:
            return False
        if any(secret in raw.decode("utf-8", "replace") for secret in self.secrets.values):
            return True
        if b"\\" not in raw:
            return False  # no escapes: the desktop reads these very characters
        try:
            value = decode_value(raw)
        except ValueError:
            return True  # cannot tell: rewrite it
        return bool(self.secrets.redact_value(value) != value)


def well_formed(error: Any) -> dict[str, Any]:
    """A JSON-RPC error object with an integer code and a string message, whatever the remote sent."""
    if not isinstance(error, dict):
        return {"code": INTERNAL_ERROR, "message": "The remote sent a malformed error."}
    code, message = error.get("code"), error.get("message")
    if isinstance(code, int) and not isinstance(code, bool) and isinstance(message, str):
        return error
    fixed = dict(error)
    if not isinstance(code, int) or isinstance(code, bool):
        fixed["code"] = INTERNAL_ERROR
    if not isinstance(message, str):
        fixed["message"] = str(message)
    return fixed


def plain_error_line(request_id: RequestId | None) -> bytes:
    """The answer when writing the real one failed: no detail, nothing that could fail again."""
    safe_id = request_id if isinstance(request_id, int) else None
    return json.dumps({"jsonrpc": "2.0", "id": safe_id, "error": {
        "code": INTERNAL_ERROR, "message": "Internal bridge error; see the bridge's log."}}).encode()
