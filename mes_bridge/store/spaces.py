"""A space's changes of state, each in one audited transaction: the letter with its provisional code,
activation or opposition, creation by default at the end of the opt-out window, closure, the
operator's override, legal representatives, deletion and, after the retention, the purge.

The rules (which change from which state, the window, representation until an age) are
:mod:`mes_bridge.lifecycle`'s; this module applies them. A space that takes mail for the first time
gets its welcome message in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, delete, or_, select, update

from mssante_base.patients import codes
from mssante_base.patients.ins import Ins
from mssante_base.patients.states import RECEIVING, PatientState
from mssante_base.storage.blobs import BlobFile

from ..lifecycle import ALLOWED, Change, ChangeRefused, next_state, opens_space
from ..welcome import welcome_message
from . import rows
from .core import now
from .messages import MessageStore
from .notifications import SIGNATURE, SPACE_CREATED
from .patients import KNOWN_STATES, PatientNotFound
from .records import MessageMeta, NewPatient, PatientRecord
from .schema import (
    BridgeAttachment,
    BridgeDocument,
    BridgeLoginChallenge,
    BridgeMessage,
    BridgeNotification,
    BridgeOutbox,
    BridgePatient,
    BridgeRepresentative,
)

_TABLE = BridgePatient.__table__
_REPS = BridgeRepresentative.__table__
OVERRIDE_STATES = KNOWN_STATES - {PatientState.PENDING, PatientState.DELETED}  # `set-state`: the rest has its command
WINDOW_BATCH = 500


class ActivationRefused(ValueError):
    """The code is wrong or expired, or the space cannot take this change now."""


CODE_REFUSED = "code provisoire incorrect ou expiré / wrong or expired activation code"
DELETED_NOTICE = (
    "Votre espace Mon espace santé est supprimé",
    "Bonjour,\n\nComme vous l'avez demandé, votre espace Mon espace santé a été supprimé. Il n'est plus "
    "accessible et ne reçoit plus de messages. Son contenu est archivé, illisible, puis détruit au terme de "
    "la durée légale de conservation." + SIGNATURE,
)


@dataclass
class _Welcome:
    """A welcome message's blob written ahead of the transaction that may use it."""

    blob: BlobFile
    meta: MessageMeta
    used: bool = False


