"""Pacing: at most N requests to the remote in any window of T seconds (`ALLOY_RATE_LIMIT`).

Alloy allows 100 requests per minute per key by default (a sliding window) and
answers 429 beyond that, without promising a `Retry-After`. Reacting to 429s
works but wastes the retry budget; when the limit is known, waiting for the
window to free up before sending is kinder to both sides.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque

import anyio

logger = logging.getLogger(__name__)

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*(s|sec|second|m|min|minute|h|hour)?\s*$")
_PERIOD_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate_limit(text: str) -> tuple[int, float] | None:
    """`100/min` -> (100, 60.0); None when malformed or not positive."""
    match = _RATE.match(text)
    if match is None:
        return None
    count, amount, unit = int(match[1]), match[2], match[3] or "s"
    if not amount and not match[3]:
        return None
    try:
        seconds = (float(amount) if amount else 1.0) * _PERIOD_SECONDS[unit]
    except ValueError:
        return None
    return (count, seconds) if count > 0 and seconds > 0 else None


class Pacer:
    """A sliding-window limit shared by every request the bridge sends."""

    def __init__(self, count: int, period: float) -> None:
        self.count = count
        self.period = period
        self._sent: deque[float] = deque()
        self._lock = anyio.Lock()

    async def wait_turn(self) -> float:
        """Wait until one more request fits in the window, and claim it; returns the seconds waited."""
        waited = 0.0
        async with self._lock:  # one waiter at a time keeps the order of requests
            while True:
                now = time.monotonic()
                while self._sent and now - self._sent[0] >= self.period:
                    self._sent.popleft()
                if len(self._sent) < self.count:
                    self._sent.append(now)
                    if waited >= 0.5:
                        logger.info("paced a request by %.1fs to stay within %d per %gs", waited, self.count,
                                    self.period)
                    return waited
                delay = self._sent[0] + self.period - now
                waited += delay
                await anyio.sleep(delay)
