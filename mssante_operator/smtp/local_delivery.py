"""Delivery to local mailboxes, with group commit.

Each SMTP session waits for its own message to be durable before answering 250, but many sessions
deliver at once: instead of one transaction (and one WAL fsync) per message, deliveries that arrive
while a commit is running are committed together in the next one. A caller's future resolves only
after the transaction holding its message has committed, so the durability promise is unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor, ThreadPoolExecutor

from ..store.facade import DeliveryOutcome, NewMessage, Store

log = logging.getLogger(__name__)

_Pending = tuple[NewMessage, list[str], asyncio.Future[dict[str, DeliveryOutcome]]]


class LocalDelivery:
    """Commits messages into local mailboxes, batching concurrent deliveries into one transaction."""

    def __init__(self, store: Store, *, max_batch: int = 64, executor: Executor | None = None) -> None:
        self._store = store
        self._max_batch = max_batch
        # One writer thread: SQLite has a single writer anyway, and batching needs a queue to form.
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def deliver(self, message: NewMessage, addresses: list[str]) -> dict[str, DeliveryOutcome]:
        """Store ``message`` for ``addresses``; returns once it is committed (or raises)."""
        future: asyncio.Future[dict[str, DeliveryOutcome]] = asyncio.get_running_loop().create_future()
        self._pending.append((message, addresses, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            items = [(message, addresses) for message, addresses, _ in batch]
            try:
                results = await loop.run_in_executor(self._executor, self._store.deliver_many, items)
            except Exception as exc:  # every waiter must learn of the failure: they answer 4xx
                log.exception("local delivery of %d messages failed", len(batch))
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future), outcome in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(outcome)

    async def close(self) -> None:
        """Wait for pending commits, then stop the writer thread."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        self._executor.shutdown(wait=True)
