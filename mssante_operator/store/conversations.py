"""Patient conversations (Store.conversations): the state behind the professional-first rule.

The rule itself is pure (patients/conversations.py); this keeps what it decides on. Events are applied
inside the caller's write transaction, so a conversation changes only with the message that changed it.
Each (patient, mailbox) row is upserted (INSERT … ON CONFLICT DO UPDATE, on SQLite and PostgreSQL), so
concurrent first messages never collide, and rows are written in (patient, mailbox) order, so two
transactions lock them in the same order and cannot deadlock on PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select

from ..patients.conversations import ConversationAction, ConversationEvent, ConversationStatus
from ..patients.ins import Ins
from .facade import normalize_address
from .models import Conversation, ConversationEventRow

if TYPE_CHECKING:
    from .facade import Store

C, E = Conversation, ConversationEventRow
audit = logging.getLogger("mssante_operator.audit")


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

    def __init__(self, store: Store) -> None:
        self._store = store
        upsert = store._insert(C)
        new = upsert.excluded
        on_pair = ["patient_ins", "mailbox"]
        # Built once, as the queue's statements: an open (re)sets the opening and clears the end; an end
        # sets only the end, and creates the row (opened by the same event) for a pair never opened.
        self._open = upsert.on_conflict_do_update(index_elements=on_pair, set_={
            "status": new.status, "opened_at": new.opened_at, "opened_by": new.opened_by,
            "opened_by_message_id": new.opened_by_message_id, "ended_at": None, "ended_by": None,
            "ended_by_message_id": None, "updated_at": new.updated_at,
        })  # fmt: skip
        self._end = upsert.on_conflict_do_update(index_elements=on_pair, set_={
            "status": new.status, "ended_at": new.ended_at, "ended_by": new.ended_by,
            "ended_by_message_id": new.ended_by_message_id, "updated_at": new.updated_at,
        })  # fmt: skip
        self._insert_events = insert(E)

    # -- writing -----------------------------------------------------------------------------

    def apply(self, conn: Connection, events: Sequence[ConversationEvent]) -> None:
        """Apply `events` inside the caller's `Store.writing()` transaction (one pair's events keep their order)."""
        ordered = sorted(events, key=lambda e: (e.patient_ins, normalize_address(e.mailbox)))  # stable
        for event in ordered:
            statement = self._open if event.action == ConversationAction.OPEN else self._end
            conn.execute(statement, _row(event))  # one at a time: one statement may not update a row twice
        if ordered:
            conn.execute(self._insert_events, [{
                "patient_ins": e.patient_ins, "mailbox": normalize_address(e.mailbox),
                "action": ConversationAction(e.action).value, "message_id": e.message_id, "actor": e.actor,
                "at": e.at,
            } for e in ordered])  # fmt: skip
        for e in ordered:
            audit.info("conversation %s patient=%s mailbox=%s message_id=%s actor=%s", ConversationAction(e.action),
                       e.patient_ins, normalize_address(e.mailbox), e.message_id, e.actor)

    def record(self, events: Sequence[ConversationEvent]) -> None:
        """Apply `events` in a transaction of their own."""
        with self._store.writing() as conn:
            self.apply(conn, events)

    def end(self, patient_ins: str, mailbox: str, *, actor: str, at: datetime) -> ConversationRecord:
        """An operator ends a conversation; ending an ended one changes nothing. Raises ConversationNotFound."""
        mailbox = normalize_address(mailbox)
        with self._store.writing() as conn:
            row = conn.execute(_pair(patient_ins, mailbox).with_for_update()).one_or_none()
            if row is None:
                raise ConversationNotFound(f"no conversation between patient {patient_ins} and {mailbox}")
            if row.status == ConversationStatus.ENDED:
                return _record(row)
            self.apply(conn, [ConversationEvent(patient_ins, mailbox, ConversationAction.END, None, actor, at)])
            return _record(conn.execute(_pair(patient_ins, mailbox)).one())

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


def _row(event: ConversationEvent) -> dict[str, Any]:
    """The conversation row an event makes when its pair has none (the upsert takes what it needs from it)."""
    ends = event.action == ConversationAction.END
    return {
        "patient_ins": event.patient_ins, "mailbox": normalize_address(event.mailbox),
        "status": (ConversationStatus.ENDED if ends else ConversationStatus.OPEN).value,
        "opened_at": event.at, "opened_by": event.actor, "opened_by_message_id": event.message_id,
        "ended_at": event.at if ends else None, "ended_by": event.actor if ends else None,
        "ended_by_message_id": event.message_id if ends else None, "updated_at": event.at,
    }  # fmt: skip


def _pair(patient_ins: str, mailbox: str) -> Any:
    return select(C).where(C.patient_ins == patient_ins, C.mailbox == mailbox)


def _record(row: Any) -> ConversationRecord:
    return ConversationRecord(
        patient_ins=row.patient_ins, mailbox=row.mailbox, status=ConversationStatus(row.status),
        opened_at=row.opened_at, opened_by=row.opened_by, opened_by_message_id=row.opened_by_message_id,
        ended_at=row.ended_at, ended_by=row.ended_by, ended_by_message_id=row.ended_by_message_id,
        updated_at=row.updated_at,
    )  # fmt: skip
