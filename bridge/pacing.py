"""Pacing: at most N requests to the remote in any window of T seconds (`ALLOY_RATE_LIMIT`).

Alloy allows 100 requests per minute per key by default (a sliding window) and
answers 429 beyond that, without promising a `Retry-After`. Reacting to 429s
works but wastes the retry budget; when the limit is known, waiting for the
window to free up before sending is kinder to both sides.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import anyio

logger = logging.getLogger("bridge.pacing")


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
