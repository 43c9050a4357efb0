"""The Store facade: the only way the rest of the operator reads or writes mail.

Synchronous on purpose (callers run it in threads). Delivery order is what makes the SMTP 250 safe:
blob written and fsync'd first, then one transaction (a write unit) allocates UIDs and inserts the
rows, and only the commit makes the message visible.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, insert, select

from mssante_base.storage.blobs import CLUSTER_MARKER, BlobFile

from .accounts import Accounts
from .conversations import Conversations
from .database import INBOX, Database, now
from .folders import Folders
from .models import Account, Blob, Mailbox, Message, StoreIdentity
from .queue import OutboundQueue
from .write_unit import DeliveryOutcome, NewMessage, WriteUnit, normalize_address

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
ORPHAN_MIN_AGE = timedelta(hours=1)
# Serialises concurrent `migrate()` calls of several nodes sharing one PostgreSQL database.
_MIGRATION_LOCK_ID = 0x6D7373616E7465  # "mssante"


class MessageNotFoundError(LookupError):
    """No message with that UID in that mailbox of that address."""


class BlobStorageMismatch(ValueError):
    """The blob directory is not the storage of this database's cluster: starting would lose mail."""


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


class Store(Database):
    """Mail storage over SQLite (embedded default) or PostgreSQL (shared by several nodes): the database
    (write units, change listeners), delivery, and the folders, the queue, the conversations and the accounts
    over it."""

    def __init__(self, url: str, blob_dir: Path) -> None:
        super().__init__(url, blob_dir)
        self.folders = Folders(self)
        self.queue = OutboundQueue(self)
        self.conversations = Conversations(self)
        self.accounts = Accounts(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the latest revision and bind the blob directory to the database; cheap and
        safe at every start-up. Raises BlobStorageMismatch when the blob directory is another's."""
        from alembic import command  # here, not at the top: alembic is ~11 MB that only migrating needs
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        with self.writer.begin() as conn:
            if self.dialect == "postgresql":
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
        conn.execute(insert(StoreIdentity), {"id": 1, "cluster_id": cluster_id, "created_at": now()})
        log.info("blob storage %s bound to this database (cluster %s)", self.blobs.root, cluster_id)

    def check_blob_storage(self) -> None:
        """Raise BlobStorageMismatch unless the blob directory is this database's (for a node that does not
        migrate: a worker started after its supervisor's migration)."""
        with self.engine.connect() as conn:
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
        inboxes = self.ensure_inboxes(a for group in targets for a in group)
        contents = [m.raw if group else None for (m, _), group in zip(items, targets, strict=True)]
        blobs = self.write_blobs(contents)
        with self.transaction() as tx:
            try:
                tx.lock_folders(inboxes[a] for group in targets for a in group)
                stored = [_deliver_one(tx, message, group, blob, inboxes)
                          for (message, _), group, blob in zip(items, targets, blobs, strict=True)]
            except BaseException:
                self.remove_blobs(blobs)  # nothing was committed: the files are certainly unreferenced
                raise
        # Were COMMIT itself to fail, it may still have happened: files are left to collect_orphan_blobs().
        self.remove_blobs(b for b, outcome in zip(blobs, stored, strict=True) if not _any_stored(outcome))
        return [
            {address: outcome[normalize_address(address)] for address in addresses}
            for (_, addresses), outcome in zip(items, stored, strict=True)
        ]

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
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
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
            with self.engine.connect() as conn:
                known = set(conn.scalars(select(Blob.key).where(Blob.key.in_(batch))))
            for key in batch:
                if key not in known:
                    self.blobs.remove(key)
                    removed += 1
        return removed


def _deliver_one(tx: WriteUnit, message: NewMessage, group: list[str], blob: BlobFile | None,
                 inboxes: dict[str, int]) -> dict[str, DeliveryOutcome]:
    """Rows for one message: its blob row (only if some recipient stores it), then one row per INBOX."""
    outcome: dict[str, DeliveryOutcome] = {}
    blob_id: int | None = None
    for address in group:
        if tx.is_duplicate(inboxes[address], message):
            outcome[address] = DeliveryOutcome.DUPLICATE
            continue
        if blob_id is None:
            assert blob is not None
            blob_id = tx.insert_blob(blob)
        outcome[address] = tx.deliver(inboxes[address], message, blob_id)
    if blob_id is not None and not _any_stored(outcome):  # only after an ON CONFLICT race
        tx.drop_blob(blob_id)
    return outcome


def _any_stored(outcome: dict[str, DeliveryOutcome]) -> bool:
    return DeliveryOutcome.STORED in outcome.values()


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
