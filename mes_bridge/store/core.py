"""The store's engine, its one write path (with the audit chain), and its schema migrations.

The engine set-up is the operator's (SQLite WAL, BEGIN IMMEDIATE, a cross-process writer lock; or
PostgreSQL); blobs are written and fsync'd (file and directory) before the rows that point at them
commit. Every write goes through :meth:`StoreCore._writing`; audit entries are appended inside that
transaction, chained to the head row, and logged (ids only) once it has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mssante_base.storage.blobs import BlobStore
from mssante_base.storage.engines import open_engines

from ..lifecycle import SpacePolicy
from .chain import GENESIS, canonical_detail, link_hash
from .schema import BridgeAudit, BridgeAuditHead

audit_log = logging.getLogger("mes_bridge.audit")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
FIRST_REVISION = "0001"  # the schema mes_bridge created with create_all before it had migrations
_AUDITED = "mes_bridge_audited"  # Connection.info key: audit lines to log after the commit
_MIGRATION_LOCK_ID = 0x6D65735F62726467  # "mes_brdg": one migrating process at a time on PostgreSQL


def now() -> datetime:
    return datetime.now(UTC)


class StoreCore:
    """Engine, write transactions, audit appends and migrations, shared by the store's parts."""

    def __init__(self, url: str, blob_dir: Path, *, policy: SpacePolicy | None = None) -> None:
        self.policy = policy or SpacePolicy()  # the durations of a space's life ([bridge] settings)
        engines = open_engines(url)
        self._engine, self._writer, self._write_lock, self._dialect = (
            engines.engine, engines.writer, engines.write_lock, engines.dialect)
        self._insert = (postgresql if self._dialect == "postgresql" else sqlite).insert
        self.blobs = BlobStore(blob_dir)
        self.migrate()

    def close(self) -> None:
        self._engine.dispose()

    def read_blob(self, key: str) -> bytes:
        return self.blobs.read(key)

    def migrate(self) -> None:
        """Bring the schema to the latest revision (cheap at every start). A database that mes_bridge
        made before it had migrations is stamped with the first revision, which is that schema."""
        from alembic import command  # here: only migrating needs alembic
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        with self._write_lock.held(), self._writer.begin() as conn:
            if self._dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_ID)))
            config.attributes["connection"] = conn
            tables = set(inspect(conn).get_table_names())
            if "bridge_patients" in tables and "alembic_version" not in tables:
                command.stamp(config, FIRST_REVISION)
            command.upgrade(config, "head")

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One write transaction; its audit entries are logged once it has committed."""
        with self._write_lock.held(), self._writer.begin() as conn:
            conn.info[_AUDITED] = []
            yield conn
            logged = conn.info.pop(_AUDITED)
        for action, ins, actor, entry_id in logged:
            audit_log.info("%s ins=%s actor=%r entry=%d", action, ins, actor, entry_id)

    def _audit(self, conn: Connection, *, actor: str, action: str, ins: str | None, detail: dict[str, Any],
               at: datetime | None = None) -> int:
        """Append one entry to the chain (inside the caller's transaction); its id."""
        at = at or now()
        head_table = BridgeAuditHead.__table__
        head = conn.execute(select(head_table.c.hash).where(head_table.c.id == 1).with_for_update()).first()
        prev = head.hash if head is not None else GENESIS
        text = canonical_detail(detail)
        digest = link_hash(prev, at=at, actor=actor, action=action, ins=ins, detail=text)
        table = BridgeAudit.__table__
        document = detail.get("document")
        entry_id = conn.execute(table.insert().values(
            at=at, actor=actor, action=action, ins=ins, detail=text, prev_hash=prev, hash=digest,
            document=document if isinstance(document, int) else None).returning(table.c.id)).scalar_one()
        if head is None:
            conn.execute(head_table.insert().values(id=1, last_id=entry_id, hash=digest))
        else:
            conn.execute(update(head_table).where(head_table.c.id == 1).values(last_id=entry_id, hash=digest))
        conn.info[_AUDITED].append((action, ins, actor, entry_id))
        return entry_id
