"""Concurrent questions for the same key share one request (the annuaire cache, the patients' registry).

A burst of RCPTs for one recipient must not become a burst of directory or registry requests: the
first caller fetches, the others await its result (or its error, which is not kept for later callers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class SingleFlight:
    """Runs at most one fetch per key at a time; callers arriving meanwhile share its outcome."""

    def __init__(self) -> None:
        self._in_flight: dict[Hashable, asyncio.Future[Any]] = {}

    async def run(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(the value, whether this caller fetched it) — only the fetcher should cache it."""
        running = self._in_flight.get(key)
        if running is not None:
            return await asyncio.shield(running), False
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            value = await fetch()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            del self._in_flight[key]
        future.set_result(value)
        return value, True
