"""Connection limits shared by the SMTP and IMAP listeners: in total, per client IP, per user.

Counting is pure bookkeeping; each protocol turns a refusal into its own words (``421 4.7.0`` for
SMTP, ``* BYE [UNAVAILABLE]`` or ``NO [LIMIT]`` for IMAP). The counts are those of one worker
process (see the README: with N workers a client can hold up to N times a per-IP or per-user limit).

Idle connections are the cheapest attack on a listener: they cost the attacker nothing and hold a
slot each. A listener may register the sessions that have not yet done anything useful (an SMTP
session before its first accepted MAIL) as *waiting*; under pressure (``stress_threshold`` of the
slots taken, Postfix's stress mode) they are told to hurry (a short idle timeout), and when every
slot is taken the oldest of them gives its slot to the new connection instead of the new one
being refused. A session that is working is never evicted.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from typing import Protocol

from mssante_base.listening import WorkerLoad


class LimitReached(enum.Enum):
    """Which limit kept a connection out (not an SMTP refusal: each protocol words it, see the docstring)."""

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


class WaitingSession(Protocol):
    """A session that has not yet started real work, and can be hurried or evicted."""

    def hurry(self) -> None:
        """Shorten the idle timeout: the listener is under pressure."""

    def evict(self) -> None:
        """Close now, giving the slot back (``release`` is called before this returns)."""


class ConnectionLimiter:
    """Counts open connections, in total and per client IP, shared by the sessions of a listener."""

    def __init__(self, maximum: int, per_ip: int, load: WorkerLoad | None = None, *,
                 stress_threshold: float = 1.0) -> None:
        self.maximum = maximum
        self._by_ip = KeyedCounter(per_ip)
        self._load = load  # this worker's share, published to the other workers
        self._stress_at = max(1, math.ceil(maximum * stress_threshold))
        self._waiting: dict[WaitingSession, None] = {}  # insertion order: oldest first
        self._stressed = False

    @property
    def open(self) -> int:
        return self._by_ip.total

    @property
    def under_pressure(self) -> bool:
        return self.open >= self._stress_at

    def acquire(self, ip: str) -> LimitReached | None:
        """Count a new connection; return why it is refused when over a limit."""
        if self._by_ip.count(ip) >= self._by_ip.limit:
            return LimitReached.TOO_MANY_FROM_IP
        if self.open >= self.maximum:
            if not self._waiting:
                return LimitReached.TOO_MANY_OVERALL
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.evict()
        self._by_ip.acquire(ip)
        if self._load is not None:
            self._load.opened()
        if self.under_pressure and not self._stressed:  # entering stress: the waiting sessions hurry
            self._stressed = True
            for session in list(self._waiting):
                session.hurry()
        return None

    def release(self, ip: str) -> None:
        self._by_ip.release(ip)
        if self._load is not None:
            self._load.closed()
        self._stressed = self._stressed and self.under_pressure

    def waiting(self, session: WaitingSession) -> None:
        """``session`` has not started work yet: it may be hurried, or evicted for a newcomer."""
        self._waiting[session] = None

    def is_waiting(self, session: WaitingSession) -> bool:
        return session in self._waiting

    def working(self, session: WaitingSession) -> None:
        """``session`` has started work (or ended): it is no longer hurried nor evicted."""
        self._waiting.pop(session, None)
