"""Group commit: many sessions' writes in one transaction, each caller answered after the commit.

Each SMTP session waits for its own message to be durable before answering 250, but many sessions
write at once: instead of one transaction (and one WAL fsync) per message, writes that arrive while a
commit is running are committed together in the next one. A caller's future resolves only after the
transaction holding its item has committed (or fails with the transaction's error), so the durability
promise is unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """Runs ``commit(items) -> results`` (one result per item, same order) on ``executor`` in batches."""

    def __init__(self, commit: Callable[[list[Item]], list[Result]], executor: Executor, *,
                 max_batch: int = 64, what: str = "write") -> None:
        self._commit = commit
        self._executor = executor
        self._max_batch = max_batch
        self._what = what
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Commit ``item`` with whatever else is waiting; returns once it is committed (or raises)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                results = await loop.run_in_executor(self._executor, self._commit, [item for item, _ in batch])
            except Exception as exc:  # every waiter must learn of the failure: they answer 4xx
                log.exception("%s of %d items failed", self._what, len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def drain(self) -> None:
        """Wait for the commits in progress."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
