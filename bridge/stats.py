"""What one bridge session did, for the one line logged at exit."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class SessionStats:
    """Counters shared by the relay, the HTTP side and the transports (one event loop: no locks needed)."""

    started: float = field(default_factory=time.monotonic)
    calls: int = 0  # requests from the desktop
    errors: Counter[int] = field(default_factory=Counter)  # error answers written, by code
    retries: int = 0  # HTTP requests sent again (429/503, refused connections, dropped connections)
    reinitializations: int = 0  # remote sessions re-opened after an expiry
    bytes_in: int = 0  # from the desktop
    bytes_out: int = 0  # to the desktop

    def summary(self) -> str:
        errors = ", ".join(f"{code}×{count}" for code, count in sorted(self.errors.items())) or "none"
        uptime = _duration(time.monotonic() - self.started)
        return (f"session summary: {self.calls} call(s), errors {errors}, {self.retries} retr"
                f"{'y' if self.retries == 1 else 'ies'}, {self.reinitializations} session re-initialization(s), "
                f"{_size(self.bytes_in)} in, {_size(self.bytes_out)} out, up {uptime}")


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
