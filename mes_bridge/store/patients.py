"""Patient spaces as the store reads them: identity traits and state, and who represents which child."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Connection, select

from mssante_base.patients.ins import Ins
from mssante_base.patients.states import PatientState

from . import rows
from .core import StoreCore
from .records import Child, PatientRecord
from .schema import BridgePatient, BridgeRepresentative

KNOWN_STATES = frozenset(PatientState) - {PatientState.UNKNOWN}  # "unknown" is the absence of a row


class PatientNotFound(LookupError):
    """No space is known for this INS."""


_TABLE = BridgePatient.__table__
_REPS = BridgeRepresentative.__table__


class PatientStore(StoreCore):
    def patient(self, ins: Ins | str) -> PatientRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_TABLE).where(_TABLE.c.ins == str(ins))).first()
        return None if row is None else rows.patient(row)

    def patients(self) -> list[PatientRecord]:
        with self._engine.connect() as conn:
            found = conn.execute(select(_TABLE).order_by(_TABLE.c.ins)).all()
        return [rows.patient(row) for row in found]

    def _current_children(self, conn: Connection, representative: str, today: date) -> list[Child]:
        query = (select(_TABLE).join(_REPS, _REPS.c.child == _TABLE.c.ins)
                 .where(_REPS.c.representative == representative, _REPS.c.ended_at.is_(None))
                 .order_by(_TABLE.c.birth_date, _TABLE.c.ins))
        return [Child(row.ins, row.given_name, row.family_name, PatientState(row.state), row.birth_date)
                for row in conn.execute(query) if self.policy.represents(row.birth_date, today)]

    def children(self, representative: str, *, today: date | None = None) -> list[Child]:
        """The children ``representative`` represents today (not ended, not of age), oldest first."""
        with self._engine.connect() as conn:
            return self._current_children(conn, representative, today or date.today())

    def represents(self, representative: str, child: str, *, today: date | None = None) -> bool:
        """Whether ``representative`` may act in ``child``'s space today."""
        return any(found.ins == child for found in self.children(representative, today=today))

    def _representative_emails(self, conn: Connection, child: str, today: date) -> list[str]:
        """The notification addresses of those who represent ``child`` today (a child has none of their own)."""
        birth = conn.execute(select(_TABLE.c.birth_date).where(_TABLE.c.ins == child)).scalar()
        if not self.policy.represents(birth, today):
            return []
        query = (select(_TABLE.c.email).join(_REPS, _REPS.c.representative == _TABLE.c.ins)
                 .where(_REPS.c.child == child, _REPS.c.ended_at.is_(None), _TABLE.c.email.is_not(None),
                        _TABLE.c.state == PatientState.ACTIVE.value)
                 .order_by(_REPS.c.representative))
        return [email for email in conn.execute(query).scalars() if email]
