"""The bridge's own outgoing queue (read receipts): a row per message owed to the operator, kept until it
accepts it, retried with back-off; the sender loop lives in :mod:`mes_bridge.outbox`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update

from . import rows
from .core import StoreCore, now
from .records import OutboxItem
from .schema import BridgeOutbox

_TABLE = BridgeOutbox.__table__


class OutboxStore(StoreCore):
    def _queue(self, conn: Connection, ins: str, kind: str, recipient: str, raw: bytes, *,
               message: int | None) -> int:
        at = now()
        item_id = conn.execute(_TABLE.insert().values(
            ins=ins, kind=kind, recipient=recipient, raw=raw, message=message, attempts=0, next_attempt_at=at,
            created_at=at).returning(_TABLE.c.id)).scalar_one()
        self._audit(conn, actor="mes_bridge", action=f"{kind}-queued", ins=ins,
                    detail={"message": message, "item": item_id}, at=at)
        return item_id

    def due_outbox(self, *, limit: int = 20, at: datetime | None = None) -> list[OutboxItem]:
        query = (select(_TABLE).where(_TABLE.c.sent_at.is_(None), _TABLE.c.next_attempt_at <= (at or now()))
                 .order_by(_TABLE.c.next_attempt_at).limit(limit))
        with self._engine.connect() as conn:
            return [rows.outbox_item(row) for row in conn.execute(query)]

    def outbox(self, ins: str | None = None) -> list[OutboxItem]:
        query = select(_TABLE).order_by(_TABLE.c.id)
        if ins is not None:
            query = query.where(_TABLE.c.ins == ins)
        with self._engine.connect() as conn:
            return [rows.outbox_item(row) for row in conn.execute(query)]

    def outbox_sent(self, item: OutboxItem) -> None:
        with self._writing() as conn:
            conn.execute(update(_TABLE).where(_TABLE.c.id == item.id).values(sent_at=now(), last_error=None,
                                                                               attempts=item.attempts + 1))
            self._audit(conn, actor="mes_bridge", action=f"{item.kind}-sent", ins=item.ins,
                        detail={"message": item.extra.get("message"), "item": item.id})

    def outbox_failed(self, item: OutboxItem, error: str, *, retry_at: datetime | None) -> None:
        """A failed attempt: retried at ``retry_at``, or given up (None: refused for good; audited)."""
        with self._writing() as conn:
            values: dict[str, object] = {"attempts": item.attempts + 1, "last_error": error[:1000]}
            if retry_at is None:
                values["sent_at"] = now()  # settled: never tried again
                self._audit(conn, actor="mes_bridge", action=f"{item.kind}-refused", ins=item.ins,
                            detail={"message": item.extra.get("message"), "item": item.id, "reply": error[:300]})
            else:
                values["next_attempt_at"] = retry_at
            conn.execute(update(_TABLE).where(_TABLE.c.id == item.id).values(**values))
