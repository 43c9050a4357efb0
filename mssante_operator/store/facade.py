"""The Store facade: the only way the rest of the operator reads or writes mail.

Synchronous on purpose (callers run it in threads). Delivery order is what makes the SMTP 250 safe:
blob written and fsync'd first, then one transaction allocates UIDs and inserts the rows, and only
the commit makes the message visible.
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, create_engine, delete, event, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from mssante_operator.store.blobs import CLUSTER_MARKER, BlobFile, BlobStore
from mssante_operator.store.folders import Folders
from mssante_operator.store.models import Account, Blob, Mailbox, Message, StoreIdentity
from mssante_operator.store.queue import OutboundQueue

log = logging.getLogger(__name__)

INBOX = "INBOX"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
ORPHAN_MIN_AGE = timedelta(hours=1)
# PostgreSQL btree entries are limited to ~2.7 kB: longer Message-IDs cannot be indexed for dedup.
MAX_MESSAGE_ID_BYTES = 900
# Serialises concurrent `migrate()` calls of several nodes sharing one PostgreSQL database.
_MIGRATION_LOCK_ID = 0x6D7373616E7465  # "mssante"
_WRITE_OPTION = "mssante_write"
_CHANGED = "mssante_changed_folders"
CHANGES_CHANNEL = "mssante_folders"  # PostgreSQL NOTIFY channel: payload "id,id,…" of changed folders


class MessageNotFoundError(LookupError):
    """No message with that UID in that mailbox of that address."""


class BlobStorageMismatch(ValueError):
    """The blob directory is not the storage of this database's cluster: starting would lose mail."""


class DeliveryOutcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class NewMessage:
    """A message ready to be stored; the headers are decoded by the caller."""

    raw: bytes
    message_id: str | None
    from_addr: str
    subject: str
    authentication_results: str
    received_at: datetime


@dataclass(frozen=True)
class StoredMessage:
    """One message as `mailbox ls` (and IMAP FETCH) sees it."""

    uid: int
    message_id: str | None
    from_addr: str
    subject: str
    size: int
    received_at: datetime
    authentication_results: str
    internaldate: datetime
    modseq: int
    flags: frozenset[str]


def normalize_address(address: str) -> str:
    """Accounts are keyed by the lower-cased address, as the annuaire lists them."""
    normalized = address.strip().lower()
    if not normalized:
        raise ValueError("empty mailbox address")
    return normalized


def _dedup_key(message_id: str | None) -> str | None:
    """The Message-ID as stored and deduplicated on; None when absent, blank or too long to index."""
    if message_id is None:
        return None
    message_id = message_id.strip()
    if not message_id or len(message_id.encode("utf-8", "replace")) > MAX_MESSAGE_ID_BYTES:
        return None
    return message_id


def _now() -> datetime:
    return datetime.now(UTC)


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
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
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


class _WriterLock:
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
    shared by this store and mes_bridge's."""

    engine: Engine
    writer: Engine
    write_lock: _WriterLock
    dialect: str


def open_engines(url: str) -> Engines:
    engine = _build_engine(url)
    parsed = make_url(url)
    return Engines(engine, engine.execution_options(**{_WRITE_OPTION: True}),
                   _WriterLock(parsed.database if parsed.get_backend_name() == "sqlite" else None), engine.dialect.name)


