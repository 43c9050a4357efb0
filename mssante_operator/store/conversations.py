"""Patient conversations (Store.conversations): the state behind the professional-first rule.

The rule itself is pure (patients/conversations.py); this keeps what it decides on. Events are written
by the write unit (``WriteUnit.record_conversation_events``) inside the transaction of the message that
caused them, so a conversation changes only with that message; this module reads them, and records an
operator's ending.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from mssante_base.patients.conversations import ConversationAction, ConversationEvent, ConversationStatus
from mssante_base.patients.ins import Ins

from .database import Database
from .models import Conversation, ConversationEventRow
from .write_unit import normalize_address

C, E = Conversation, ConversationEventRow


class ConversationNotFound(LookupError):
    """That patient and that mailbox have never had a conversation."""


@dataclass(frozen=True)
class ConversationRecord:
    """One conversation as `conversation ls` shows it."""

    patient_ins: str
    mailbox: str
    status: ConversationStatus
    opened_at: datetime
    opened_by: str
    opened_by_message_id: str | None
    ended_at: datetime | None
    ended_by: str | None
    ended_by_message_id: str | None
    updated_at: datetime

    @property
    def patient_address(self) -> str:
        return Ins(self.patient_ins).address


class Conversations:
    """Conversations over the store's database; synchronous like the rest of the store."""

    def __init__(self, store: Database) -> None:
        self._store = store

    # -- writing -----------------------------------------------------------------------------

    def record(self, events: Sequence[ConversationEvent]) -> None:
        """Apply `events` in a transaction of their own."""
        with self._store.transaction() as tx:
            tx.record_conversation_events(events)

    def end(self, patient_ins: str, mailbox: str, *, actor: str, at: datetime) -> ConversationRecord:
        """An operator ends a conversation; ending an ended one changes nothing. Raises ConversationNotFound."""
        mailbox = normalize_address(mailbox)
        with self._store.transaction() as tx:
            row = tx.conn.execute(_pair(patient_ins, mailbox).with_for_update()).one_or_none()
            if row is None:
                raise ConversationNotFound(f"no conversation between patient {patient_ins} and {mailbox}")
            if row.status == ConversationStatus.ENDED:
                return _record(row)
            tx.record_conversation_events(
                [ConversationEvent(patient_ins, mailbox, ConversationAction.END, None, actor, at)])
            return _record(tx.conn.execute(_pair(patient_ins, mailbox)).one())

    # -- reading -----------------------------------------------------------------------------

    def status(self, patient_ins: str, mailbox: str) -> ConversationStatus | None:
        """The conversation's status; None when the mailbox never wrote to the patient."""
        return self.statuses(patient_ins, [mailbox]).get(mailbox)

    def statuses(self, patient_ins: str, mailboxes: Iterable[str]) -> dict[str, ConversationStatus]:
        """Status per mailbox as given (one query); mailboxes without a conversation are left out."""
        wanted = {m: normalize_address(m) for m in mailboxes}
        if not wanted:
            return {}
        query = select(C.mailbox, C.status).where(C.patient_ins == patient_ins, C.mailbox.in_(set(wanted.values())))
        with self._store.reading() as conn:
            found = {row.mailbox: ConversationStatus(row.status) for row in conn.execute(query)}
        return {m: found[n] for m, n in wanted.items() if n in found}

    def ls(self, *, patient: str | None = None, mailbox: str | None = None) -> list[ConversationRecord]:
        """Conversations of a patient, of a mailbox, of both, or all, by patient then mailbox."""
        query = select(C).order_by(C.patient_ins, C.mailbox)
        if patient is not None:
            query = query.where(C.patient_ins == patient)
        if mailbox is not None:
            query = query.where(C.mailbox == normalize_address(mailbox))
        with self._store.reading() as conn:
            return [_record(row) for row in conn.execute(query)]

    def history(self, patient_ins: str, mailbox: str) -> list[ConversationEvent]:
        """Every open and end of one conversation, oldest first."""
        query = (select(E).where(E.patient_ins == patient_ins, E.mailbox == normalize_address(mailbox))
                 .order_by(E.id))  # fmt: skip
        with self._store.reading() as conn:
            return [ConversationEvent(r.patient_ins, r.mailbox, ConversationAction(r.action), r.message_id, r.actor,
                                      r.at) for r in conn.execute(query)]  # fmt: skip


def _pair(patient_ins: str, mailbox: str) -> Any:
    return select(C).where(C.patient_ins == patient_ins, C.mailbox == mailbox)


def _record(row: Any) -> ConversationRecord:
    return ConversationRecord(
        patient_ins=row.patient_ins, mailbox=row.mailbox, status=ConversationStatus(row.status),
        opened_at=row.opened_at, opened_by=row.opened_by, opened_by_message_id=row.opened_by_message_id,
        ended_at=row.ended_at, ended_by=row.ended_by, ended_by_message_id=row.ended_by_message_id,
        updated_at=row.updated_at,
    )  # fmt: skip
