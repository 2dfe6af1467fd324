"""Per-user token buckets for commands, in this process (a shared limiter is future work)."""

from __future__ import annotations

import math
import time


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, clock=time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate_per_s, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, at)

    def retry_after(self, user: str) -> int:
        """0 when the user may go ahead now (a token is taken), else seconds to wait."""
        if self.rate <= 0:
            return 0
        now = self.clock()
        tokens, at = self._buckets.get(user, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1 - 1e-9:  # float drift must not refuse a client that waited Retry-After
            self._buckets[user] = (tokens - 1, now)
            if len(self._buckets) > 100_000:  # forget idle users so memory stays bounded
                self._buckets = {u: b for u, b in self._buckets.items() if now - b[1] < 60}
            return 0
        self._buckets[user] = (tokens, now)
        return max(1, math.ceil((1 - tokens) / self.rate))
