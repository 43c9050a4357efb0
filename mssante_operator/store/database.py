"""The store's database and blob files, as every part of the store uses them: read connections, write
transactions (each a :class:`WriteUnit`), change announcements, accounts and their INBOXes.

SQLite (embedded default) or PostgreSQL (shared by several nodes). Synchronous on purpose: callers run
it in threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, select, update

from mssante_base.storage.blobs import BlobFile, BlobStore
from mssante_base.storage.compiled import Reader, read_transaction
from mssante_base.storage.engines import lazy_commit, open_engines

from .models import Account, Mailbox
from .write_unit import CHANGED_FOLDERS, WriteStatements, WriteUnit, normalize_address

INBOX = "INBOX"


def now() -> datetime:
    return datetime.now(UTC)


def new_uidvalidity() -> int:
    """Seconds since the epoch: grows across re-creations and fits IMAP's 32-bit range until 2106."""
    return int(time.time())


class Database:
    """The engines, the blob files and the write transactions every part of the store shares."""

    def __init__(self, url: str, blob_dir: Path) -> None:
        engines = open_engines(url)
        self.engine, self.writer, self._write_lock, self._dialect = (
            engines.engine, engines.writer, engines.write_lock, engines.dialect)
        self._lazy_writer = engines.lazy_writer
        self._statements = WriteStatements(self._dialect)
        self._insert = self._statements.insert  # INSERT with ON CONFLICT, for the engine in use
        self.blobs = BlobStore(blob_dir)
        # fsync waits on the disk, not the CPU: a batch's blobs are written side by side.
        self._blob_writers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="blob-writer")
        self._inbox_cache: dict[str, int] = {}
        self._listeners: list[Callable[[set[int]], None]] = []
        self._url = url

    @property
    def dialect(self) -> str:
        return self._dialect

    @property
    def local_reads(self) -> bool:
        """Whether a read is a local file access that never waits for a lock (SQLite in WAL), not a network
        round trip (PostgreSQL): an event loop may then make a small one itself."""
        return self._dialect == "sqlite"

    @property
    def url(self) -> str:
        return self._url

    @staticmethod
    def now() -> datetime:
        return now()

    def close(self) -> None:
        self._blob_writers.shutdown(wait=True)
        self.engine.dispose()

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def reader(self) -> AbstractContextManager[Reader]:
        """One read transaction for :class:`~mssante_base.storage.compiled.Compiled` statements (the hot
        reads: without SQLAlchemy's execution layer)."""
        return read_transaction(self.engine)

    @contextmanager
    def writing(self, *, durable: bool = True) -> Iterator[Connection]:
        """One write transaction (SQLite: queued on the cross-process writer lock, BEGIN IMMEDIATE).
        Folders a write unit changed are announced to the change listeners after the commit.
        ``durable=False``: the commit does not wait for the disk (``lazy_commit``): only for what a client
        can set again (flags, \\Recent claims, last logins), never for mail."""
        with self._write_lock.held(), (self.writer if durable else self._lazy_writer).begin() as conn:
            if not durable:
                lazy_commit(conn)
            conn.info.pop(CHANGED_FOLDERS, None)
            yield conn
            changed: set[int] = conn.info.pop(CHANGED_FOLDERS, set())
        if changed:
            for listener in list(self._listeners):
                listener(changed)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[WriteUnit]:
        """One write transaction that changes mail: the :class:`WriteUnit` over it (``durable``: see
        :meth:`writing`)."""
        with self.writing(durable=durable) as conn:
            unit = WriteUnit(conn, self._statements)
            yield unit
            unit.announce()

    def add_change_listener(self, listener: Callable[[set[int]], None]) -> None:
        """``listener(folder_ids)`` runs in the writing thread after each commit that changed folders."""
        self._listeners.append(listener)

    def remove_change_listener(self, listener: Callable[[set[int]], None]) -> None:
        self._listeners.remove(listener)

    # -- blob files --------------------------------------------------------------------------

    def write_blobs(self, contents: list[bytes | None]) -> list[BlobFile | None]:
        """Write (and fsync) one blob per message that has content, concurrently; all or none."""
        if len(contents) == 1:  # one: here, without a hand-off
            return [None if contents[0] is None else self.blobs.write(contents[0])]
        futures = [None if raw is None else self._blob_writers.submit(self.blobs.write, raw) for raw in contents]
        wait([f for f in futures if f is not None])
        failed = [f.exception() for f in futures if f is not None and f.exception() is not None]
        if failed:
            self.remove_blobs(f.result() for f in futures if f is not None and f.exception() is None)
            raise failed[0]
        return [None if f is None else f.result() for f in futures]

    def remove_blobs(self, blobs: Iterable[BlobFile | None]) -> None:
        for blob in blobs:
            if blob is not None:
                self.blobs.remove(blob.key)

    def remove_files(self, keys: Iterable[str]) -> None:
        """Remove the files of blob rows a committed transaction deleted."""
        for key in keys:
            self.blobs.remove(key)

    # -- accounts ----------------------------------------------------------------------------

    def account_id(self, conn: Connection, address: str, *, create: bool = False) -> int | None:
        address = normalize_address(address)
        found = conn.scalar(select(Account.id).where(Account.address == address))
        if found is None and create:
            conn.execute(self._insert(Account).on_conflict_do_nothing(index_elements=["address"]),
                         [{"address": address, "created_at": now()}])
            found = conn.scalar(select(Account.id).where(Account.address == address))
        return found

    @staticmethod
    def next_uidvalidity(conn: Connection, account_id: int) -> int:
        """Seconds since the epoch, but always above the account's last one (see Account.uidvalidity_seq)."""
        last = conn.scalar(select(Account.uidvalidity_seq).where(Account.id == account_id)) or 0
        value = max(new_uidvalidity(), last + 1)
        conn.execute(update(Account).where(Account.id == account_id).values(uidvalidity_seq=value))
        return value

    def ensure_inboxes(self, addresses: Iterable[str]) -> dict[str, int]:
        """INBOX id per normalised address, creating accounts on first delivery (own short commit)."""
        wanted = set(addresses)
        found = {a: self._inbox_cache[a] for a in wanted if a in self._inbox_cache}
        unknown = wanted - found.keys()
        if unknown:
            with self.engine.connect() as conn:
                found.update(self._inbox_ids(conn, unknown))
        missing = sorted(wanted - found.keys())  # sorted: same lock order in concurrent creations
        if missing:
            with self.writer.begin() as conn:
                self._create_accounts(conn, missing)
                found.update(self._inbox_ids(conn, set(missing)))
        self._inbox_cache.update(found)  # an INBOX keeps its id for the life of its account
        return found

    @staticmethod
    def _inbox_ids(conn: Connection, addresses: set[str]) -> dict[str, int]:
        rows = conn.execute(
            select(Account.address, Mailbox.id)
            .join(Mailbox, Mailbox.account_id == Account.id)
            .where(Account.address.in_(addresses), Mailbox.name == INBOX)
        )
        return {address: mailbox_id for address, mailbox_id in rows}

    def _create_accounts(self, conn: Connection, addresses: list[str]) -> None:
        created = now()
        conn.execute(
            self._insert(Account).on_conflict_do_nothing(index_elements=["address"]),
            [{"address": a, "created_at": created} for a in addresses],
        )
        account_ids = conn.scalars(select(Account.id).where(Account.address.in_(addresses))).all()
        conn.execute(
            self._insert(Mailbox).on_conflict_do_nothing(index_elements=["account_id", "name"]),
            [
                {
                    "account_id": i,
                    "name": INBOX,
                    "uidvalidity": new_uidvalidity(),
                    "uidnext": 1,
                    "highestmodseq": 1,
                }
                for i in account_ids
            ],
        )
