"""The one place that decides whether something failed is tried again, and when.

The rule for requests: retry only what provably did not run on the remote.

| failure | requests retried | wait |
|---|---|---|
| connection refused / DNS / connect timeout (nothing was sent), a session has existed | all | short backoff, until `connect_timeout` has passed |
| the same before any session was ever established (a wrong URL, the remote down at start) | all | short backoff, for at most `FIRST_CONTACT_WINDOW` (1.5 s) |
| 429 Too Many Requests | all | `Retry-After`, else exponential backoff with jitter |
| 503 with `Retry-After` | all | `Retry-After` |
| 502 / 503 / 504 without `Retry-After` | idempotent only | exponential backoff with jitter |
| 404 on a request that carried `Mcp-Session-Id` | all (after a new session), up to `SESSION_RESENDS` times | none |
| connection dropped after sending (before or during the answer) | idempotent only, up to 3 times | 0.2 s, 0.4 s, 0.8 s |
| a dropped answer stream with event ids | resumed with `Last-Event-ID`, up to 3 times | the stream's `retry:`, capped by what is left of the read timeout |
| read timeout, 500, other 4xx | none | - |

A `tools/call` (or any method not known to be idempotent) that may have
reached the remote is never retried: the desktop gets an "outcome unknown"
error instead. Waits are bounded by `max_retries` and `retry_budget`; a
`Retry-After` longer than what is left of the budget fails at once, with the
hint in the error.

Long-lived streams and sessions are re-opened with `Backoff`:

| what | first wait | doubles up to |
|---|---|---|
| the server-to-client GET stream, a legacy SSE event stream, a 2026 subscription stream | 0.5 s | 30 s |
| a new session while the last new one never worked (`SessionPacer`) | none, then 0.5 s | 30 s |
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

# Methods whose repetition cannot change anything on the remote.
IDEMPOTENT_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "server/discover",
        # The Server Management API (`alloy-mcp-bridge servers`): everything but creating a server.
        "servers/list",
        "servers/get",
        "servers/update",
        "servers/delete",
    }
)

BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
CONNECT_BACKOFF_BASE = 0.1
CONNECT_BACKOFF_CAP = 1.0
FIRST_CONTACT_WINDOW = 1.5
DROP_RESENDS = 3
DROP_BACKOFF_BASE = 0.2
SESSION_RESENDS = 3
RESUME_ATTEMPTS = 3
RESUME_DEFAULT_DELAY = 1.0
STREAM_BACKOFF_FIRST = 0.5
STREAM_BACKOFF_CAP = 30.0


def is_idempotent(method: str | None) -> bool:
    """Notifications and answers (`method` None or `notifications/*`) are safe to resend too."""
    return method is None or method.startswith("notifications/") or method in IDEMPOTENT_METHODS


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    try:
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    except (OverflowError, ValueError, OSError):
        return None


def resume_delay(retry_ms: int | None, remaining: float) -> float | None:
    """How long to wait before resuming a dropped answer stream: the remote's `retry:` (or 1 s), never past
    what is left of the request's time; None when nothing is left."""
    if remaining <= 0:
        return None
    wanted = RESUME_DEFAULT_DELAY if retry_ms is None else retry_ms / 1000
    return min(wanted, remaining)


@dataclass
class RetryState:
    """How far one request has got through its retry allowance."""

    started: float
    retries: int = 0
    waited: float = 0.0
    drops: int = 0
    maybe_ran: bool = False  # resent after an answer (502, 504, 503 without Retry-After) that may follow a run


@dataclass(frozen=True)
class RetryPolicy:
    """Limits from the settings; `delay_*` answer "wait this long and retry" or None for "give up"."""

    max_retries: int
    retry_budget: float
    connect_timeout: float

    def start(self) -> RetryState:
        return RetryState(started=time.monotonic())

    def delay_after_connect_failure(self, state: RetryState, *, ever_connected: bool = True) -> float | None:
        """Nothing reached the remote; keep trying until the connect timeout has passed.

        Before the remote has ever answered, a failure is far more likely a wrong URL or a remote that
        is down than a blip: the desktop hears it within `FIRST_CONTACT_WINDOW`.
        """
        window = self.connect_timeout if ever_connected else min(self.connect_timeout, FIRST_CONTACT_WINDOW)
        remaining = window - (time.monotonic() - state.started)
        if remaining <= 0:
            return None
        delay = min(CONNECT_BACKOFF_CAP, CONNECT_BACKOFF_BASE * (2 ** min(state.retries, 10)))
        delay = min(remaining, delay * random.uniform(0.5, 1.0))
        state.retries += 1
        return delay

    def delay_after_drop(self, state: RetryState, method: str | None) -> float | None:
        """The connection failed after the request was sent: resend only what is safe to repeat."""
        if not is_idempotent(method) or state.drops >= DROP_RESENDS:
            return None
        delay = DROP_BACKOFF_BASE * (2**state.drops)
        state.drops += 1
        return delay

    def delay_after_status(
        self, state: RetryState, status: int, retry_after: float | None, method: str | None
    ) -> float | None:
        """Whether an HTTP status is retried for `method`, and after how long."""
        if status == 429 or (status == 503 and retry_after is not None):
            pass
        elif status in (502, 503, 504) and is_idempotent(method):
            pass
        else:
            return None
        if state.retries >= self.max_retries:
            return None
        if retry_after is not None:
            delay = retry_after
        else:
            delay = min(BACKOFF_CAP, BACKOFF_BASE * (2**state.retries)) * random.uniform(0.5, 1.0)
        if state.waited + delay > self.retry_budget:
            return None
        state.retries += 1
        state.waited += delay
        state.maybe_ran |= status in (502, 504) or (status == 503 and retry_after is None)
        return delay


class Backoff:
    """Exponential waits for re-opening something long-lived; `reset()` after it worked."""

    def __init__(self, first: float = STREAM_BACKOFF_FIRST, cap: float = STREAM_BACKOFF_CAP) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.first


class SessionPacer:
    """Bounds how fast new remote sessions are opened after expiries or failed openings.

    The first re-opening after a session that worked is immediate (an ordinary expiry stays
    invisible); while new sessions keep failing or expiring before anything succeeded on them,
    each further re-opening waits longer, so a misbehaving remote cannot make the bridge open
    dozens of sessions a second.
    """

    def __init__(self) -> None:
        self._backoff = Backoff()
        self._unproven = False

    def delay(self) -> float:
        """Seconds to wait before the next re-opening (and count it)."""
        if not self._unproven:
            self._unproven = True
            return 0.0
        return self._backoff.next_delay()

    def proven(self) -> None:
        """A request succeeded on the current session: the next expiry is an ordinary one again."""
        if self._unproven:
            self._unproven = False
            self._backoff.reset()
