"""Messages to and from the patient: delivery with its attachments and dossier filing in one transaction,
the patient's inbox and conversations, and the first opening (which may owe the sender a read receipt)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, case, func, or_, select, update

from mssante_base.patients.ins import Ins
from mssante_base.storage.blobs import BlobFile
from mssante_base.storage.message_ids import dedup_key

from . import rows
from .core import now
from .documents import DocumentStore
from .notifications import FIRST_CONTACT, NotificationStore, new_items_text
from .outbox import OutboxStore
from .records import AttachmentRecord, ConversationSummary, MessageMeta, MessageRecord, NewAttachment, NewDocument
from .schema import BridgeAttachment, BridgeMessage

_TABLE = BridgeMessage.__table__
_ATTACHMENTS = BridgeAttachment.__table__


class MessageStore(DocumentStore, NotificationStore, OutboxStore):
    def deliver(
        self, raw: bytes, patients: Sequence[Ins], meta: MessageMeta, *, actor: str,
        attachments: Sequence[NewAttachment] = (), documents: Mapping[str, Sequence[NewDocument]] | None = None,
        reports: Mapping[str, tuple[str, bytes]] | None = None, notify: bool = True,
    ) -> dict[str, bool]:
        """Store one message for each patient, with its attachments, the documents filed from it (by INS)
        and any integration-error receipt owed (INS -> (to, MDN bytes)), in one transaction.

        INS -> True stored, False already there (same Message-ID: the first copy is kept, nothing else is
        done). Blobs are durable before the rows commit, and removed again when nothing uses them.
        """
        return self._record("in", raw, patients, meta, actor=actor, attachments=attachments,
                            documents=documents or {}, reports=reports or {}, notify=notify)

    def record_sent(self, raw: bytes, ins: Ins, meta: MessageMeta, *, actor: str) -> bool:
        """Keep a message the patient sent (direction "out"); False when that Message-ID was recorded."""
        return self._record("out", raw, [ins], meta, actor=actor)[ins.value]

    def _record(
        self, direction: str, raw: bytes, patients: Sequence[Ins], meta: MessageMeta, *, actor: str,
        attachments: Sequence[NewAttachment] = (), documents: Mapping[str, Sequence[NewDocument]] | None = None,
        reports: Mapping[str, tuple[str, bytes]] | None = None, notify: bool = False,
    ) -> dict[str, bool]:
        message_id = dedup_key(meta.message_id)
        wanted = sorted({ins.value for ins in patients})
        outcome = dict.fromkeys(wanted, False)
        # Blobs are written (and fsync'd) before the writer lock is taken: deliveries on other
        # connections write theirs meanwhile, and the lock is held only for the rows.
        written: list[BlobFile] = []
        try:
            blob = self.blobs.write(raw)
            written.append(blob)
            document_blobs = self._document_blobs(documents or {}, wanted, written)
            with self._writing() as conn:
                if message_id is not None:
                    known = set(conn.execute(
                        select(_TABLE.c.ins).where(_TABLE.c.direction == direction, _TABLE.c.message_id == message_id,
                                                   _TABLE.c.ins.in_(wanted))
                    ).scalars())
                    wanted = [ins for ins in wanted if ins not in known]
                for ins in wanted:
                    first_contact = notify and self._first_from(conn, ins, meta.from_address)
                    row_id = self._insert_message(conn, direction, ins, message_id, meta, blob, actor=actor)
                    if row_id is None:
                        continue
                    outcome[ins] = True
                    filed = self._attach(conn, ins, row_id, meta, attachments, (documents or {}).get(ins, ()),
                                         document_blobs)
                    if ins in (reports or {}):
                        to, report = (reports or {})[ins]
                        self._queue(conn, ins, "mdn", to, report, message=row_id)
                    if notify:
                        self._notify(conn, ins, "message", *new_items_text(1, filed))
                    if first_contact:
                        self._notify(conn, ins, "first-contact", *FIRST_CONTACT)
        except BaseException:
            for written_blob in written:
                self.blobs.remove(written_blob.key)
            raise
        if not any(outcome.values()):
            for written_blob in written:
                self.blobs.remove(written_blob.key)
        return outcome

    def _document_blobs(self, documents: Mapping[str, Sequence[NewDocument]], wanted: Sequence[str],
                        written: list[BlobFile]) -> dict[int, BlobFile]:
        """One durable blob per distinct document content among the patients being served, by id(document)."""
        by_content: dict[str, BlobFile] = {}
        blobs: dict[int, BlobFile] = {}
        for ins in wanted:
            for doc in documents.get(ins, ()):
                digest = hashlib.sha256(doc.data).hexdigest()
                if digest not in by_content:
                    by_content[digest] = self.blobs.write(doc.data)
                    written.append(by_content[digest])
                blobs[id(doc)] = by_content[digest]
        return blobs

    def _first_from(self, conn: Connection, ins: str, mailbox: str) -> bool:
        """Whether no message from ``mailbox`` reached this space yet (its first writer's notice is due)."""
        if not mailbox:
            return False
        return conn.execute(select(_TABLE.c.id).where(
            _TABLE.c.ins == ins, _TABLE.c.direction == "in", _TABLE.c.from_address == mailbox.lower()).limit(1),
        ).first() is None

    def _insert_message(self, conn: Connection, direction: str, ins: str, message_id: str | None,
                        meta: MessageMeta, blob: BlobFile, *, actor: str, no_reply: bool = False) -> int | None:
        at = now()
        statement = self._insert(_TABLE).values(
            ins=ins, direction=direction, message_id=message_id, sender=meta.sender,
            recipients=json.dumps([r.lower() for r in meta.recipients]), subject=meta.subject, size=blob.size,
            blob_key=blob.key,
            at=at, from_address=meta.from_address.lower(), from_name=meta.from_name, sent_at=meta.sent_at,
            in_reply_to=meta.in_reply_to, mdn_to=meta.mdn_to, ends_exchange=meta.ends_exchange,
            attachments=meta.attachments, no_reply=no_reply,
        ).on_conflict_do_nothing()
        row_id = conn.execute(statement.returning(_TABLE.c.id)).scalar()
        if row_id is not None:
            detail: dict[str, Any] = {"message": row_id, "size": blob.size}
            if direction == "in":
                detail |= {"from": meta.from_address.lower(), "from_name": meta.from_name}
            else:
                detail |= {"to": list(meta.recipients)}
            self._audit(conn, actor=actor, action="receive" if direction == "in" else "send", ins=ins,
                        detail=detail, at=at)
        return row_id

    def _attach(self, conn: Connection, ins: str, row_id: int, meta: MessageMeta,
                attachments: Sequence[NewAttachment], documents: Sequence[NewDocument],
                blobs: Mapping[int, BlobFile]) -> int:
        """The message's attachment rows and the documents filed from it; how many were filed."""
        if attachments:
            conn.execute(_ATTACHMENTS.insert(), [
                {"message": row_id, "ins": ins, "idx": item.index, "filename": item.filename,
                 "detected_type": item.detected_type, "size": item.size, "document": None}
                for item in attachments])
        author = meta.from_address.lower() or meta.sender.lower()
        for doc in documents:
            blob = blobs[id(doc)]
            document_id = self._insert_document(conn, ins, doc, blob, deposited_by=author, message=row_id)
            self._audit(conn, actor=f"professional:{author}", action="deposit", ins=ins, detail={
                "document": document_id, "message": row_id, "category": doc.category.value,
                "author": doc.author_address or author, "author_name": doc.author_name or meta.from_name})
        return len(documents)

    # -- reading -----------------------------------------------------------------------------

    def messages(self, ins: Ins, direction: str | None = "in") -> list[MessageRecord]:
        """All of a patient's messages in one direction (None: both), oldest first (command line, export)."""
        query = select(_TABLE).where(_TABLE.c.ins == ins.value).order_by(_TABLE.c.id)
        if direction is not None:
            query = query.where(_TABLE.c.direction == direction)
        with self._engine.connect() as conn:
            return [rows.message(row) for row in conn.execute(query)]

    def messages_page(self, ins: str, *, direction: str | None = "in", offset: int = 0,
                      limit: int = 50) -> list[MessageRecord]:
        """A page of the patient's messages, newest first."""
        query = select(_TABLE).where(_TABLE.c.ins == ins)
        if direction is not None:
            query = query.where(_TABLE.c.direction == direction)
        with self._engine.connect() as conn:
            found = conn.execute(query.order_by(_TABLE.c.id.desc()).offset(offset).limit(limit)).all()
        return [rows.message(row) for row in found]

    def count_messages(self, ins: str, direction: str = "in", *, unread_only: bool = False) -> int:
        query = select(func.count()).select_from(_TABLE).where(_TABLE.c.ins == ins, _TABLE.c.direction == direction)
        if unread_only:
            query = query.where(_TABLE.c.read_at.is_(None))
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def message(self, ins: str, message_id: int) -> MessageRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_TABLE).where(_TABLE.c.ins == ins, _TABLE.c.id == message_id)).first()
        return None if row is None else rows.message(row)

    def attachments(self, ins: str, message_id: int) -> list[AttachmentRecord]:
        query = (select(_ATTACHMENTS).where(_ATTACHMENTS.c.ins == ins, _ATTACHMENTS.c.message == message_id)
                 .order_by(_ATTACHMENTS.c.idx))
        with self._engine.connect() as conn:
            return [rows.attachment(row) for row in conn.execute(query)]

    def open_message(self, ins: str, message_id: int, *, actor: str, mdn: bytes | None = None,
                     mdn_to: str | None = None) -> bool:
        """The patient opens a message (audited); on the first opening it is marked read and a read receipt,
        when one is given, is queued in the same transaction. True on the first opening."""
        with self._writing() as conn:
            exists = conn.execute(select(_TABLE.c.id).where(_TABLE.c.ins == ins, _TABLE.c.id == message_id)).first()
            if exists is None:
                return False
            first = conn.execute(update(_TABLE).where(_TABLE.c.id == message_id, _TABLE.c.read_at.is_(None))
                                 .values(read_at=now()).returning(_TABLE.c.id)).first() is not None
            self._audit(conn, actor=actor, action="view-message", ins=ins, detail={"message": message_id})
            if first and mdn is not None and mdn_to:
                self._queue(conn, ins, "mdn", mdn_to, mdn, message=message_id)
        return first

    def conversations(self, ins: str, *, mailbox: str | None = None) -> list[ConversationSummary]:
        """One summary per professional mailbox that wrote to the patient (or that one), newest exchange first."""
        unread = func.sum(case((_TABLE.c.read_at.is_(None), 1), else_=0))
        grouped = (select(_TABLE.c.from_address, func.max(_TABLE.c.id), func.count(), unread)
                   .where(_TABLE.c.ins == ins, _TABLE.c.direction == "in", _TABLE.c.from_address != "")
                   .group_by(_TABLE.c.from_address))
        if mailbox is not None:
            grouped = grouped.where(_TABLE.c.from_address == mailbox.lower())
        with self._engine.connect() as conn:
            groups = conn.execute(grouped).all()
            last = {row.id: row for row in conn.execute(
                select(_TABLE.c.id, _TABLE.c.from_name, _TABLE.c.ends_exchange, _TABLE.c.at)
                .where(_TABLE.c.id.in_([group[1] for group in groups])))}
        summaries = [ConversationSummary(mailbox=address, name=last[last_id].from_name or address,
                                         open=not last[last_id].ends_exchange, last_at=last[last_id].at,
                                         messages=count, unread=int(unread_count or 0))
                     for address, last_id, count, unread_count in groups]
        return sorted(summaries, key=lambda summary: summary.last_at, reverse=True)

    def conversation(self, ins: str, mailbox: str) -> ConversationSummary | None:
        return next(iter(self.conversations(ins, mailbox=mailbox)), None)

    def thread(self, ins: str, mailbox: str) -> list[MessageRecord]:
        """Both directions of the patient's exchange with one mailbox, oldest first."""
        mailbox = mailbox.lower()
        query = select(_TABLE).where(_TABLE.c.ins == ins, or_(
            (_TABLE.c.direction == "in") & (_TABLE.c.from_address == mailbox),
            (_TABLE.c.direction == "out") & _TABLE.c.recipients.contains(json.dumps(mailbox), autoescape=True),
        )).order_by(_TABLE.c.id)
        with self._engine.connect() as conn:
            return [rows.message(row) for row in conn.execute(query)]
