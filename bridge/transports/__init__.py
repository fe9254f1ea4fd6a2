"""The remote side: one module per transport, and the parts they share.

| module | one job |
|---|---|
| `base.py` | the contract (`Upstream`, `Sink`) and `TaskHost`, the shared task and failure handling |
| `selection.py` | which transport serves the session (`ALLOY_TRANSPORT`, fallbacks) |
| `streamable_http.py` | Streamable HTTP: sessions, expiry and re-opening, resumption |
| `server_stream.py` | Streamable HTTP's server-to-client GET stream, kept open for the session |
| `legacy_sse.py` | the 2024-11-05 HTTP+SSE transport |
| `stateless.py` | the 2026-07-28 (stateless) revision, adapted for a handshake-era desktop |
| `modern_wire.py` | the 2026-07-28 wire translated: envelope, routing headers, what the desktop must not see |
| `responses.py` | reading one response (JSON or SSE) up to its answer |
| `event_stream.py` | server-sent events decoded from bytes |
| `session.py` | what a new session must be told, and the gate that holds messages until it exists |
| `replies.py` | the bridge's own requests and the answers they await |
"""

from bridge.transports.base import Sink, Upstream
from bridge.transports.selection import make_upstream

__all__ = ["Sink", "Upstream", "make_upstream"]
