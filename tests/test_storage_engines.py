"""The engines' two kinds of write: durable ones wait for the disk at commit; lazy ones (IMAP flags,
\\Recent claims, last logins) do not, on SQLite and on PostgreSQL, and never leak that to the next write."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from mssante_base.storage.engines import lazy_commit, open_engines

SQLITE_FULL, SQLITE_NORMAL = 2, 1


def _setting(conn, dialect: str) -> object:
    if dialect == "sqlite":
        return conn.execute(text("PRAGMA synchronous")).scalar()
    return conn.execute(text("SHOW synchronous_commit")).scalar()


def test_lazy_writes_do_not_wait_for_the_disk_and_durable_ones_do(store_url: str, tmp_path: Path) -> None:
    engines = open_engines(store_url)
    try:
        dialect = engines.dialect
        if dialect == "sqlite":
            durable, lazy = SQLITE_FULL, SQLITE_NORMAL
        else:  # the server's own setting (the tests' throwaway cluster may already not wait for its disk)
            with engines.engine.connect() as conn:
                durable, lazy = _setting(conn, dialect), "off"
        for _ in range(2):  # pooled connections: a lazy write never leaves its setting to the next one
            with engines.write_lock.held(), engines.lazy_writer.begin() as conn:
                lazy_commit(conn)
                assert _setting(conn, dialect) == lazy
            with engines.write_lock.held(), engines.writer.begin() as conn:
                assert _setting(conn, dialect) == durable
    finally:
        engines.engine.dispose()
