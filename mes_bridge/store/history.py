"""Reading the audit chain: a patient's activity history, and the check of the whole chain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select

from mssante_base.patients.ins import Ins

from . import rows
from .chain import first_broken
from .core import StoreCore
from .documents import hidden_from
from .records import Audience, AuditEntry, ChainReport
from .schema import BridgeAudit, BridgeAuditHead, BridgeDocument

_TABLE = BridgeAudit.__table__
_DOCUMENTS = BridgeDocument.__table__


def _patient_entries(ins: str, audience: Audience) -> Select[Any]:
    """The patient's entries, less those about a document hidden from ``audience``."""
    hidden = select(_DOCUMENTS.c.id).where(_DOCUMENTS.c.ins == ins, hidden_from(audience),
                                           _DOCUMENTS.c.id == _TABLE.c.document)
    return select(_TABLE).where(_TABLE.c.ins == ins, ~hidden.exists())


class HistoryStore(StoreCore):
    def history(self, ins: str, *, offset: int = 0, limit: int | None = 50,
                audience: Audience = Audience.PATIENT) -> list[AuditEntry]:
        """The patient's activity history as ``audience`` may see it, newest first."""
        query = _patient_entries(ins, audience).order_by(_TABLE.c.id.desc()).offset(offset).limit(limit)
        with self._engine.connect() as conn:
            return [rows.audit(row) for row in conn.execute(query)]

    def count_history(self, ins: str, *, audience: Audience = Audience.PATIENT) -> int:
        with self._engine.connect() as conn:
            entries = _patient_entries(ins, audience).subquery()
            return int(conn.execute(select(func.count()).select_from(entries)).scalar_one())

    def audit(self, ins: Ins | None = None) -> list[AuditEntry]:
        """The whole trail (of one patient), oldest first."""
        query = select(_TABLE).order_by(_TABLE.c.id)
        if ins is not None:
            query = query.where(_TABLE.c.ins == ins.value)
        with self._engine.connect() as conn:
            return [rows.audit(row) for row in conn.execute(query)]

    def verify_chain(self) -> ChainReport:
        """Recompute every link in order; the first entry that does not follow, if any."""
        with self._engine.connect() as conn:
            head = conn.execute(select(BridgeAuditHead.hash).where(BridgeAuditHead.id == 1)).scalar()
            result = conn.execution_options(yield_per=1000).execute(select(_TABLE).order_by(_TABLE.c.id))
            count, bad, reason = first_broken(result, head)
        return ChainReport(entries=count, ok=reason is None, first_bad=bad, reason=reason)