class Store:
    """Mail storage over SQLite (embedded default) or PostgreSQL (shared by several nodes)."""

    def __init__(self, url: str, blob_dir: Path) -> None:
        engines = open_engines(url)
        self._engine, self._writer, self._write_lock, self._dialect = (
            engines.engine, engines.writer, engines.write_lock, engines.dialect)
        self._statements = _DeliveryStatements(self._insert(Message))
        self.blobs = BlobStore(blob_dir)
        self._inbox_cache: dict[str, int] = {}
        # fsync waits on the disk, not the CPU: a batch's blobs are written side by side.
        self._blob_writers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="blob-writer")
        self.folders = Folders(self)
        self.queue = OutboundQueue(self)
        from mssante_operator.store.conversations import Conversations  # here: it imports this module

        self.conversations = Conversations(self)
        self._listeners: list[Callable[[set[int]], None]] = []
        self._url = url

    # -- shared with Folders -----------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            yield conn

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """One write transaction (SQLite: queued on the cross-process writer lock, BEGIN IMMEDIATE).
        Folders marked with :meth:`changed` are announced to the change listeners after the commit."""
        with self._write_lock.held(), self._writer.begin() as conn:
            conn.info.pop(_CHANGED, None)
            yield conn
            changed: set[int] = conn.info.pop(_CHANGED, set())
        if changed:
            for listener in list(self._listeners):
                listener(changed)

    def changed(self, conn: Connection, folder_ids: Iterable[int]) -> None:
        """Mark folders as changed by this transaction: listeners in this process hear of it after the
        commit; on PostgreSQL, NOTIFY (sent at commit) tells every other process and node too."""
        ids = set(folder_ids)
        if not ids:
            return
        conn.info.setdefault(_CHANGED, set()).update(ids)
        if self._dialect == "postgresql":
            conn.execute(select(func.pg_notify(CHANGES_CHANNEL, ",".join(str(i) for i in sorted(ids)))))

    def add_change_listener(self, listener: Callable[[set[int]], None]) -> None:
        """``listener(folder_ids)`` runs in the writing thread after each commit that changed folders."""
        self._listeners.append(listener)

    def remove_change_listener(self, listener: Callable[[set[int]], None]) -> None:
        self._listeners.remove(listener)

    @property
    def dialect(self) -> str:
        return self._dialect

    @property
    def url(self) -> str:
        return self._url

    def account_id(self, conn: Connection, address: str, *, create: bool = False) -> int | None:
        address = normalize_address(address)
        found = conn.scalar(select(Account.id).where(Account.address == address))
        if found is None and create:
            conn.execute(self._insert(Account).on_conflict_do_nothing(index_elements=["address"]),
                         [{"address": address, "created_at": _now()}])
            found = conn.scalar(select(Account.id).where(Account.address == address))
        return found

    @staticmethod
    def next_uidvalidity(conn: Connection, account_id: int) -> int:
        """Seconds since the epoch, but always above the account's last one (see Account.uidvalidity_seq)."""
        last = conn.scalar(select(Account.uidvalidity_seq).where(Account.id == account_id)) or 0
        value = max(_new_uidvalidity(), last + 1)
        conn.execute(update(Account).where(Account.id == account_id).values(uidvalidity_seq=value))
        return value

    @staticmethod
    def now() -> datetime:
        return _now()

    # -- lifecycle ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the latest revision and bind the blob directory to the database; cheap and
        safe at every start-up. Raises BlobStorageMismatch when the blob directory is another's."""
        from alembic import command  # here, not at the top: alembic is ~11 MB that only migrating needs
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        with self._writer.begin() as conn:
            if self._dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_ID)))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            self._bind_blob_storage(conn)

    def _bind_blob_storage(self, conn: Connection) -> None:
        """The database and the blob directory hold one cluster id; a database without one (new, or from
        before this check) takes the directory's, or a new id written to both. Run under the migration lock."""
        held = conn.scalar(select(StoreIdentity.cluster_id))
        if held is not None:
            self._compare_blob_storage(held)
            return
        cluster_id = self.blobs.cluster_id()
        if cluster_id is None:
            cluster_id = uuid.uuid4().hex
            self.blobs.mark_cluster(cluster_id)  # first: a failed commit leaves a marker the next start adopts
        conn.execute(insert(StoreIdentity), {"id": 1, "cluster_id": cluster_id, "created_at": _now()})
        log.info("blob storage %s bound to this database (cluster %s)", self.blobs.root, cluster_id)

    def check_blob_storage(self) -> None:
        """Raise BlobStorageMismatch unless the blob directory is this database's (for a node that does not
        migrate: a worker started after its supervisor's migration)."""
        with self._engine.connect() as conn:
            held = conn.scalar(select(StoreIdentity.cluster_id))
        if held is None:
            raise BlobStorageMismatch("the database has no cluster id yet: run the migration first (serve does)")
        self._compare_blob_storage(held)

    def _compare_blob_storage(self, held: str) -> None:
        found = self.blobs.cluster_id()
        if found == held:
            return
        marker = self.blobs.root / CLUSTER_MARKER
        what = "is not marked" if found is None else f"is marked for cluster {found}"
        raise BlobStorageMismatch(
            f"blob directory {self.blobs.root} {what}, but the database belongs to cluster {held}: "
            f"every node sharing the database must use the cluster's blob storage (storage.blob_dir), or its "
            f"queue would take messages whose files it cannot read. If this directory really holds the "
            f"cluster's files (restored from a backup), write {held} into {marker}.")

    def close(self) -> None:
        self._blob_writers.shutdown(wait=True)
        self._engine.dispose()

    # -- delivery ----------------------------------------------------------------------------

    def deliver(self, message: NewMessage, addresses: list[str]) -> dict[str, DeliveryOutcome]:
        """Store `message` once in the INBOX of each address; durable when this returns."""
        return self.deliver_many([(message, addresses)])[0]

    def deliver_many(self, items: list[tuple[NewMessage, list[str]]]) -> list[dict[str, DeliveryOutcome]]:
        """Group commit: write every blob (fsync each), then one transaction for all the rows.

        Outcomes are keyed by the addresses as given; spellings of one address share one delivery.
        """
        for message, _ in items:
            if message.received_at.utcoffset() is None:
                raise ValueError("received_at must be timezone-aware")
        targets = [sorted({normalize_address(a) for a in addresses}) for _, addresses in items]
        inboxes = self._ensure_inboxes(a for group in targets for a in group)
        contents = [m.raw if group else None for (m, _), group in zip(items, targets, strict=True)]
        blobs = self._write_blobs(contents)
        with self.writing() as conn:
            try:
                stored = self._insert_all(conn, items, targets, blobs, inboxes)
            except BaseException:
                self._remove_blobs(blobs)  # nothing was committed: the files are certainly unreferenced
                raise
            self.changed(conn, (inboxes[a] for outcome in stored for a, o in outcome.items()
                                if o is DeliveryOutcome.STORED))
        # Were COMMIT itself to fail, it may still have happened: files are left to collect_orphan_blobs().
        self._remove_blobs(b for b, outcome in zip(blobs, stored, strict=True) if not _any_stored(outcome))
        return [
            {address: outcome[normalize_address(address)] for address in addresses}
            for (_, addresses), outcome in zip(items, stored, strict=True)
        ]

    def _insert_all(
        self,
        conn: Connection,
        items: list[tuple[NewMessage, list[str]]],
        targets: list[list[str]],
        blobs: list[BlobFile | None],
        inboxes: dict[str, int],
    ) -> list[dict[str, DeliveryOutcome]]:
        self._lock_mailboxes(conn, sorted({inboxes[a] for group in targets for a in group}))
        return [
            self._insert_one(conn, message, group, blob, inboxes)
            for (message, _), group, blob in zip(items, targets, blobs, strict=True)
        ]

    def _insert_one(
        self,
        conn: Connection,
        message: NewMessage,
        group: list[str],
        blob: BlobFile | None,
        inboxes: dict[str, int],
    ) -> dict[str, DeliveryOutcome]:
        """Rows for one message: its blob row (only if some recipient stores it), then one row per mailbox."""
        outcome: dict[str, DeliveryOutcome] = {}
        blob_id: int | None = None
        for address in group:
            if self._is_duplicate(conn, inboxes[address], message):
                outcome[address] = DeliveryOutcome.DUPLICATE
                continue
            if blob_id is None:
                assert blob is not None
                blob_id = self._insert_blob(conn, blob)
            outcome[address] = self._insert_message(conn, inboxes[address], message, blob_id)
        if blob_id is not None and not _any_stored(outcome):  # only after an ON CONFLICT race
            conn.execute(delete(Blob).where(Blob.id == blob_id))
        return outcome

    def _ensure_inboxes(self, addresses: Iterable[str]) -> dict[str, int]:
        """INBOX id per normalised address, creating accounts on first delivery (own short commit)."""
        wanted = set(addresses)
        found = {a: self._inbox_cache[a] for a in wanted if a in self._inbox_cache}
        unknown = wanted - found.keys()
        if unknown:
            with self._engine.connect() as conn:
                found.update(self._inbox_ids(conn, unknown))
        missing = sorted(wanted - found.keys())  # sorted: same lock order in concurrent creations
        if missing:
            with self._writer.begin() as conn:
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
        now = _now()
        conn.execute(
            self._insert(Account).on_conflict_do_nothing(index_elements=["address"]),
            [{"address": a, "created_at": now} for a in addresses],
        )
        account_ids = conn.scalars(select(Account.id).where(Account.address.in_(addresses))).all()
        conn.execute(
            self._insert(Mailbox).on_conflict_do_nothing(index_elements=["account_id", "name"]),
            [
                {
                    "account_id": i,
                    "name": INBOX,
                    "uidvalidity": _new_uidvalidity(),
                    "uidnext": 1,
                    "highestmodseq": 1,
                }
                for i in account_ids
            ],
        )

    def _lock_mailboxes(self, conn: Connection, mailbox_ids: list[int]) -> None:
        """Lock every target mailbox row up front, in id order, so group commits cannot deadlock.

        Holding the lock also makes the duplicate check below race-free: any other writer to the same
        mailbox must take this lock before allocating a UID. (SQLite: BEGIN IMMEDIATE already did.)
        """
        if mailbox_ids and self._dialect != "sqlite":
            conn.execute(
                select(Mailbox.id).where(Mailbox.id.in_(mailbox_ids)).order_by(Mailbox.id).with_for_update()
            ).all()

    def _is_duplicate(self, conn: Connection, mailbox_id: int, message: NewMessage) -> bool:
        key = _dedup_key(message.message_id)
        if key is None:
            return False
        found = conn.scalar(self._statements.find_duplicate, {"mailbox_id": mailbox_id, "message_id": key})
        return found is not None

    def _insert_blob(self, conn: Connection, blob: BlobFile) -> int:
        return conn.execute(
            self._statements.insert_blob,
            {"key": blob.key, "size": blob.size, "sha256": blob.sha256, "created_at": _now()},
        ).scalar_one()

    def _insert_message(
        self, conn: Connection, mailbox_id: int, message: NewMessage, blob_id: int, *, flags: str = "",
        dedup: bool = True,
    ) -> DeliveryOutcome:
        """One message row; ``dedup=False`` for copies the Message-ID must not deduplicate (a Sent copy)."""
        uid, modseq = self._allocate_uid(conn, mailbox_id)
        values = {
            "mailbox_id": mailbox_id,
            "uid": uid,
            "modseq": modseq,
            "flags": flags,
            "internaldate": message.received_at,
            "size": len(message.raw),
            "blob_id": blob_id,
            "message_id": _dedup_key(message.message_id),
            "dedup_key": _dedup_key(message.message_id) if dedup else None,
            "from_addr": message.from_addr,
            "subject": message.subject,
            "authentication_results": message.authentication_results,
            "received_at": message.received_at,
        }
        inserted = conn.execute(self._statements.insert_message, values).scalar_one_or_none()
        return DeliveryOutcome.STORED if inserted is not None else DeliveryOutcome.DUPLICATE

    def _allocate_uid(self, conn: Connection, mailbox_id: int) -> tuple[int, int]:
        """Next UID and MODSEQ of a mailbox, by a single UPDATE (row lock on PostgreSQL)."""
        row = conn.execute(self._statements.allocate_uid, {"mailbox_id": mailbox_id}).one()
        return row.uidnext - 1, row.highestmodseq

    def _insert(self, model: type[Any]) -> Any:
        """INSERT with ON CONFLICT support, for the engine in use."""
        dialect = postgresql if self._dialect == "postgresql" else sqlite
        return dialect.insert(model)

    def _write_blobs(self, contents: list[bytes | None]) -> list[BlobFile | None]:
        """Write (and fsync) one blob per message that has recipients, concurrently; all or none."""
        futures = [None if raw is None else self._blob_writers.submit(self.blobs.write, raw) for raw in contents]
        wait([f for f in futures if f is not None])
        failed = [f.exception() for f in futures if f is not None and f.exception() is not None]
        if failed:
            self._remove_blobs(f.result() for f in futures if f is not None and f.exception() is None)
            raise failed[0]
        return [None if f is None else f.result() for f in futures]

    def _remove_blobs(self, blobs: Iterable[BlobFile | None]) -> None:
        for blob in blobs:
            if blob is not None:
                self.blobs.remove(blob.key)

    # -- reading -----------------------------------------------------------------------------

    def list_messages(self, address: str, mailbox: str = INBOX) -> list[StoredMessage]:
        """Messages of one mailbox ordered by UID; an unknown address or mailbox has none."""
        query = (
            select(Message.__table__)
            .join(Mailbox, Message.mailbox_id == Mailbox.id)
            .join(Account, Mailbox.account_id == Account.id)
            .where(Account.address == normalize_address(address), Mailbox.name == mailbox)
            .order_by(Message.uid)
        )
        with self._engine.connect() as conn:
            return [_stored_message(row) for row in conn.execute(query)]

    def read_message(self, address: str, uid: int, mailbox: str = INBOX) -> bytes:
        """The exact bytes stored for that message."""
        query = (
            select(Blob.key)
            .join(Message, Message.blob_id == Blob.id)
            .join(Mailbox, Message.mailbox_id == Mailbox.id)
            .join(Account, Mailbox.account_id == Account.id)
            .where(Account.address == normalize_address(address), Mailbox.name == mailbox, Message.uid == uid)
        )
        with self._engine.connect() as conn:
            key = conn.scalar(query)
        if key is None:
            raise MessageNotFoundError(f"no message UID {uid} in {mailbox} of that address")
        return self.blobs.read(key)

    # -- maintenance -------------------------------------------------------------------------

    def collect_orphan_blobs(self, min_age: timedelta = ORPHAN_MIN_AGE) -> int:
        """Remove blob files that have no blob row (crash before commit); returns how many.

        A blob row stays as long as a message row or a queued outbound message points at it (see
        blob_refs.py), so the files of queued messages are never collected here.

        Only files older than `min_age` are considered, so a delivery between its blob write and its
        commit is never touched.
        """
        removed = 0
        for batch in _batched(self.blobs.keys_older_than(min_age.total_seconds()), 500):
            with self._engine.connect() as conn:
                known = set(conn.scalars(select(Blob.key).where(Blob.key.in_(batch))))
            for key in batch:
                if key not in known:
                    self.blobs.remove(key)
                    removed += 1
        return removed


