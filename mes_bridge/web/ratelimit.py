"""Login attempt limits (per INS and per client address), in memory: one web process serves the space.

A moving window counts every attempt, successful or not, so that guessing a password, a one-time code
or an activation code costs the same whatever the answers were; an unknown INS is counted exactly as
a known one (the limit must not reveal which INS have a space).
"""

from __future__ import annotations

import math
import time

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class LoginLimits:
    def __init__(self, per_ins: str, per_ip: str) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_ins = parse(per_ins)
        self._per_ip = parse(per_ip)

    def hit(self, kind: str, *, ins: str | None, ip: str) -> int | None:
        """Count one attempt of ``kind``; None when allowed, else the seconds until the next is."""
        hits = [(self._per_ip, (kind, "ip", ip))]
        if ins:
            hits.append((self._per_ins, (kind, "ins", ins.upper())))
        refused = [(item, ids) for item, ids in hits if not self._limiter.hit(item, *ids)]
        if not refused:
            return None
        resets = [self._limiter.get_window_stats(item, *ids).reset_time for item, ids in refused]
        return max(1, math.ceil(max(resets) - time.time()))
