"""Failed logins slow down, then stop, further attempts: per account and per client IP.

Each key (an account, an IP address) keeps the times of its recent failures (a sliding window).
After ``free`` failures within the window, every further answer is delayed, the delay doubling with
each failure up to ``max_delay``; at ``lockout`` failures within the window the key is locked: the
authenticator refuses without even checking the secret, until old failures leave the window. IP
limits are looser than account limits because many professionals share a hospital's address.

A success clears the account's failures (whoever succeeds knows the secret) but not the IP's: an
attacker holding one valid account must not reset the counter of the address they spray others from.

Memory is bounded: at most ``max_keys`` keys are remembered (least recently failed dropped first), and
each keeps at most ``lockout`` timestamps. The clock is injectable for tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Thresholds for one kind of key."""

    free: int  # failures in the window answered without delay
    lockout: int  # failures in the window that lock the key
    window: float = 900.0  # seconds a failure is remembered


ACCOUNT_LIMITS = Limits(free=3, lockout=10)
IP_LIMITS = Limits(free=10, lockout=100)


class FailureLimiter:
    """Sliding-window failure counts with exponential delays and lockout. Thread-safe."""

    def __init__(
        self,
        *,
        account: Limits = ACCOUNT_LIMITS,
        ip: Limits = IP_LIMITS,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if account.lockout < 1 or ip.lockout < 1 or max_keys < 1:
            raise ValueError("lockout thresholds and max_keys must be positive")
        self._limits = {"account": account, "ip": ip}
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    @staticmethod
    def _keys(account: str, ip: str) -> list[tuple[str, str]]:
        keys = []
        if account:
            keys.append(("account", account.strip().lower()))
        if ip:
            keys.append(("ip", ip))
        return keys

    def _recent(self, key: tuple[str, str], now: float) -> int:
        """Failures of ``key`` within its window (older ones are dropped)."""
        times = self._failures.get(key)
        if times is None:
            return 0
        window = self._limits[key[0]].window
        while times and now - times[0] >= window:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        return len(times)

    def _delay(self, kind: str, count: int) -> float:
        free = self._limits[kind].free
        if count <= free:
            return 0.0
        return min(self.max_delay, self.base_delay * 2 ** min(count - free - 1, 32))

    def delay_for(self, account: str, ip: str) -> float:
        """Seconds to wait before answering an attempt for ``account`` from ``ip``."""
        with self._lock:
            now = self._clock()
            return max(
                (self._delay(key[0], self._recent(key, now)) for key in self._keys(account, ip)), default=0.0
            )

    def locked(self, account: str, ip: str) -> bool:
        """True when the account or the IP has reached its lockout threshold within the window."""
        with self._lock:
            now = self._clock()
            return any(
                self._recent(key, now) >= self._limits[key[0]].lockout for key in self._keys(account, ip)
            )

    def failed(self, account: str, ip: str) -> float:
        """Record a failure; returns the delay to apply before answering it."""
        with self._lock:
            now = self._clock()
            for key in self._keys(account, ip):
                self._recent(key, now)
                times = self._failures.get(key)
                if times is None:
                    times = self._failures[key] = deque(maxlen=self._limits[key[0]].lockout)
                times.append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
        return self.delay_for(account, ip)

    def succeeded(self, account: str, ip: str) -> None:
        """Forget the account's failures (not the IP's: see the module docstring)."""
        if not account:
            return
        with self._lock:
            self._failures.pop(("account", account.strip().lower()), None)

    async def penalty(self, account: str, ip: str) -> float:
        """Record a failure and sleep its delay; returns the delay slept."""
        delay = self.failed(account, ip)
        if delay > 0:
            await asyncio.sleep(delay)
        return delay

    def __len__(self) -> int:
        return len(self._failures)
