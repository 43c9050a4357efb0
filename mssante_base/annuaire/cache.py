"""A bounded cache in front of a remote annuaire: TTL, negative caching, invalidation by import.

Every RCPT and every login asks the annuaire; a directory round trip per question would make the
directory the bottleneck and a single point of failure for bursts. Answers are kept ``ttl``
seconds, "no such mailbox" ``negative_ttl`` seconds (shorter: a new mailbox should work soon), in
LRU caches of bounded size. ``annuaire import`` touches a stamp file; when it changes, everything
cached is dropped. Concurrent questions for the same key share one directory request. Errors are
never cached: the next question tries the directory again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from cachetools import TTLCache

from mssante_base.annuaire import Annuaire, MailboxEntry
from mssante_base.single_flight import SingleFlight

T = TypeVar("T")

STAMP_CHECK_INTERVAL = 1.0


def touch_stamp(path: Path) -> None:
    """Tell every cache of this HOME that the annuaire changed (called after an import)."""
    path.write_text(f"{time.time_ns()}\n", encoding="ascii")


class CachedAnnuaire(Annuaire):
    """Caches lookups of ``inner``; searches (rare, and must reflect liste rouge changes) are not cached."""

    def __init__(
        self,
        inner: Annuaire,
        *,
        size: int = 50_000,
        ttl: float = 300.0,
        negative_ttl: float = 60.0,
        stamp: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self._found: TTLCache[tuple[str, str], Any] = TTLCache(maxsize=max(size, 1), ttl=ttl, timer=clock)
        self._missing: TTLCache[tuple[str, str], bool] = TTLCache(
            maxsize=max(size // 4, 1), ttl=negative_ttl, timer=clock
        )
        self._enabled = size > 0
        self._stamp = stamp
        self._stamp_seen = self._stamp_value()
        self._stamp_checked = clock()
        self._clock = clock
        self._flights = SingleFlight()

    def _stamp_value(self) -> int | None:
        if self._stamp is None:
            return None
        try:
            return os.stat(self._stamp).st_mtime_ns
        except OSError:
            return None

    def _check_stamp(self) -> None:
        now = self._clock()
        if self._stamp is None or now - self._stamp_checked < STAMP_CHECK_INTERVAL:
            return
        self._stamp_checked = now
        value = self._stamp_value()
        if value != self._stamp_seen:
            self._stamp_seen = value
            self.clear()

    def clear(self) -> None:
        self._found.clear()
        self._missing.clear()

    async def _cached(self, key: tuple[str, str], fetch: Callable[[], Awaitable[T]], empty: T) -> T:
        self._check_stamp()
        if key in self._found:
            return self._found[key]  # type: ignore[no-any-return]
        if key in self._missing:
            return empty
        value, fetched = await self._flights.run(key, fetch)
        if not fetched:
            return value
        if self._enabled:
            if value:
                self._found[key] = value
            else:
                self._missing[key] = True
        return value

    async def lookup(self, address: str) -> MailboxEntry | None:
        address = address.strip().lower()
        return await self._cached(("address", address), lambda: self.inner.lookup(address), None)

    async def by_rpps(self, rpps: str) -> list[MailboxEntry]:
        rpps = rpps.strip()
        return await self._cached(("rpps", rpps), lambda: self.inner.by_rpps(rpps), [])

    async def by_structure(self, structure_id: str) -> list[MailboxEntry]:
        structure_id = structure_id.strip()
        return await self._cached(("structure", structure_id), lambda: self.inner.by_structure(structure_id), [])

    async def delegated_to(self, address: str) -> list[MailboxEntry]:
        address = address.strip().lower()
        return await self._cached(("delegate", address), lambda: self.inner.delegated_to(address), [])

    async def search(self, text: str, limit: int = 50) -> list[MailboxEntry]:
        return await self.inner.search(text, limit)

    async def close(self) -> None:
        await self.inner.close()
