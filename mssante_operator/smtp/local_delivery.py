"""Delivery to local mailboxes, with group commit (see group_commit.py)."""

from __future__ import annotations

from concurrent.futures import Executor, ThreadPoolExecutor

from ..store.facade import DeliveryOutcome, NewMessage, Store
from .group_commit import GroupCommit

_Item = tuple[NewMessage, list[str]]


class LocalDelivery:
    """Commits messages into local mailboxes, batching concurrent deliveries into one transaction.

    Its single writer thread is shared with the other group commits of the process (submission):
    SQLite has one writer anyway, and batching needs a queue to form.
    """

    def __init__(self, store: Store, *, max_batch: int = 64, executor: Executor | None = None) -> None:
        self.store = store
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._commits: GroupCommit[_Item, dict[str, DeliveryOutcome]] = GroupCommit(
            store.deliver_many, self.executor, max_batch=max_batch, what="local delivery")

    async def deliver(self, message: NewMessage, addresses: list[str]) -> dict[str, DeliveryOutcome]:
        """Store ``message`` for ``addresses``; returns once it is committed (or raises)."""
        return await self._commits.submit((message, addresses))

    async def close(self) -> None:
        """Wait for pending commits, then stop the writer thread."""
        await self._commits.drain()
        self.executor.shutdown(wait=True)
