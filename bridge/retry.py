"""The one place that decides whether a failed request is sent again, and when.

The rule: retry only what provably did not run on the remote.

| failure | requests retried | wait |
|---|---|---|
| connection refused / DNS / connect timeout (nothing was sent) | all | short backoff, until `connect_timeout` has passed |
| 429 Too Many Requests | all | `Retry-After`, else exponential backoff with jitter |
| 503 with `Retry-After` | all | `Retry-After` |
| 502 / 503 / 504 without `Retry-After` | idempotent only | exponential backoff with jitter |
| 404 on a request that carried `Mcp-Session-Id` | all (after a new session) | none |
| connection dropped after sending (before or during the answer) | idempotent only, up to 3 times | 0.2 s, 0.4 s, 0.8 s |
| read timeout, 500, other 4xx | none | - |

A `tools/call` (or any method not known to be idempotent) that may have
reached the remote is never retried: the desktop gets an "outcome unknown"
error instead. Waits are bounded by `max_retries` and `retry_budget`; a
`Retry-After` longer than what is left of the budget fails at once, with the
hint in the error.
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
    }
)

BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
CONNECT_BACKOFF_BASE = 0.1
CONNECT_BACKOFF_CAP = 1.0


def is_idempotent(method: str | None) -> bool:
    """Notifications and answers (`method` None or `notifications/*`) are safe to resend too."""
    return method is None or method.startswith("notifications/") or method in IDEMPOTENT_METHODS


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


DROP_RESENDS = 3
DROP_BACKOFF_BASE = 0.2


@dataclass
class RetryState:
    """How far one request has got through its retry allowance."""

    started: float
    retries: int = 0
    waited: float = 0.0
    drops: int = 0


@dataclass(frozen=True)
class RetryPolicy:
    """Limits from the settings; `delay_*` answer "wait this long and retry" or None for "give up"."""

    max_retries: int
    retry_budget: float
    connect_timeout: float

    def start(self) -> RetryState:
        return RetryState(started=time.monotonic())

    def delay_after_connect_failure(self, state: RetryState) -> float | None:
        """Nothing reached the remote; keep trying until the connect timeout has passed."""
        elapsed = time.monotonic() - state.started
        remaining = self.connect_timeout - elapsed
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
        return delay
