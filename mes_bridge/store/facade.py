"""The bridge's own store: patients' spaces, the messages they received or sent, and an audit trail.

A separate service keeps a separate database (SQLite file by default, or PostgreSQL). Its three tables
are created with ``create_all`` at start: the schema is the bridge's alone and young; an Alembic
environment comes when the first change to it needs a migration. Message bytes live in blob files,
written and fsync'd (file and directory) before the row that points at them commits, as in the
operator's store, whose engine set-up (SQLite WAL, BEGIN IMMEDIATE, cross-process writer lock) and
blob store are reused. Calls are synchronous: the listeners run them in a thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Index, Integer, MetaData, String, Text, UniqueConstraint, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mssante_operator.patients.ins import Ins
from mssante_operator.patients.states import PatientState
from mssante_operator.store.blobs import BlobFile, BlobStore
from mssante_operator.store.facade import _WRITE_OPTION, _build_engine, _dedup_key, _WriterLock
from mssante_operator.store.models import NAMING_CONVENTION, BigId, UTCDateTime

from .records import MessageMeta, MessageRecord, NewPatient, PatientRecord

log = logging.getLogger(__name__)
audit_log = logging.getLogger("mes_bridge.audit")

KNOWN_STATES = frozenset(PatientState) - {PatientState.UNKNOWN}  # "unknown" is the absence of a row
_AUDITED = "mes_bridge_audited"  # Connection.info key: audit lines to log after the commit


class _Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class BridgePatient(_Base):
    __tablename__ = "bridge_patients"

    ins: Mapped[str] = mapped_column(String(15), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    given_name: Mapped[str | None] = mapped_column(String(200))
    family_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BridgeMessage(_Base):
    __tablename__ = "bridge_messages"
    __table_args__ = (UniqueConstraint("ins", "direction", "message_id"), Index(None, "ins", "at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ins: Mapped[str] = mapped_column(String(15))
    direction: Mapped[str] = mapped_column(String(3))  # "in": to the patient; "out": the patient's own
    message_id: Mapped[str | None] = mapped_column(String(1000))  # None: absent, never deduplicated
    sender: Mapped[str] = mapped_column(Text)
    recipients: Mapped[str] = mapped_column(Text)  # JSON list of addresses
    subject: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    blob_key: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class BridgeAudit(_Base):
    __tablename__ = "bridge_audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(32))
    ins: Mapped[str | None] = mapped_column(String(15), index=True)
    detail: Mapped[str] = mapped_column(Text)


class PatientNotFound(LookupError):
    """No space is known for this INS."""


def _now() -> datetime:
    return datetime.now(UTC)


def _patient(row: Any) -> PatientRecord:
    return PatientRecord(
        ins=row.ins, state=PatientState(row.state), given_name=row.given_name, family_name=row.family_name,
        password_hash=row.password_hash, created_at=row.created_at, updated_at=row.updated_at,
    )


def _message(row: Any) -> MessageRecord:
    return MessageRecord(
        id=row.id, ins=row.ins, direction=row.direction, message_id=row.message_id, sender=row.sender,
        recipients=tuple(json.loads(row.recipients)), subject=row.subject, size=row.size, blob_key=row.blob_key,
        at=row.at,
    )


class BridgeStore:
    """Patients, their messages and the audit trail, over SQLite or PostgreSQL, with blob files."""

    def __init__(self, url: str, blob_dir: Path) -> None:
        self._engine = _build_engine(url)
        parsed = make_url(url)
        self._write_lock = _WriterLock(parsed.database if parsed.get_backend_name() == "sqlite" else None)
        self._writer = self._engine.execution_options(**{_WRITE_OPTION: True})
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        self._insert = dialect.insert
        self.blobs = BlobStore(blob_dir)
        _Base.metadata.create_all(self._engine)  # the bridge's own schema; see the module's note

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One write transaction; its audit rows are logged once it has committed."""
        with self._write_lock.held(), self._writer.begin() as conn:
            conn.info[_AUDITED] = []
            yield conn
            logged = conn.info.pop(_AUDITED)
        for action, ins, actor, detail in logged:
            audit_log.info("%s ins=%s actor=%r %s", action, ins, actor, detail)

    def _audit(self, conn: Connection, *, actor: str, action: str, ins: str | None, detail: str, at: datetime) -> None:
        conn.execute(self._insert(BridgeAudit), {"at": at, "actor": actor, "action": action, "ins": ins,
                                                 "detail": detail})
        conn.info[_AUDITED].append((action, ins, actor, detail))

    # -- patients ----------------------------------------------------------------------------

    def patient(self, ins: Ins | str) -> PatientRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(BridgePatient.__table__).where(BridgePatient.ins == str(ins))).first()
        return None if row is None else _patient(row)

    def patients(self) -> list[PatientRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(BridgePatient.__table__).order_by(BridgePatient.ins)).all()
        return [_patient(row) for row in rows]

    def seed(self, patients: Iterable[NewPatient], *, actor: str = "seed") -> list[str]:
        """Add the patients not known yet (a known patient's state is never overwritten); their INS."""
        added: list[str] = []
        now = _now()
        with self._writing() as conn:
            for patient in patients:
                if patient.state not in KNOWN_STATES:
                    raise ValueError(f"patient {patient.ins}: state {patient.state!r} cannot be stored")
                result = conn.execute(
                    self._insert(BridgePatient).values(
                        ins=patient.ins.value, state=patient.state.value, given_name=patient.given_name,
                        family_name=patient.family_name, password_hash=patient.password_hash,
                        created_at=now, updated_at=now,
                    ).on_conflict_do_nothing(index_elements=["ins"]).returning(BridgePatient.ins)
                ).first()
                if result is not None:  # (rowcount says nothing here on psycopg: RETURNING does)
                    added.append(patient.ins.value)
                    self._audit(conn, actor=actor, action="patient-add", ins=patient.ins.value,
                                detail=f"state={patient.state.value}", at=now)
        return added

    def set_state(self, ins: Ins, state: PatientState, *, actor: str) -> PatientRecord:
        """Change a known patient's state (audited); raises PatientNotFound."""
        if state not in KNOWN_STATES:
            raise ValueError(f"state {state!r} cannot be stored")
        now = _now()
        with self._writing() as conn:
            table = BridgePatient.__table__
            before = conn.execute(select(table.c.state).where(table.c.ins == ins.value)).scalar()
            if before is None:
                raise PatientNotFound(f"no patient space is known for INS {ins.value}")
            conn.execute(update(table).where(table.c.ins == ins.value).values(state=state.value, updated_at=now))
            self._audit(conn, actor=actor, action="patient-state", ins=ins.value,
                        detail=f"from={before} to={state.value}", at=now)
            row = conn.execute(select(table).where(table.c.ins == ins.value)).one()
        return _patient(row)

    # -- messages ----------------------------------------------------------------------------

    def deliver(self, raw: bytes, patients: Sequence[Ins], meta: MessageMeta, *, actor: str) -> dict[str, bool]:
        """Store one message for each patient (one shared blob); INS -> True stored, False already there.

        A patient who already has this Message-ID keeps the first copy. The blob is durable before the
        rows commit; when nothing new is stored it is removed again (and never written if all are known).
        """
        return self._record("in", "deliver", raw, patients, meta, actor=actor)

    def record_sent(self, raw: bytes, ins: Ins, meta: MessageMeta, *, actor: str) -> bool:
        """Keep a message the patient sent (direction "out"); False when that Message-ID was recorded."""
        return self._record("out", "send", raw, [ins], meta, actor=actor)[ins.value]

    def _record(
        self, direction: str, action: str, raw: bytes, patients: Sequence[Ins], meta: MessageMeta, *, actor: str
    ) -> dict[str, bool]:
        message_id = _dedup_key(meta.message_id)
        wanted = sorted({ins.value for ins in patients})
        outcome = dict.fromkeys(wanted, False)
        table = BridgeMessage.__table__
        blob: BlobFile | None = None
        now = _now()
        try:
            with self._writing() as conn:
                if message_id is not None:
                    known = set(conn.execute(
                        select(table.c.ins).where(table.c.direction == direction, table.c.message_id == message_id,
                                                  table.c.ins.in_(wanted))
                    ).scalars())
                    wanted = [ins for ins in wanted if ins not in known]
                if not wanted:
                    return outcome
                blob = self.blobs.write(raw)
                row = {"direction": direction, "message_id": message_id, "sender": meta.sender,
                       "recipients": json.dumps(list(meta.recipients)), "subject": meta.subject, "size": blob.size,
                       "blob_key": blob.key, "at": now}
                for ins in wanted:
                    statement = self._insert(table).values(ins=ins, **row).on_conflict_do_nothing()
                    if conn.execute(statement.returning(table.c.id)).first() is not None:
                        outcome[ins] = True
                        self._audit(conn, actor=actor, action=action, ins=ins,
                                    detail=f"message_id={message_id} size={blob.size}", at=now)
        except BaseException:
            if blob is not None:
                self.blobs.remove(blob.key)
            raise
        if blob is not None and not any(outcome.values()):
            self.blobs.remove(blob.key)
        return outcome

    def messages(self, ins: Ins, direction: str = "in") -> list[MessageRecord]:
        table = BridgeMessage.__table__
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(table).where(table.c.ins == ins.value, table.c.direction == direction).order_by(table.c.id)
            ).all()
        return [_message(row) for row in rows]

    def audit(self, ins: Ins | None = None) -> list[dict[str, Any]]:
        """The audit trail (of one patient), oldest first."""
        table = BridgeAudit.__table__
        query = select(table).order_by(table.c.id)
        if ins is not None:
            query = query.where(table.c.ins == ins.value)
        with self._engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]
