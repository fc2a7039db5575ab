"""Per-user command rate limits, so one user cannot delay everyone else's answers."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from .caches import IdleCache

MAX_USERS_TRACKED = 10_000


class Verdict(enum.Enum):
    ALLOW = "allow"
    SLOW_DOWN = "slow down"  # the first command over the limit: tell the user once
    IGNORE = "ignore"  # further commands over the limit: silence


@dataclass
class _Bucket:
    tokens: float
    updated: float
    warned: bool = False


class RateLimiter:
    """A token bucket per user: ``limit`` commands per ``period`` seconds, refilled evenly."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: IdleCache[str, _Bucket] = IdleCache(MAX_USERS_TRACKED, 3600, clock)

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, user_id: str, limit: int, period: float) -> Verdict:
        if limit <= 0:
            return Verdict.ALLOW
        now = self.clock()
        self._buckets.idle_seconds = max(period, 1.0)
        bucket = self._buckets.get(user_id)
        if bucket is None:
            bucket = _Bucket(tokens=float(limit), updated=now)
        self._buckets.put(user_id, bucket)  # used now, exactly (a read refreshes only now and then)
        bucket.tokens = min(float(limit), bucket.tokens + (now - bucket.updated) * limit / period)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            bucket.warned = False
            return Verdict.ALLOW
        if bucket.warned:
            return Verdict.IGNORE
        bucket.warned = True
        return Verdict.SLOW_DOWN

    def sweep(self) -> None:
        """Forget users whose bucket has been full for a while."""
        self._buckets.sweep()
