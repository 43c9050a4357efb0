"""Patient spaces: identity traits, state, activation with a provisional code, password."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import Connection, select, update

from mssante_base.patients.ins import Ins
from mssante_base.patients.states import PatientState

from .. import codes
from . import rows
from .core import StoreCore, now
from .records import NewPatient, PatientRecord
from .schema import BridgePatient

KNOWN_STATES = frozenset(PatientState) - {PatientState.UNKNOWN}  # "unknown" is the absence of a row
ACTIVATION_VALIDITY = timedelta(days=90)


class PatientNotFound(LookupError):
    """No space is known for this INS."""


class ActivationRefused(ValueError):
    """The activation code is wrong or expired, or the space is not waiting for activation."""


_TABLE = BridgePatient.__table__


class PatientStore(StoreCore):
    def patient(self, ins: Ins | str) -> PatientRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_TABLE).where(_TABLE.c.ins == str(ins))).first()
        return None if row is None else rows.patient(row)

    def patients(self) -> list[PatientRecord]:
        with self._engine.connect() as conn:
            found = conn.execute(select(_TABLE).order_by(_TABLE.c.ins)).all()
        return [rows.patient(row) for row in found]

    def _insert_patient(self, conn: Connection, patient: NewPatient, *, actor: str,
                        code_hash: str | None = None) -> bool:
        if patient.state not in KNOWN_STATES:
            raise ValueError(f"patient {patient.ins}: state {patient.state!r} cannot be stored")
        at = now()
        values = {
            "ins": patient.ins.value, "state": patient.state.value, "given_name": patient.given_name,
            "family_name": patient.family_name, "password_hash": patient.password_hash,
            "birth_date": patient.birth_date, "sex": patient.sex, "email": patient.email,
            "created_at": at, "updated_at": at,
            "activated_at": at if patient.state is PatientState.ACTIVE else None,
            "activation_code_hash": code_hash,
            "activation_expires_at": at + ACTIVATION_VALIDITY if code_hash else None,
        }
        statement = self._insert(_TABLE).values(**values).on_conflict_do_nothing(index_elements=["ins"])
        if conn.execute(statement.returning(_TABLE.c.ins)).first() is None:  # RETURNING: rowcount lies on psycopg
            return False
        self._audit(conn, actor=actor, action="patient-add", ins=patient.ins.value,
                    detail={"state": patient.state.value}, at=at)
        return True

    def seed(self, patients: Iterable[NewPatient], *, actor: str = "seed") -> list[str]:
        """Add the patients not known yet (a known patient is never overwritten); their INS."""
        with self._writing() as conn:
            return [patient.ins.value for patient in patients if self._insert_patient(conn, patient, actor=actor)]

    def create_patient(self, patient: NewPatient, *, actor: str) -> tuple[PatientRecord, str]:
        """A new space waiting for activation, and its provisional code (shown once, kept only hashed)."""
        code = codes.new_activation_code()
        with self._writing() as conn:
            if not self._insert_patient(conn, patient, actor=actor, code_hash=codes.hash_code(code)):
                raise ValueError(f"a patient space already exists for INS {patient.ins.value}")
            row = conn.execute(select(_TABLE).where(_TABLE.c.ins == patient.ins.value)).one()
        return rows.patient(row), code

    def new_activation_code(self, ins: Ins, *, actor: str) -> str:
        """A fresh provisional code for a space still waiting for activation (the old one stops working)."""
        code = codes.new_activation_code()
        at = now()
        with self._writing() as conn:
            state = conn.execute(select(_TABLE.c.state).where(_TABLE.c.ins == ins.value)).scalar()
            if state is None:
                raise PatientNotFound(f"no patient space is known for INS {ins.value}")
            if state != PatientState.NOT_ACTIVATED.value:
                raise ActivationRefused(f"the space of INS {ins.value} is {state}, not waiting for activation")
            conn.execute(update(_TABLE).where(_TABLE.c.ins == ins.value).values(
                activation_code_hash=codes.hash_code(code), activation_expires_at=at + ACTIVATION_VALIDITY,
                updated_at=at))
            self._audit(conn, actor=actor, action="activation-code", ins=ins.value, detail={}, at=at)
        return code

    def activate(self, ins: str, code: str, *, password_hash: str, email: str | None, actor: str) -> PatientRecord:
        """Activate a space with its provisional code; ActivationRefused says why not (same words for an
        unknown INS and a wrong code, so the form reveals nothing)."""
        refused = ActivationRefused("code provisoire incorrect ou expiré / wrong or expired activation code")
        at = now()
        with self._writing() as conn:
            row = conn.execute(select(_TABLE).where(_TABLE.c.ins == ins)).first()
            if row is None or row.state != PatientState.NOT_ACTIVATED.value:
                raise refused
            expired = row.activation_expires_at is None or row.activation_expires_at < at
            if expired or not codes.verify_code(row.activation_code_hash, codes.normal_activation_code(code)):
                raise refused
            conn.execute(update(_TABLE).where(_TABLE.c.ins == ins).values(
                state=PatientState.ACTIVE.value, password_hash=password_hash, email=email or row.email,
                activation_code_hash=None, activation_expires_at=None, activated_at=at, updated_at=at))
            self._audit(conn, actor=actor, action="activate", ins=ins, detail={}, at=at)
            row = conn.execute(select(_TABLE).where(_TABLE.c.ins == ins)).one()
        return rows.patient(row)

    def set_state(self, ins: Ins, state: PatientState, *, actor: str) -> PatientRecord:
        """Change a known patient's state (audited); raises PatientNotFound."""
        if state not in KNOWN_STATES:
            raise ValueError(f"state {state!r} cannot be stored")
        at = now()
        with self._writing() as conn:
            before = conn.execute(select(_TABLE.c.state).where(_TABLE.c.ins == ins.value)).scalar()
            if before is None:
                raise PatientNotFound(f"no patient space is known for INS {ins.value}")
            values: dict[str, object] = {"state": state.value, "updated_at": at}
            if state is PatientState.ACTIVE and before != PatientState.ACTIVE.value:
                values |= {"activated_at": at, "activation_code_hash": None, "activation_expires_at": None}
            conn.execute(update(_TABLE).where(_TABLE.c.ins == ins.value).values(**values))
            self._audit(conn, actor=actor, action="patient-state", ins=ins.value,
                        detail={"from": before, "to": state.value}, at=at)
            row = conn.execute(select(_TABLE).where(_TABLE.c.ins == ins.value)).one()
        return rows.patient(row)

