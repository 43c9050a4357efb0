"""The read-receipt sender: delivers what the store's outbox holds to the operator, as the patient.

Receipts are queued in the same transaction as the opening that causes them, so none is lost when the
operator is away: this loop submits each due item (AUTH EXTERNAL, MAIL FROM the patient), retries
temporary failures on ``outbox_retry`` (then hourly) until ``outbox_max_age``, and settles permanent
refusals (the operator's reply is kept in the item and audited), e.g. a receipt to a professional who
ended the exchange, which the operator's conversation rule refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from mssante_base.patients.ins import Ins

from .outgoing import BridgeSendError, submit
from .settings import BridgeSettings
from .store import BridgeStore, OutboxItem
from .store.core import now

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
HOURLY = 3600


def next_attempt(item: OutboxItem, schedule: list[int], *, max_age: int, at: datetime) -> datetime | None:
    """When to try again after a temporary failure; None once the item is too old to be worth sending."""
    delay = schedule[item.attempts] if item.attempts < len(schedule) else HOURLY
    retry_at = at + timedelta(seconds=delay)
    return None if retry_at > item.created_at + timedelta(seconds=max_age) else retry_at


class OutboxSender:
    """One task: every POLL_SECONDS (or when woken), send the due items one by one."""

    def __init__(self, store: BridgeStore, settings: BridgeSettings) -> None:
        self.store = store
        self.settings = settings
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mes_bridge outbox")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.send_due()
            except Exception:
                log.exception("outbox round failed; retried at the next round")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()

    async def send_due(self) -> int:
        """Send every item due now; how many the operator accepted."""
        sent = 0
        for item in await asyncio.to_thread(self.store.due_outbox):
            sent += await self._send(item)
        return sent

    def _retry_at(self, item: OutboxItem) -> datetime | None:
        return next_attempt(item, self.settings.outbox_retry, max_age=self.settings.outbox_max_age, at=now())

    async def _send(self, item: OutboxItem) -> int:
        try:
            accepted, refused = await submit(self.settings, Ins(item.ins).address,
                                             [item.recipient], item.raw)
        except BridgeSendError as exc:
            retry_at = self._retry_at(item) if exc.temporary else None
            log.warning("outbox item=%d kind=%s not sent (%s)%s", item.id, item.kind, exc.code,
                        "" if retry_at else "; given up")
            await asyncio.to_thread(self.store.outbox_failed, item, exc.reply, retry_at=retry_at)
            return 0
        if accepted:
            await asyncio.to_thread(self.store.outbox_sent, item)
            log.info("outbox item=%d kind=%s sent", item.id, item.kind)
            return 1
        reply = refused.get(item.recipient, "refused")
        retry_at = self._retry_at(item) if reply[:1] == "4" else None
        log.warning("outbox item=%d kind=%s refused%s", item.id, item.kind, "" if retry_at else "; given up")
        await asyncio.to_thread(self.store.outbox_failed, item, reply, retry_at=retry_at)
        return 0
