"""A submitted message committed in one transaction: local INBOXes, the Sent copy and the outbound queue.

One blob serves every copy (written and fsync'd once, before the transaction), so a report sent to
three local colleagues and two peer operators costs one file. Either all of it is committed or none:
the client's 250 then means the message is in every local mailbox and in the queue for the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, select

from mssante_base.patients.conversations import ConversationEvent
from mssante_base.storage.blobs import BlobFile

from .facade import Store
from .models import Account, Mailbox
from .queue import new_queue_id
from .write_unit import DeliveryOutcome, NewMessage, OutboundEnvelope, WriteUnit, normalize_address

SENT = "\\Sent"


@dataclass(frozen=True)
class Submission:
    """What one accepted message must become."""

    message: NewMessage
    local_recipients: tuple[str, ...] = ()
    sent_copy_for: str | None = None  # the mailbox whose Sent folder keeps a copy (the sender's)
    outbound: OutboundEnvelope | None = None  # recipients at peer operators
    expires_at: datetime | None = None  # when the queue gives up (outbound only)
    conversations: tuple[ConversationEvent, ...] = ()  # committed with the message, never without it
    queue_id: str | None = None  # the listener's id (reply, Received, logs): the queue entry takes it


@dataclass(frozen=True)
class SubmissionResult:
    local: dict[str, DeliveryOutcome]
    queue_id: str | None
    sent_copy: bool


class Submissions:
    """Commits submitted messages, several per transaction (group commit)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._with_folders: set[str] = set()  # accounts known to have their special-use folders
        self._find_sent = (  # built once: the statement's cache key is not computed again per batch
            select(Account.address, Mailbox.id).join(Account, Mailbox.account_id == Account.id)
            .where(Account.address.in_(bindparam("addresses", expanding=True)), Mailbox.special_use == SENT)
        )

    def submit_many(self, items: list[Submission]) -> list[SubmissionResult]:
        store = self._store
        for item in items:
            if item.outbound is not None and item.outbound.recipients and item.expires_at is None:
                raise ValueError("an outbound submission needs expires_at")
        inboxes = store.ensure_inboxes(normalize_address(a) for item in items for a in item.local_recipients)
        self._ensure_folders(item.sent_copy_for for item in items if item.sent_copy_for)
        blobs = store.write_blobs([item.message.raw for item in items])
        with store.transaction() as tx:
            try:
                sent = self._sent_folders(tx.conn, {i.sent_copy_for for i in items if i.sent_copy_for})
                # Every folder written below is locked here, in id order, so concurrent commits cannot deadlock.
                tx.lock_folders({*inboxes.values(), *(f for f in sent.values() if f)})
                results = [_one(tx, item, blob, inboxes, sent) for item, blob in zip(items, blobs, strict=True)]
                # Once for the batch: rows are then locked in one order (see WriteUnit.record_conversation_events).
                tx.record_conversation_events([event for item in items for event in item.conversations])
            except BaseException:
                store.remove_blobs(blobs)
                raise
        store.remove_blobs(b for b, r in zip(blobs, results, strict=True) if not _references(r))
        return results

    def _sent_folders(self, conn: Connection, addresses: set[str]) -> dict[str, int | None]:
        """The Sent folder of each address (None: the user deleted it), by the address as given."""
        if not addresses:
            return {}
        wanted = {a: normalize_address(a) for a in addresses}
        rows = conn.execute(self._find_sent, {"addresses": sorted(set(wanted.values()))})
        found = {row.address: row.id for row in rows}
        return {a: found.get(n) for a, n in wanted.items()}

    def _ensure_folders(self, addresses: Iterable[str]) -> None:
        for address in {normalize_address(a) for a in addresses} - self._with_folders:
            self._store.folders.ensure_account(address)
            self._with_folders.add(address)


def _one(tx: WriteUnit, item: Submission, blob: BlobFile | None, inboxes: dict[str, int],
         sent_folders: dict[str, int | None]) -> SubmissionResult:
    assert blob is not None
    blob_id = tx.insert_blob(blob)
    local: dict[str, DeliveryOutcome] = {}
    for address in sorted({normalize_address(a) for a in item.local_recipients}):
        if tx.is_duplicate(inboxes[address], item.message):
            local[address] = DeliveryOutcome.DUPLICATE
            continue
        local[address] = tx.deliver(inboxes[address], item.message, blob_id)
    sent = False
    if item.sent_copy_for:
        folder_id = sent_folders[item.sent_copy_for]
        if folder_id is not None:  # the user deleted their Sent folder: no copy, no error
            tx.deliver(folder_id, item.message, blob_id, flags="\\Seen", dedup=False)
            sent = True
    queue_id = None
    if item.outbound is not None and item.outbound.recipients:
        assert item.expires_at is not None
        queue_id = tx.enqueue(blob_id, len(item.message.raw), item.outbound, now=item.message.received_at,
                              expires_at=item.expires_at, queue_id=item.queue_id or new_queue_id())
    result = SubmissionResult({a: local[normalize_address(a)] for a in item.local_recipients}, queue_id, sent)
    if not _references(result):
        tx.drop_blob(blob_id)
    return result


def _references(result: SubmissionResult) -> bool:
    """Whether anything committed points at the message's blob."""
    return result.sent_copy or result.queue_id is not None or DeliveryOutcome.STORED in result.local.values()