class _DeliveryStatements:
    """The statements of the delivery hot path, built once: SQLAlchemy then skips rebuilding and
    re-keying them for every message (a third of the store's CPU time per message otherwise)."""

    def __init__(self, insert_message: Any) -> None:
        self.find_duplicate = (
            select(Message.id)
            .where(Message.mailbox_id == bindparam("mailbox_id"), Message.dedup_key == bindparam("message_id"))
            .limit(1)
        )
        self.insert_blob = insert(Blob).returning(Blob.id)
        self.allocate_uid = (
            update(Mailbox)
            .where(Mailbox.id == bindparam("mailbox_id"))
            .values(uidnext=Mailbox.uidnext + 1, highestmodseq=Mailbox.highestmodseq + 1)
            .returning(Mailbox.uidnext, Mailbox.highestmodseq)
        )
        # Belt and braces: a writer that skipped the mailbox lock still cannot create a duplicate.
        self.insert_message = insert_message.on_conflict_do_nothing(
            index_elements=["mailbox_id", "dedup_key"], index_where=Message.dedup_key.is_not(None)
        ).returning(Message.id)


def _any_stored(outcome: dict[str, DeliveryOutcome]) -> bool:
    return DeliveryOutcome.STORED in outcome.values()


def _new_uidvalidity() -> int:
    """Seconds since the epoch: grows across re-creations and fits IMAP's 32-bit range until 2106."""
    return int(time.time())


def _stored_message(row: Any) -> StoredMessage:
    return StoredMessage(
        uid=row.uid,
        message_id=row.message_id,
        from_addr=row.from_addr,
        subject=row.subject,
        size=row.size,
        received_at=row.received_at,
        authentication_results=row.authentication_results,
        internaldate=row.internaldate,
        modseq=row.modseq,
        flags=frozenset(row.flags.split()),
    )


def _batched(keys: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for key in keys:
        batch.append(key)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
