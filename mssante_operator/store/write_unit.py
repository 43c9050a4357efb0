"""The write unit: the one way mail enters, moves in and leaves the store, inside one write transaction.

Delivery, submission (with its Sent copy, patient mail, DSNs, the bridge's hand-off), APPEND, COPY/MOVE,
EXPUNGE, folder deletion, the outbound queue and patient conversations all change mail through a
:class:`WriteUnit` (``Database.transaction()``), as mox's ``MessageAdd`` does: the rules live here once.

- Folders are locked first, in id order (:meth:`WriteUnit.lock_folders`), and only then are their
  messages touched: two transactions cannot take a message row and a folder row in opposite orders
  (PostgreSQL deadlock). SQLite's write transaction is exclusive already.
- A folder's UIDs and MODSEQs come from one UPDATE of its row (:meth:`WriteUnit.allocate`).
- A blob row is inserted once its file is durable, and deleted when nothing points at it any more.
- The folders a transaction changed are announced once, at commit (NOTIFY on PostgreSQL).

The statements of the delivery hot path are built once per database (:class:`WriteStatements`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mssante_base.patients.conversations import ConversationAction, ConversationEvent, ConversationStatus
from mssante_base.storage.blobs import BlobFile
from mssante_base.storage.compiled import Compiled, CompiledIn, Reader
from mssante_base.storage.message_ids import dedup_key

from .blob_refs import drop_unreferenced_blobs
from .models import (
    Blob,
    Conversation,
    ConversationEventRow,
    ExpungedMessage,
    Mailbox,
    Message,
    OutboundMessage,
    OutboundRecipient,
    RecipientStatus,
)

CHANGED_FOLDERS = "mssante_changed_folders"  # Connection.info key: folder ids to tell the listeners after commit
CHANGES_CHANNEL = "mssante_folders"  # PostgreSQL NOTIFY channel: payload "id,id,…" of changed folders
RET_VALUES = frozenset({"FULL", "HDRS"})
audit = logging.getLogger("mssante_operator.audit")


class FolderError(Exception):
    """A folder operation that cannot be done; the text is fit for an IMAP NO reply."""


class FolderExists(FolderError):
    pass


class NoSuchFolder(FolderError):
    pass


class DeliveryOutcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class NewMessage:
    """A message ready to be stored; the headers are decoded by the caller."""

    raw: bytes
    message_id: str | None
    from_addr: str
    subject: str
    authentication_results: str
    received_at: datetime


@dataclass(frozen=True)
class QueuedRecipient:
    address: str
    orcpt: str | None = None  # decoded ORCPT value, e.g. "rfc822;a@b.fr"
    notify: tuple[str, ...] | None = None  # ("SUCCESS", "FAILURE", "DELAY") or ("NEVER",); None: not given


@dataclass(frozen=True)
class OutboundEnvelope:
    sender: str  # "" = null sender (a DSN: never bounced)
    recipients: tuple[QueuedRecipient, ...]
    message_id: str | None
    submitted_by: str  # login of the principal, for the audit trail
    envid: str | None = None
    ret: str | None = None  # "FULL" | "HDRS" | None


def normalize_address(address: str) -> str:
    """Accounts are keyed by the lower-cased address, as the annuaire lists them."""
    normalized = address.strip().lower()
    if not normalized:
        raise ValueError("empty mailbox address")
    return normalized


def check_envelope(envelope: OutboundEnvelope) -> None:
    """ValueError unless the envelope can be queued (checked before any file is written)."""
    if not envelope.recipients:
        raise ValueError("a queued message needs at least one recipient")
    if envelope.ret is not None and envelope.ret not in RET_VALUES:
        raise ValueError(f"RET must be FULL or HDRS, not {envelope.ret!r}")
    for recipient in envelope.recipients:
        _domain(recipient.address)


def zone_offset(when: datetime) -> int:
    """Minutes east of UTC of an aware datetime (what ``internaldate_offset`` stores)."""
    offset = when.utcoffset()
    return int(offset.total_seconds() // 60) if offset is not None else 0


class WriteStatements:
    """The unit's statements, built once per database: SQLAlchemy then skips rebuilding and re-keying them
    for every message (a third of the store's CPU time per delivered message otherwise)."""

    def __init__(self, dialect: str) -> None:
        self.insert = (postgresql if dialect == "postgresql" else sqlite).insert  # INSERT with ON CONFLICT
        self.lock_folders = CompiledIn(lambda ids: select(Mailbox.id).where(Mailbox.id.in_(ids))
                                       .order_by(Mailbox.id).with_for_update())
        self.find_duplicate = (
            select(Message.id)
            .where(Message.mailbox_id == bindparam("mailbox_id"), Message.dedup_key == bindparam("message_id"))
            .limit(1)
        )
        self.insert_blob = insert(Blob).returning(Blob.id)
        self.allocate = (
            update(Mailbox)
            .where(Mailbox.id == bindparam("mailbox_id"))
            .values(uidnext=Mailbox.uidnext + bindparam("count"), highestmodseq=Mailbox.highestmodseq + 1)
            .returning(Mailbox.uidnext, Mailbox.highestmodseq)
        )
        self.bump_modseq = Compiled(update(Mailbox).where(Mailbox.id == bindparam("mailbox_id"))
                                    .values(highestmodseq=Mailbox.highestmodseq + 1).returning(Mailbox.highestmodseq))
        # Belt and braces: a writer that skipped the duplicate check still cannot create a duplicate.
        self.insert_message = self.insert(Message).on_conflict_do_nothing(
            index_elements=["mailbox_id", "dedup_key"], index_where=Message.dedup_key.is_not(None)
        ).returning(Message.id)
        self.insert_queued = insert(OutboundMessage).returning(OutboundMessage.id)
        self.insert_queued_recipients = insert(OutboundRecipient)
        upsert = self.insert(Conversation)
        new = upsert.excluded
        on_pair = ["patient_ins", "mailbox"]
        # An open (re)sets the opening and clears the end; an end sets only the end, and creates the row
        # (opened by the same event) for a pair never opened.
        self.open_conversation = upsert.on_conflict_do_update(index_elements=on_pair, set_={
            "status": new.status, "opened_at": new.opened_at, "opened_by": new.opened_by,
            "opened_by_message_id": new.opened_by_message_id, "ended_at": None, "ended_by": None,
            "ended_by_message_id": None, "updated_at": new.updated_at,
        })  # fmt: skip
        self.end_conversation = upsert.on_conflict_do_update(index_elements=on_pair, set_={
            "status": new.status, "ended_at": new.ended_at, "ended_by": new.ended_by,
            "ended_by_message_id": new.ended_by_message_id, "updated_at": new.updated_at,
        })  # fmt: skip
        self.insert_conversation_events = insert(ConversationEventRow)


class WriteUnit:
    """Mail changes inside one open write transaction (``conn``); see the module's rules."""

    def __init__(self, conn: Connection, statements: WriteStatements) -> None:
        self.conn = conn
        self._statements = statements
        self._changed: set[int] = set()
        self._reader: Reader | None = None
        self.saved_at = datetime.now(UTC)  # every message row this transaction inserts was saved now (SAVEDATE)

    @property
    def reader(self) -> Reader:
        """This transaction's connection for Compiled statements (the hot paths)."""
        if self._reader is None:
            self._reader = Reader.on(self.conn)
        return self._reader

    # -- folders -----------------------------------------------------------------------------

    def lock_folders(self, folder_ids: Iterable[int]) -> None:
        """Take the folders' row locks, in id order, before touching any of their messages; NoSuchFolder
        when one is gone. An EXPUNGE that deleted message rows before taking the folder deadlocked with a
        STORE holding the folder (20 concurrent sessions on PostgreSQL). Holding the lock also makes a
        duplicate check race-free: any other writer to the folder must take it before allocating a UID."""
        ids = sorted(set(folder_ids))
        if not ids:
            return
        if len(self._statements.lock_folders.rows(self.reader, ids)) != len(ids):
            raise NoSuchFolder("no such mailbox")

    def allocate(self, folder_id: int, count: int = 1) -> tuple[int, int]:
        """``count`` consecutive UIDs and one new MODSEQ of a folder, by one UPDATE of its row: returns
        (first UID, MODSEQ)."""
        row = self.conn.execute(self._statements.allocate, {"mailbox_id": folder_id, "count": count}).one_or_none()
        if row is None:
            raise NoSuchFolder("no such mailbox")
        self._changed.add(folder_id)
        return int(row.uidnext) - count, int(row.highestmodseq)

    def bump_modseq(self, folder_id: int) -> int:
        """A new MODSEQ for this folder (a flag change, an expunge)."""
        modseq = self._statements.bump_modseq.scalar(self.reader, mailbox_id=folder_id)
        if modseq is None:
            raise NoSuchFolder("no such mailbox")
        self._changed.add(folder_id)
        return int(modseq)

    def announce(self) -> None:
        """Hand the folders changed (by allocate and bump_modseq) to the commit: listeners in this process
        hear of them after it; on PostgreSQL, NOTIFY (sent at commit) tells every other process and node
        too. ``Database.transaction()`` runs it last."""
        if not self._changed:
            return
        self.conn.info.setdefault(CHANGED_FOLDERS, set()).update(self._changed)
        if self.conn.dialect.name == "postgresql":
            payload = ",".join(str(i) for i in sorted(self._changed))
            self.conn.execute(select(func.pg_notify(CHANGES_CHANNEL, payload)))
        self._changed = set()

    # -- blobs -------------------------------------------------------------------------------

    def insert_blob(self, blob: BlobFile, *, at: datetime | None = None) -> int:
        """The row of a blob whose file is durable; returns its id."""
        return int(self.conn.execute(self._statements.insert_blob, {
            "key": blob.key, "size": blob.size, "sha256": blob.sha256, "created_at": at or datetime.now(UTC),
        }).scalar_one())  # fmt: skip

    def drop_blob(self, blob_id: int) -> None:
        """Delete a blob row this transaction inserted and nothing came to use (the file goes after)."""
        self.conn.execute(delete(Blob).where(Blob.id == blob_id))

    def drop_unreferenced_blobs(self, blob_ids: Iterable[int]) -> list[str]:
        """Delete the blob rows nothing points at any more; returns their keys (remove the files after commit)."""
        return drop_unreferenced_blobs(self.conn, blob_ids)

    # -- messages ----------------------------------------------------------------------------

    def is_duplicate(self, folder_id: int, message: NewMessage) -> bool:
        """Whether the folder holds a delivered message with that Message-ID (lock the folder first)."""
        key = dedup_key(message.message_id)
        if key is None:
            return False
        found = self.conn.scalar(self._statements.find_duplicate, {"mailbox_id": folder_id, "message_id": key})
        return found is not None

    def deliver(self, folder_id: int, message: NewMessage, blob_id: int, *, flags: str = "",
                dedup: bool = True) -> DeliveryOutcome:
        """A message arrived by SMTP, as one row of a folder; ``dedup=False`` for a copy the Message-ID must
        not deduplicate (a Sent copy). DUPLICATE when the unique index caught one the check did not."""
        key = dedup_key(message.message_id)
        uid, modseq = self.allocate(folder_id)
        inserted = self._insert(folder_id, uid, modseq, {
            "flags": flags, "internaldate": message.received_at, "internaldate_offset": 0,
            "size": len(message.raw), "blob_id": blob_id, "message_id": key, "dedup_key": key if dedup else None,
            "from_addr": message.from_addr, "subject": message.subject,
            "authentication_results": message.authentication_results, "received_at": message.received_at,
        })  # fmt: skip
        return DeliveryOutcome.STORED if inserted else DeliveryOutcome.DUPLICATE

    def append(self, folder_id: int, message: NewMessage, blob_id: int, *, flags: str,
               internaldate: datetime) -> int:
        """A message a client stored (IMAP APPEND), with the client's date-time: never deduplicated, the
        Message-ID kept as given. Returns its UID."""
        uid, modseq = self.allocate(folder_id)
        self._insert(folder_id, uid, modseq, {
            "flags": flags, "internaldate": internaldate, "internaldate_offset": zone_offset(internaldate),
            "size": len(message.raw), "blob_id": blob_id, "message_id": message.message_id, "dedup_key": None,
            "from_addr": message.from_addr, "subject": message.subject,
            "authentication_results": message.authentication_results, "received_at": message.received_at,
        })  # fmt: skip
        return uid

    def copy(self, rows: Sequence[Any], target_id: int) -> list[int]:
        """Copies of message rows into a folder (IMAP COPY and MOVE), in the given order: their new UIDs.
        Flags, dates and headers go with them; the blob is shared; copies are never deduplicated."""
        if not rows:
            return []
        first_uid, modseq = self.allocate(target_id, len(rows))
        for offset, row in enumerate(rows):
            self._insert(target_id, first_uid + offset, modseq, {
                column: getattr(row, column) for column in _COPIED} | {"dedup_key": None})
        return [first_uid + offset for offset in range(len(rows))]

    def _insert(self, folder_id: int, uid: int, modseq: int, values: dict[str, Any]) -> bool:
        """One message row at an allocated UID; False when the dedup index refused it."""
        values |= {"mailbox_id": folder_id, "uid": uid, "modseq": modseq, "saved_at": self.saved_at}
        return self.conn.execute(self._statements.insert_message, values).scalar_one_or_none() is not None

    def remove_messages(self, folder_id: int, rows: Sequence[Any], blob_ids: Iterable[int]) -> list[str]:
        """Delete message rows (with ``id`` and ``uid``) of a locked folder (EXPUNGE, MOVE), with a new MODSEQ
        recorded in the expunge log, and the blob rows nothing uses any more: returns their keys (remove the
        files after commit)."""
        modseq = self.bump_modseq(folder_id)
        self.log_expunged(folder_id, modseq, [row.uid for row in rows])
        self.conn.execute(delete(Message).where(Message.id.in_([row.id for row in rows])))
        return self.drop_unreferenced_blobs(blob_ids)

    def log_expunged(self, folder_id: int, modseq: int, uids: Sequence[int] | None = None) -> None:
        """Record UIDs leaving a locked folder at ``modseq`` (every message it holds when ``uids`` is None),
        before their rows go: readers of the log (cached UID lists, QRESYNC) learn of every removal."""
        if uids is None:
            self.conn.execute(insert(ExpungedMessage).from_select(
                ["mailbox_id", "uid", "modseq"],
                select(Message.mailbox_id, Message.uid, literal(modseq)).where(Message.mailbox_id == folder_id)))
        elif uids:
            self.conn.execute(insert(ExpungedMessage),
                              [{"mailbox_id": folder_id, "uid": uid, "modseq": modseq} for uid in uids])

    # -- outbound queue ----------------------------------------------------------------------

    def enqueue(self, blob_id: int, size: int, envelope: OutboundEnvelope, *, now: datetime, expires_at: datetime,
                queue_id: str) -> str:
        """Queue a message whose blob row exists; every recipient is due ``now``. Returns ``queue_id``."""
        check_envelope(envelope)
        message_id = self.conn.execute(self._statements.insert_queued, {
            "queue_id": queue_id, "blob_id": blob_id, "sender": envelope.sender, "envid": envelope.envid,
            "ret": envelope.ret, "message_id": envelope.message_id, "submitted_by": envelope.submitted_by,
            "size": size, "created_at": now, "expires_at": expires_at,
        }).scalar_one()  # fmt: skip
        self.conn.execute(self._statements.insert_queued_recipients, [
            {
                "outbound_message_id": message_id, "address": r.address, "domain": _domain(r.address),
                "orcpt": r.orcpt, "notify": None if r.notify is None else ",".join(r.notify),
                "status": RecipientStatus.SCHEDULED.value, "attempts": 0, "next_attempt_at": now,
                "warned": False, "notified": False,
            }
            for r in envelope.recipients
        ])  # fmt: skip
        return queue_id

    # -- patient conversations ---------------------------------------------------------------

    def record_conversation_events(self, events: Sequence[ConversationEvent]) -> None:
        """Apply conversation events (one pair's events keep their order). Rows are written in (patient,
        mailbox) order, so two transactions lock them in the same order; each is upserted, so concurrent
        first messages never collide."""
        ordered = sorted(events, key=lambda e: (e.patient_ins, normalize_address(e.mailbox)))  # stable
        for event in ordered:
            opens = event.action == ConversationAction.OPEN
            statement = self._statements.open_conversation if opens else self._statements.end_conversation
            self.conn.execute(statement, _conversation_row(event))  # one at a time: a statement updates a row once
        if ordered:
            self.conn.execute(self._statements.insert_conversation_events, [{
                "patient_ins": e.patient_ins, "mailbox": normalize_address(e.mailbox),
                "action": ConversationAction(e.action).value, "message_id": e.message_id, "actor": e.actor,
                "at": e.at,
            } for e in ordered])  # fmt: skip
        for e in ordered:
            audit.info("conversation %s patient=%s mailbox=%s message_id=%s actor=%s", ConversationAction(e.action),
                       e.patient_ins, normalize_address(e.mailbox), e.message_id, e.actor)


_COPIED = ("flags", "internaldate", "internaldate_offset", "size", "blob_id", "message_id", "from_addr", "subject",
           "authentication_results", "received_at")  # the columns a COPY keeps


def _domain(address: str) -> str:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not a mailbox address: {address!r}")
    return domain.lower()


def _conversation_row(event: ConversationEvent) -> dict[str, Any]:
    """The conversation row an event makes when its pair has none (the upsert takes what it needs from it)."""
    ends = event.action == ConversationAction.END
    return {
        "patient_ins": event.patient_ins, "mailbox": normalize_address(event.mailbox),
        "status": (ConversationStatus.ENDED if ends else ConversationStatus.OPEN).value,
        "opened_at": event.at, "opened_by": event.actor, "opened_by_message_id": event.message_id,
        "ended_at": event.at if ends else None, "ended_by": event.actor if ends else None,
        "ended_by_message_id": event.message_id if ends else None, "updated_at": event.at,
    }  # fmt: skip
