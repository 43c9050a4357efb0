"""SQLAlchemy engines as both services' stores open them: SQLite made durable and multi-process safe (WAL,
full fsync, BEGIN IMMEDIATE for writers, a cross-process writer lock), or PostgreSQL."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Each pooled connection (one per thread that reads, in every worker and in mes_bridge) has its own page cache,
# 2 MB by default, and keeps it full: ~10 MB per worker after a burst of IMAP logins and SELECTs. Its pages
# are worth little here: another process's commit makes SQLite drop them, and a page read again comes from
# the kernel's file cache (shared by every process). 256 KiB each: about 20 MB less for the tree with 1,000
# IDLE clients (docs/benchmarks.md, Memory).
SQLITE_CACHE_KIB = 256
_WRITE_OPTION = "mssante_write"
_LAZY_OPTION = "mssante_lazy_commit"  # a write that may be lost in a power cut, never half-done


def _configure_sqlite(engine: Engine) -> None:
    """Durable, multi-process-safe SQLite: WAL, full fsync, busy wait, FKs, explicit BEGIN.

    Write transactions start with BEGIN IMMEDIATE so that they wait (busy_timeout) for the write lock
    up front, instead of failing when a read transaction has to be upgraded under contention.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")  # negative: in KiB
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        immediate = options.get(_WRITE_OPTION, False)
        if immediate:  # per transaction: the connection may have served a lazy write before
            conn.exec_driver_sql("PRAGMA synchronous = NORMAL" if options.get(_LAZY_OPTION) else
                                 "PRAGMA synchronous = FULL")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _build_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        _configure_sqlite(engine)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


class WriterLock:
    """Queues the writers of one SQLite file, across processes, on a blocking file lock.

    SQLite's own busy handler polls with growing sleeps (up to 100 ms) while another process holds
    the write lock; worker processes sharing a database then waste most of their time asleep. A
    flock() waiter is woken the moment the lock is released. PostgreSQL needs none of this.
    """

    def __init__(self, database: str | None) -> None:
        self._path = Path(database + ".writelock") if database and database != ":memory:" else None

    @contextmanager
    def held(self) -> Iterator[None]:
        if self._path is None:
            yield
            return
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


@dataclass(frozen=True)
class Engines:
    """A database's engine, its write path (BEGIN IMMEDIATE on SQLite) and the cross-process writer lock;
    shared by the operator's store and mes_bridge's."""

    engine: Engine
    writer: Engine
    write_lock: WriterLock
    dialect: str
    lazy_writer: Engine  # commits without waiting for the disk: see lazy_commit()


def open_engines(url: str) -> Engines:
    engine = _build_engine(url)
    parsed = make_url(url)
    writer = engine.execution_options(**{_WRITE_OPTION: True})
    return Engines(engine, writer,
                   WriterLock(parsed.database if parsed.get_backend_name() == "sqlite" else None), engine.dialect.name,
                   writer.execution_options(**{_LAZY_OPTION: True}))


def lazy_commit(conn: Connection) -> None:
    """Inside a transaction of ``Engines.lazy_writer``: its commit does not wait for the disk. SQLite
    (WAL, synchronous=NORMAL: set by the begin event) and PostgreSQL (synchronous_commit off) keep the
    database whole; a power cut loses at most the last such commits. For state a client can set again
    (IMAP flags, \\Recent claims), as Dovecot's ``mail_fsync = optimized`` does — never for mail."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")

