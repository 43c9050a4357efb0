"""Connection limits shared by the SMTP and IMAP listeners: in total, per client IP, per user.

Counting is pure bookkeeping; each protocol turns a refusal into its own words (``421 4.7.0`` for
SMTP, ``* BYE [UNAVAILABLE]`` or ``NO [LIMIT]`` for IMAP). The counts are those of one worker
process (see the README: with N workers a client can hold up to N times a per-IP or per-user limit).
"""

from __future__ import annotations

import enum
from collections import Counter

from .listening import WorkerLoad


class Refusal(enum.Enum):
    """Why a connection was not admitted."""

    TOO_MANY_FROM_IP = "too many connections from your address"
    TOO_MANY_OVERALL = "too many connections"
    TOO_MANY_FOR_USER = "too many connections for this account"


class KeyedCounter:
    """Open connections per key (an IP, a login), refusing the one that would pass ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def count(self, key: str) -> int:
        return self._counts[key]

    def acquire(self, key: str) -> bool:
        if self._counts[key] >= self.limit:
            return False
        self._counts[key] += 1
        return True

    def release(self, key: str) -> None:
        self._counts[key] -= 1
        if self._counts[key] <= 0:
            del self._counts[key]


class ConnectionLimiter:
    """Counts open connections, in total and per client IP, shared by the sessions of a listener."""

    def __init__(self, maximum: int, per_ip: int, load: WorkerLoad | None = None) -> None:
        self.maximum = maximum
        self._by_ip = KeyedCounter(per_ip)
        self._load = load  # this worker's share, published to the other workers

    @property
    def open(self) -> int:
        return self._by_ip.total

    def acquire(self, ip: str) -> Refusal | None:
        """Count a new connection; return why it is refused when over a limit."""
        if self._by_ip.count(ip) >= self._by_ip.limit:
            return Refusal.TOO_MANY_FROM_IP
        if self.open >= self.maximum:
            return Refusal.TOO_MANY_OVERALL
        self._by_ip.acquire(ip)
        if self._load is not None:
            self._load.opened()
        return None

    def release(self, ip: str) -> None:
        self._by_ip.release(ip)
        if self._load is not None:
            self._load.closed()