class SpaceStore(MessageStore):
    @contextmanager
    def _welcome(self, ins: str, *, needed: bool = True) -> Iterator[_Welcome | None]:
        """The welcome's blob, durable before the rows; removed again if the transaction did not use it.
        None when the change cannot open a space (no file written for nothing)."""
        if not needed:
            yield None
            return
        raw, meta = welcome_message(Ins(ins), now())
        welcome = _Welcome(self.blobs.write(raw), meta)
        try:
            yield welcome
        finally:
            if not welcome.used:
                self.blobs.remove(welcome.blob.key)

    def _open_space(self, conn: Connection, ins: str, welcome: _Welcome) -> None:
        self._insert_message(conn, "in", ins, welcome.meta.message_id, welcome.meta, welcome.blob,
                             actor="mes_bridge", no_reply=True)
        welcome.used = True

    def _row(self, conn: Connection, ins: str, *, lock: bool = False) -> Any:
        query = select(_TABLE).where(_TABLE.c.ins == ins)
        return conn.execute(query.with_for_update() if lock and self._dialect == "postgresql" else query).first()

    def _apply(self, conn: Connection, row: Any, change: Change, *, actor: str, at: datetime,
               welcome: _Welcome | None, values: dict[str, Any] | None = None,
               detail: dict[str, Any] | None = None) -> PatientRecord:
        """Move ``row``'s space by ``change`` (ChangeRefused when not allowed), audited; welcome if it opens."""
        before = PatientState(row.state)
        after = next_state(before, change)
        return self._move(conn, row, before, after, action=change.value, actor=actor, at=at, welcome=welcome,
                          values=values, detail=detail)

    def _move(self, conn: Connection, row: Any, before: PatientState, after: PatientState, *, action: str,
              actor: str, at: datetime, welcome: _Welcome | None, values: dict[str, Any] | None = None,
              detail: dict[str, Any] | None = None) -> PatientRecord:
        changes: dict[str, Any] = {"state": after.value, "updated_at": at, **(values or {})}
        opened = opens_space(before, after, opened_before=row.space_opened_at is not None)
        if opened:
            changes["space_opened_at"] = at
        if after is PatientState.ACTIVE and before is not PatientState.ACTIVE:
            changes |= {"activated_at": at, "activation_code_hash": None, "activation_expires_at": None}
        if after is not PatientState.PENDING:
            changes["window_ends_at"] = None
        conn.execute(update(_TABLE).where(_TABLE.c.ins == row.ins).values(**changes))
        self._audit(conn, actor=actor, action=action, ins=row.ins,
                    detail={"from": before.value, "to": after.value, **(detail or {})}, at=at)
        if opened and welcome is not None:
            self._open_space(conn, row.ins, welcome)
        return rows.patient(self._row(conn, row.ins))

    # -- coming into being -------------------------------------------------------------------

    def _insert_patient(self, conn: Connection, patient: NewPatient, *, actor: str, at: datetime,
                        code_hash: str | None = None) -> bool:
        if patient.state not in KNOWN_STATES:
            raise ValueError(f"patient {patient.ins}: state {patient.state!r} cannot be stored")
        pending = patient.state is PatientState.PENDING
        values = {
            "ins": patient.ins.value, "state": patient.state.value, "given_name": patient.given_name,
            "family_name": patient.family_name, "password_hash": patient.password_hash,
            "birth_date": patient.birth_date, "sex": patient.sex, "email": patient.email,
            "created_at": at, "updated_at": at,
            "activated_at": at if patient.state is PatientState.ACTIVE else None,
            "activation_code_hash": code_hash,
            "activation_expires_at": self.policy.code_expires(at) if code_hash else None,
            "window_ends_at": self.policy.window_ends(at) if pending else None,
        }
        statement = self._insert(_TABLE).values(**values).on_conflict_do_nothing(index_elements=["ins"])
        if conn.execute(statement.returning(_TABLE.c.ins)).first() is None:  # RETURNING: rowcount lies on psycopg
            return False
        self._audit(conn, actor=actor, action="patient-add", ins=patient.ins.value,
                    detail={"state": patient.state.value}, at=at)
        return True

    def seed(self, patients: Iterable[NewPatient], *, actor: str = "seed") -> list[str]:
        """Add the patients not known yet (a known patient is never overwritten); their INS. A seeded space
        that takes mail gets its welcome message."""
        added = []
        patients = list(patients)
        with self._engine.connect() as conn:  # every start seeds the file again: the known ones cost one read
            known = set(conn.execute(select(_TABLE.c.ins).where(
                _TABLE.c.ins.in_([patient.ins.value for patient in patients]))).scalars())
        for patient in patients:
            if patient.ins.value in known:
                continue
            receiving = patient.state in RECEIVING
            with self._welcome(patient.ins.value, needed=receiving) as welcome, self._writing() as conn:
                at = now()
                if not self._insert_patient(conn, patient, actor=actor, at=at, code_hash=patient.activation_code_hash):
                    continue
                if welcome is not None:
                    conn.execute(update(_TABLE).where(_TABLE.c.ins == patient.ins.value).values(space_opened_at=at))
                    self._open_space(conn, patient.ins.value, welcome)
                added.append(patient.ins.value)
        with self._writing() as conn:  # once every space of the file exists: a parent may come after the child
            for patient in patients:
                for parent in patient.representatives if patient.ins.value in added else ():
                    if self._row(conn, parent.value) is None:
                        raise PatientNotFound(f"{patient.ins.value}: no space is known for the representative "
                                              f"{parent.value}")
                    self._add_representative(conn, patient.ins.value, parent.value, actor=actor, at=now())
        return added

    def create_patient(self, patient: NewPatient, *, actor: str,
                       representatives: Sequence[Ins] = ()) -> tuple[PatientRecord, str]:
        """The letter: a pending space (opt-out window open) and its provisional code, shown once and kept only
        hashed. ``representatives`` (parents, whose spaces must be known) reach a child's space."""
        code = codes.new_activation_code()
        pending = replace(patient, state=PatientState.PENDING)
        with self._writing() as conn:
            at = now()
            for parent in representatives:
                if parent.value == patient.ins.value or self._row(conn, parent.value) is None:
                    raise PatientNotFound(f"no patient space is known for the representative {parent.value}")
            if not self._insert_patient(conn, pending, actor=actor, at=at, code_hash=codes.hash_code(code)):
                raise ValueError(f"a patient space already exists for INS {patient.ins.value}")
            for parent in representatives:
                self._add_representative(conn, patient.ins.value, parent.value, actor=actor, at=at)
            row = self._row(conn, patient.ins.value)
        return rows.patient(row), code

    def _add_representative(self, conn: Connection, child: str, parent: str, *, actor: str, at: datetime) -> None:
        conn.execute(self._insert(_REPS).values(child=child, representative=parent, since=at)
                     .on_conflict_do_nothing(index_elements=["child", "representative"]))
        self._audit(conn, actor=actor, action="representative-add", ins=child, detail={"representative": parent},
                    at=at)

    def add_representative(self, child: Ins, parent: Ins, *, actor: str) -> None:
        """Make ``parent`` a legal representative of ``child`` (both spaces must be known)."""
        with self._writing() as conn:
            for ins in (child, parent):
                if self._row(conn, ins.value) is None:
                    raise PatientNotFound(f"no patient space is known for INS {ins.value}")
            if not self.policy.represents(self._row(conn, child.value).birth_date, date.today()):
                raise ValueError(f"{child.value} is of age: nobody represents them")
            self._add_representative(conn, child.value, parent.value, actor=actor, at=now())

    def new_activation_code(self, ins: Ins, *, actor: str) -> str:
        """A fresh provisional code (the old one stops working) for a space that may then be activated."""
        code = codes.new_activation_code()
        with self._writing() as conn:
            row = self._row(conn, ins.value, lock=True)
            if row is None:
                raise PatientNotFound(f"no patient space is known for INS {ins.value}")
            try:
                next_state(PatientState(row.state), Change.NEW_CODE)
            except ChangeRefused as exc:
                raise ActivationRefused(f"INS {ins.value}: {exc}") from exc
            at = now()
            conn.execute(update(_TABLE).where(_TABLE.c.ins == ins.value).values(
                activation_code_hash=codes.hash_code(code), activation_expires_at=self.policy.code_expires(at),
                updated_at=at))
            self._audit(conn, actor=actor, action="activation-code", ins=ins.value, detail={}, at=at)
        return code

    # -- the person's choices, with their code -------------------------------------------------

    def _with_code(self, conn: Connection, ins: str, code: str, change: Change, at: datetime) -> Any:
        """The row whose valid code was typed, if ``change`` is allowed; the same refusal otherwise, so the
        form tells nothing about which INS exist."""
        row = self._row(conn, ins, lock=True)
        if row is None or PatientState(row.state) not in ALLOWED[change]:
            raise ActivationRefused(CODE_REFUSED)
        expired = row.activation_expires_at is None or row.activation_expires_at < at
        if expired or not codes.verify_code(row.activation_code_hash, codes.normal_activation_code(code)):
            raise ActivationRefused(CODE_REFUSED)
        return row

    def activate(self, ins: str, code: str, *, password_hash: str, email: str | None, actor: str) -> PatientRecord:
        """The person activates their space with its provisional code and a password."""
        with self._welcome(ins) as welcome, self._writing() as conn:
            at = now()
            row = self._with_code(conn, ins, code, Change.ACTIVATE, at)
            return self._apply(conn, row, Change.ACTIVATE, actor=actor, at=at, welcome=welcome,
                               values={"password_hash": password_hash, "email": email or row.email})

    def activate_child(self, child: str, code: str, *, representative: str) -> PatientRecord:
        """A parent activates a child's space with the child's code (the child has no login of their own:
        the parent reaches the space from theirs)."""
        if not self.represents(representative, child):
            raise ActivationRefused(CODE_REFUSED)
        with self._welcome(child) as welcome, self._writing() as conn:
            at = now()
            row = self._with_code(conn, child, code, Change.ACTIVATE, at)
            return self._apply(conn, row, Change.ACTIVATE, actor=f"representative:{representative}", at=at,
                               welcome=welcome)

    def oppose_with_code(self, ins: str, code: str, *, actor: str) -> PatientRecord:
        """Opposition to a space's creation with its provisional code (the person or a child's parent)."""
        with self._writing() as conn:
            at = now()
            row = self._with_code(conn, ins, code, Change.OPPOSE, at)
            return self._apply(conn, row, Change.OPPOSE, actor=actor, at=at, welcome=None,
                               values={"activation_code_hash": None, "activation_expires_at": None})

    # -- support and the service -----------------------------------------------------------------

    def change(self, ins: Ins, change: Change, *, actor: str) -> PatientRecord:
        """Oppose or close a space for the person (support); ChangeRefused says why not from its state."""
        with self._writing() as conn:
            row = self._row(conn, ins.value, lock=True)
            if row is None:
                raise PatientNotFound(f"no patient space is known for INS {ins.value}")
            return self._apply(conn, row, change, actor=actor, at=now(), welcome=None)

    def set_state(self, ins: Ins, state: PatientState, *, actor: str) -> PatientRecord:
        """The operator's override of a known space's state (audited); pending and deleted have their own
        commands (create, delete). A space that takes mail for the first time gets its welcome."""
        if state not in OVERRIDE_STATES:
            raise ValueError(f"state {state!r} cannot be set directly")
        with self._welcome(ins.value, needed=state in RECEIVING) as welcome, self._writing() as conn:
            row = self._row(conn, ins.value, lock=True)
            if row is None:
                raise PatientNotFound(f"no patient space is known for INS {ins.value}")
            if row.state == PatientState.DELETED.value:
                raise ChangeRefused(f"INS {ins.value}: the space was deleted at the person's request")
            return self._move(conn, row, PatientState(row.state), state, action="patient-state", actor=actor,
                              at=now(), welcome=welcome)

    def end_windows(self, *, at: datetime | None = None, actor: str = "mes_bridge") -> list[str]:
        """Create by default every pending space whose opt-out window has ended (welcome, notice); their INS."""
        at = at or now()
        with self._engine.connect() as conn:
            due = list(conn.execute(select(_TABLE.c.ins).where(
                _TABLE.c.state == PatientState.PENDING.value, _TABLE.c.window_ends_at <= at,
            ).order_by(_TABLE.c.window_ends_at).limit(WINDOW_BATCH)).scalars())
        created = []
        for ins in due:
            with self._welcome(ins) as welcome, self._writing() as conn:
                row = self._row(conn, ins, lock=True)
                if row is None or row.state != PatientState.PENDING.value:  # activated or opposed meanwhile
                    continue
                self._apply(conn, row, Change.CREATE_BY_DEFAULT, actor=actor, at=now(), welcome=welcome)
                self._notify(conn, ins, "created", *SPACE_CREATED)
                created.append(ins)
        return created

    # -- the right to deletion -------------------------------------------------------------------

    def delete_space(self, ins: Ins, *, actor: str) -> PatientRecord:
        """The person's deletion: the space is closed to everyone and its content archived, readable through
        no page or command, until :meth:`purge`. The person is told (their address is then forgotten)."""
        with self._writing() as conn:
            row = self._row(conn, ins.value, lock=True)
            if row is None:
                raise PatientNotFound(f"no patient space is known for INS {ins.value}")
            at = now()
            self._notify(conn, ins.value, "deleted", *DELETED_NOTICE)
            conn.execute(delete(BridgeLoginChallenge.__table__).where(BridgeLoginChallenge.ins == ins.value))
            return self._apply(conn, row, Change.DELETE, actor=actor, at=at, welcome=None, values={
                "deleted_at": at, "password_hash": None, "email": None, "activation_code_hash": None,
                "activation_expires_at": None})

    def purge(self, *, at: datetime | None = None, actor: str = "mes_bridge") -> list[str]:
        """Destroy the archives of spaces deleted longer ago than the retention: their messages, documents,
        notices and blobs. A tombstone row (INS, state, dates) and the audit trail, content-free, remain, so
        the chain still verifies. Their INS."""
        before = self.policy.purge_before(at or now())
        with self._engine.connect() as conn:
            due = list(conn.execute(select(_TABLE.c.ins).where(
                _TABLE.c.state == PatientState.DELETED.value, _TABLE.c.purged_at.is_(None),
                _TABLE.c.deleted_at <= before)).scalars())
        purged = []
        for ins in due:
            keys = self._purge_one(ins, actor=actor)
            if keys is None:
                continue
            self._remove_unused_blobs(keys)
            purged.append(ins)
        return purged

    def _purge_one(self, ins: str, *, actor: str) -> set[str] | None:
        """One archive's rows gone in one transaction; the blob keys they used (None: not due any more)."""
        messages, documents = BridgeMessage.__table__, BridgeDocument.__table__
        with self._writing() as conn:
            row = self._row(conn, ins, lock=True)
            if row is None or row.state != PatientState.DELETED.value or row.purged_at is not None:
                return None
            keys = set(conn.execute(select(messages.c.blob_key).where(messages.c.ins == ins)).scalars())
            keys |= set(conn.execute(select(documents.c.blob_key).where(documents.c.ins == ins)).scalars())
            counts = {}
            for name, table in (("attachments", BridgeAttachment.__table__), ("documents", documents),
                                ("messages", messages), ("notifications", BridgeNotification.__table__),
                                ("outbox", BridgeOutbox.__table__)):
                counts[name] = conn.execute(delete(table).where(table.c.ins == ins)).rowcount
            conn.execute(delete(_REPS).where(or_(_REPS.c.child == ins, _REPS.c.representative == ins)))
            at = now()
            conn.execute(update(_TABLE).where(_TABLE.c.ins == ins).values(
                given_name=None, family_name=None, birth_date=None, sex=None, email=None, password_hash=None,
                purged_at=at, updated_at=at))
            self._audit(conn, actor=actor, action="purge", ins=ins, detail=counts, at=at)
        return keys

    def _remove_unused_blobs(self, keys: set[str]) -> None:
        """Remove the blobs no remaining row uses (a message to several patients shares one blob)."""
        messages, documents = BridgeMessage.__table__, BridgeDocument.__table__
        with self._engine.connect() as conn:
            used = set(conn.execute(select(messages.c.blob_key).where(messages.c.blob_key.in_(keys))).scalars())
            used |= set(conn.execute(select(documents.c.blob_key).where(documents.c.blob_key.in_(keys))).scalars())
        for key in keys - used:
            self.blobs.remove(key)
