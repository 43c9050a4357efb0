"""Rows to records: the one place that knows how a table row becomes the record the store hands out."""

from __future__ import annotations

import json
from typing import Any

from mssante_base.patients.states import PatientState

from ..filing.categories import Category
from .records import (
    AttachmentRecord,
    AuditEntry,
    DocumentRecord,
    MessageRecord,
    Notification,
    OutboxItem,
    PatientRecord,
)


def patient(row: Any) -> PatientRecord:
    return PatientRecord(
        ins=row.ins, state=PatientState(row.state), given_name=row.given_name, family_name=row.family_name,
        password_hash=row.password_hash, created_at=row.created_at, updated_at=row.updated_at,
        birth_date=row.birth_date, sex=row.sex, email=row.email, activated_at=row.activated_at,
        window_ends_at=row.window_ends_at, space_opened_at=row.space_opened_at, deleted_at=row.deleted_at,
        purged_at=row.purged_at,
    )


def message(row: Any) -> MessageRecord:
    return MessageRecord(
        id=row.id, ins=row.ins, direction=row.direction, message_id=row.message_id, sender=row.sender,
        recipients=tuple(json.loads(row.recipients)), subject=row.subject, size=row.size, blob_key=row.blob_key,
        at=row.at, from_address=row.from_address, from_name=row.from_name, sent_at=row.sent_at,
        in_reply_to=row.in_reply_to, mdn_to=row.mdn_to, ends_exchange=bool(row.ends_exchange),
        attachments=row.attachments, read_at=row.read_at, no_reply=bool(row.no_reply),
    )


def attachment(row: Any) -> AttachmentRecord:
    return AttachmentRecord(message=row.message, index=row.idx, filename=row.filename,
                            detected_type=row.detected_type, size=row.size, document=row.document)


def document(row: Any) -> DocumentRecord:
    return DocumentRecord(
        id=row.id, ins=row.ins, title=row.title, category=Category(row.category), mime_type=row.mime_type,
        structured=bool(row.structured), size=row.size, sha256=row.sha256, blob_key=row.blob_key,
        filename=row.filename, document_date=row.document_date, deposited_at=row.deposited_at,
        deposited_by=row.deposited_by, author_address=row.author_address, author_name=row.author_name,
        masked_from_professionals=bool(row.masked_from_professionals),
        hidden_from_patient=bool(row.hidden_from_patient), hidden_from_legal_reps=bool(row.hidden_from_legal_reps),
        message=row.message, attachment_index=row.attachment_index, xdm_unique_id=row.xdm_unique_id,
    )


def audit(row: Any) -> AuditEntry:
    return AuditEntry(id=row.id, at=row.at, actor=row.actor, action=row.action, ins=row.ins,
                      detail=json.loads(row.detail), prev_hash=row.prev_hash, hash=row.hash)


def notification(row: Any) -> Notification:
    return Notification(id=row.id, ins=row.ins, email=row.email, kind=row.kind, subject=row.subject, body=row.body,
                        created_at=row.created_at, sent_at=row.sent_at)


def outbox_item(row: Any) -> OutboxItem:
    return OutboxItem(id=row.id, ins=row.ins, kind=row.kind, recipient=row.recipient, raw=bytes(row.raw),
                      attempts=row.attempts, next_attempt_at=row.next_attempt_at, created_at=row.created_at,
                      last_error=row.last_error, extra={"message": row.message, "sent_at": row.sent_at})
