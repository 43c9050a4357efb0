"""Delivery status notifications (RFC 3464) sent to our own senders: bounces, delay warnings, receipts.

Most senders of the queue are our mailboxes (submission only lets a principal send as its own): their
DSN is a local delivery into the sender's INBOX. Two senders are not: a patient (mes_bridge submits
their replies) and a peer operator's professional whose message to a patient we accepted; their DSN
goes back through the queue (``relay``), to the bridge or to the peer. A DSN (null sender) never
causes another. The queue keeps a "notified" mark per recipient, set only after
the DSN is committed: a crash in between sends it again (once the dead worker's claim runs out) rather
than losing it. Recipients of one message settled in one pass share one report, sent by one worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from mssante_base.message import dsn, headers

from ..store.facade import NewMessage, Store
from ..store.queue import Notice
from .local_delivery import LocalDelivery

log = logging.getLogger(__name__)

_DEFAULT_STATUS = {"failed": "5.0.0", "delayed": "4.0.0", "relayed": "2.0.0", "delivered": "2.0.0"}


def _reported(notice: Notice) -> dsn.ReportedRecipient:
    """A notice's lines in the report: the reply's enhanced code (else the action's default) and its line."""
    reply = notice.reply
    status = reply.enhanced if reply is not None and reply.enhanced else None
    return dsn.ReportedRecipient(
        address=notice.address, orcpt=notice.orcpt, action=notice.action or "failed",
        status=status or _DEFAULT_STATUS.get(notice.action, "5.0.0"), diagnostic=reply.line if reply else "",
        remote_mta=notice.remote_mta, last_attempt=notice.last_attempt_at, will_retry_until=None,
    )


class Notices:
    """Builds DSNs and delivers them to the senders' mailboxes."""

    def __init__(self, *, store: Store, delivery: LocalDelivery, hostname: str, domain: str,
                 delay_warning: float, local_domains: Iterable[str] = (),
                 relay: Callable[[bytes, NewMessage, str], Awaitable[None]] | None = None) -> None:
        self._store = store
        self._delivery = delivery
        self._local_domains = {d.lower() for d in (domain, *local_domains)}
        self._relay = relay
        self._hostname = hostname
        self._from = f"MAILER-DAEMON@{domain}"
        self._delay_warning = delay_warning or None

    async def send_pending(self, owner: str, *, lease: float) -> int:
        """Send every DSN the queue gives ``owner`` (a queue runner) to send; returns how many reports were
        delivered. Each notice is one worker's at a time (see store.queue): one report per outcome."""
        notices = await asyncio.to_thread(self._store.queue.pending_notices, owner, now=datetime.now(UTC),
                                          delay_warning=self._delay_warning, lease=lease)
        groups: dict[tuple[str, str], list[Notice]] = defaultdict(list)
        for notice in notices:
            groups[(notice.queue_id, notice.kind)].append(notice)
        sent = 0
        for (queue_id, kind), group in groups.items():
            if not await self._report(queue_id, kind, group):
                continue  # the mark stays: retried later, or by the node that has the file
            ids = [n.recipient_id for n in group]
            mark = self._store.queue.mark_warned if kind == "delay" else self._store.queue.mark_notified
            await asyncio.to_thread(mark, ids)
            sent += 1
        return sent

    async def _report(self, queue_id: str, kind: str, group: list[Notice]) -> bool:
        """Deliver the report of one message's notices; False when it could not be sent now."""
        first = group[0]
        if not first.sender:  # a bounce of a bounce: RFC 3461 6.2, never (its file is not even read)
            return True
        try:
            original = await asyncio.to_thread(self._store.queue.read, first.blob_key)
        except OSError as exc:  # not on this node: a storage fault, said in one line; another node may send it
            log.error("queue %s: %s DSN waits: the message file is unreadable on this node (%s)", queue_id, kind,
                      exc.strerror or type(exc).__name__)
            return False
        try:
            await self._deliver(first.sender, original, [_reported(n) for n in group], envid=first.envid,
                                ret=first.ret, arrival=first.created_at)
        except Exception:  # the sender's mailbox cannot be written now
            log.exception("queue %s: %s DSN could not be delivered", queue_id, kind)
            return False
        log.info("queue %s: %s DSN for %d recipients delivered to the sender", queue_id, kind, len(group))
        return True

    async def local_success(self, sender: str, message: NewMessage, addresses: list[str],
                            envid: str | None) -> None:
        """The receipt for local recipients that asked NOTIFY=SUCCESS (delivered at once, at submission)."""
        now = datetime.now(UTC)
        recipients = [dsn.ReportedRecipient(address=a, orcpt=None, action="delivered", status="2.0.0",
                                            diagnostic="", remote_mta="", last_attempt=now, will_retry_until=None)
                      for a in addresses]
        try:
            await self._deliver(sender, message.raw, recipients, envid=envid, ret="HDRS",
                                arrival=message.received_at)
        except Exception:
            log.exception("delivery receipt for a local delivery could not be stored")

    async def _deliver(self, sender: str, original: bytes, recipients: list[dsn.ReportedRecipient], *,
                       envid: str | None, ret: str | None, arrival: datetime) -> None:
        now = datetime.now(UTC)
        report = dsn.build_report(
            reporting_mta=self._hostname, original_sender=sender, envid=envid, ret=ret, recipients=recipients,
            original=original, arrival=arrival, now=now, from_address=self._from,
        )
        summary = headers.summarise(report)
        message = NewMessage(raw=report, message_id=summary.message_id, from_addr=summary.from_text,
                             subject=summary.subject, authentication_results="", received_at=now)
        if sender.rpartition("@")[2].lower() in self._local_domains or self._relay is None:
            await self._delivery.deliver(message, [sender])
        else:
            await self._relay(report, message, sender)
