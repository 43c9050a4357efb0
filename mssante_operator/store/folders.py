"""IMAP folders of an account: create, rename, delete, subscribe; and the messages in them: flags,
APPEND, COPY/MOVE, EXPUNGE, \\Recent claims, change polling for IDLE and NOOP.

Every change to a folder's messages goes through the write unit (write_unit.py): it locks the folder
row first, so changes to one folder are serialised on PostgreSQL as on SQLite; each gets a new MODSEQ
(CONDSTORE), and a session that polls (uidnext, highestmodseq) sees that something changed.
Message files are shared by copies; a file is removed once no row points at it, after the commit.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, update

from mssante_base.storage.compiled import Compiled, CompiledIn, Reader, Row

from .database import INBOX, Database
from .folder_index import FolderIndex, FolderIndexes
from .models import Account, Blob, ExpungedMessage, Mailbox, Message, Subscription
from .write_unit import FolderError, FolderExists, NewMessage, NoSuchFolder, normalize_address

DELIMITER = "/"
# Created with every account (RFC 6154 SPECIAL-USE): clients file sent mail, drafts and trash there.
SPECIAL_FOLDERS = (("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"), ("Junk", "\\Junk"),
                   ("Archive", "\\Archive"))
SPECIAL_USES = frozenset(use for _, use in SPECIAL_FOLDERS) | {"\\All", "\\Flagged"}
MAX_NAME_LENGTH = 255


class FlagMode(enum.Enum):
    REPLACE = "FLAGS"
    ADD = "+FLAGS"
    REMOVE = "-FLAGS"


@dataclass(frozen=True)
class Folder:
    id: int
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    special_use: str | None


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What a session keeps per message: enough for FLAGS, UID, MODSEQ, INTERNALDATE, RFC822.SIZE."""

    uid: int
    modseq: int
    flags: frozenset[str]
    internaldate: datetime
    size: int
    blob_key: str
    saved_at: datetime | None = None  # when it entered this folder (SAVEDATE): read only when asked (with_saved_dates)


@dataclass(frozen=True)
class FolderChanges:
    """A folder's counters and, when asked or when they moved, what changed since a MODSEQ."""

    uidnext: int
    highestmodseq: int
    changed: list[MessageMeta] | None = None  # None: nothing moved (the counters are the session's)
    count: int = 0


@dataclass(frozen=True)
class FolderStatus:
    messages: int
    recent: int  # not yet claimed as \Recent by any session
    unseen: int
    uidnext: int
    uidvalidity: int
    highestmodseq: int
    size: int


def canonical_name(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 5.1), also as the parent in ``inbox/child``; a trailing
    delimiter names the same folder."""
    name = name.rstrip(DELIMITER) if name != DELIMITER else name
    head, sep, rest = name.partition(DELIMITER)
    return INBOX + sep + rest if head.upper() == INBOX else name


def check_name(name: str) -> str:
    """The canonical name, or FolderError for a name no folder may have."""
    name = canonical_name(name)
    parts = name.split(DELIMITER)
    if not name or any(part == "" for part in parts) or len(name.encode("utf-8")) > MAX_NAME_LENGTH:
        raise FolderError("invalid mailbox name")
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or "*" in name or "%" in name:
        raise FolderError("mailbox names may not hold control characters, * or %")
    return name


def flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


def changed_flags(current: set[str], mode: FlagMode, wanted: Iterable[str]) -> set[str]:
    """A message's flags after a STORE. Flags are atoms, compared without regard to case (RFC 3501
    9 note 1, as Dovecot and Cyrus do): ``+FLAGS (FOO)`` on a message with ``foo`` changes nothing,
    ``-FLAGS (FOO)`` removes it; a message never holds one keyword twice in two spellings."""
    held = {flag.lower() for flag in current}
    if mode is FlagMode.REMOVE:
        gone = {flag.lower() for flag in wanted}
        return {flag for flag in current if flag.lower() not in gone}
    result = set(current) if mode is FlagMode.ADD else set()
    if mode is FlagMode.REPLACE:
        held = set()
    for flag in wanted:
        if flag.lower() not in held:
            held.add(flag.lower())
            result.add(flag)
    return result


def _runs(uids: Sequence[int], dense: int = 4, in_list: int = 500) -> Iterator[tuple[int, int, list[int]]]:
    """Ascending ``uids`` as queries: (low, high, []) for a UID range when the UIDs are dense (the range
    spans at most ``dense`` times as many UIDs as wanted), else (0, 0, uids) IN lists of ``in_list``."""
    if uids[-1] - uids[0] < dense * len(uids):
        yield uids[0], uids[-1], []
        return
    for start in range(0, len(uids), in_list):
        chunk = uids[start : start + in_list]
        if chunk[-1] - chunk[0] < dense * len(chunk):
            yield chunk[0], chunk[-1], []
        else:
            yield 0, 0, list(chunk)


@functools.cache
def _zone(offset_minutes: int) -> timezone:
    return timezone(timedelta(minutes=offset_minutes))


def _meta(row: Row) -> MessageMeta:
    """A row of _META_COLUMNS; INTERNALDATE in the zone it was given in (APPEND's date-time), UTC otherwise."""
    uid, modseq, flags, internaldate, offset, size, key = row
    if offset:
        internaldate = internaldate.astimezone(_zone(offset))
    return MessageMeta(uid, modseq, frozenset(flags.split()), internaldate, size, key)


def _by_uid(reader: Reader, folder_id: int, uids: Sequence[int], listed: CompiledIn, ranged: Compiled) -> Iterator[Row]:
    """The rows of ``listed`` (``uid IN`` a list) or ``ranged`` (``uid`` from ``low`` to ``high``) for these ascending
    UIDs, run by run (see _runs); a range may hold rows of UIDs not asked for."""
    for low, high, scattered in _runs(uids, in_list=listed.widest):
        yield from (listed.rows(reader, scattered, folder=folder_id) if scattered else
                    ranged.rows(reader, folder=folder_id, low=low, high=high))


def _named(reader: Reader, address: str, name: str) -> Folder | None:
    """The folder ``name`` (canonical) of the account ``address``; None when either does not exist."""
    row = _FOLDER_NAMED.first(reader, address=normalize_address(address), name=name)
    return _folder(row) if row is not None else None


def _folder(row: Row) -> Folder:
    """A row of _FOLDER_COLUMNS."""
    return Folder(*row)


_FOLDER_COLUMNS = (Mailbox.id, Mailbox.name, Mailbox.uidvalidity, Mailbox.uidnext, Mailbox.highestmodseq,
                   Mailbox.special_use)
_META_COLUMNS = (Message.uid, Message.modseq, Message.flags, Message.internaldate, Message.internaldate_offset,
                 Message.size, Blob.key)

# The reads an IMAP session makes at nearly every command, compiled once (mssante_base/storage/compiled.py).
_FOLDER = bindparam("folder")
_SINCE = bindparam("since")
_COUNTERS = Compiled(select(Mailbox.uidnext, Mailbox.highestmodseq).where(Mailbox.id == _FOLDER))
_FOLDER_ROW = Compiled(select(*_FOLDER_COLUMNS).where(Mailbox.id == _FOLDER))
_RECENT_UID = Compiled(select(Mailbox.recent_uid).where(Mailbox.id == _FOLDER))
_METAS = select(*_META_COLUMNS).join(Blob, Message.blob_id == Blob.id)
_METAS_CHANGED = Compiled(_METAS.where(Message.mailbox_id == _FOLDER, Message.modseq > _SINCE).order_by(Message.uid))
_METAS_RANGE = Compiled(_METAS.where(Message.mailbox_id == _FOLDER, Message.uid >= bindparam("low"),
                                     Message.uid <= bindparam("high")))
_METAS_IN = CompiledIn(lambda uids: _METAS.where(Message.mailbox_id == _FOLDER, Message.uid.in_(uids)))
_MESSAGE_COUNT = Compiled(select(func.count(Message.id)).where(Message.mailbox_id == _FOLDER))
_FLAGS_ALL = Compiled(select(Message.uid, Message.flags).where(Message.mailbox_id == _FOLDER).order_by(Message.uid))
_FLAGS_CHANGED = Compiled(select(Message.uid, Message.flags).where(Message.mailbox_id == _FOLDER,
                                                                   Message.modseq > _SINCE).order_by(Message.uid))
_EXPUNGED_SINCE = Compiled(select(ExpungedMessage.uid).where(ExpungedMessage.mailbox_id == _FOLDER,
                                                             ExpungedMessage.modseq > _SINCE))
_FOLDER_NAMED = Compiled(select(*_FOLDER_COLUMNS).join(Account, Mailbox.account_id == Account.id).where(
    Account.address == bindparam("address"), Mailbox.name == bindparam("name")))
_FOLDERS_OF = Compiled(select(*_FOLDER_COLUMNS).join(Account, Mailbox.account_id == Account.id)
                       .where(Account.address == bindparam("address")).order_by(Mailbox.name))
_FLAGS_OF = CompiledIn(lambda uids: select(Message.id, Message.uid, Message.modseq, Message.flags).where(
    Message.mailbox_id == _FOLDER, Message.uid.in_(uids)))
_SET_FLAGS = Compiled(update(Message).where(Message.id == bindparam("message"))
                      .values(flags=bindparam("new_flags"), modseq=bindparam("new_modseq")))
_METAS_OF = CompiledIn(lambda ids: _METAS.where(Message.id.in_(ids)))
_SAVED_RANGE = Compiled(select(Message.uid, Message.saved_at).where(
    Message.mailbox_id == _FOLDER, Message.uid >= bindparam("low"), Message.uid <= bindparam("high")))
_SAVED_IN = CompiledIn(lambda uids: select(Message.uid, Message.saved_at).where(Message.mailbox_id == _FOLDER,
                                                                                 Message.uid.in_(uids)))
_FOLDER_SIZE = Compiled(select(func.coalesce(func.sum(Message.size), 0)).where(Message.mailbox_id == _FOLDER))


class Folders:
    """Folder and message operations of the store (synchronous: sessions call them from threads)."""

    def __init__(self, store: Database) -> None:
        self._store = store
        self._indexes = FolderIndexes()  # shared by every session of the process

    # -- folders -----------------------------------------------------------------------------

    def ensure_account(self, address: str) -> None:
        """The account, its INBOX and its special-use folders (idempotent; run at each login).

        A read answers the usual case (all there) without taking the write lock at every login."""
        with self._store.reading() as conn:
            if self._missing_default_folders(conn, self._store.account_id(conn, address)) == []:
                return
        with self._store.writing() as conn:
            account_id = self._store.account_id(conn, address, create=True)
            assert account_id is not None
            for name, use in self._missing_default_folders(conn, account_id) or ():
                if self._get(conn, address, name) is None:
                    self._insert_folder(conn, account_id, name, use)
                else:  # a plain folder of that name (made by the user) becomes the special one
                    conn.execute(update(Mailbox).where(Mailbox.account_id == account_id, Mailbox.name == name,
                                                       Mailbox.special_use.is_(None)).values(special_use=use))

    @staticmethod
    def _missing_default_folders(conn: Connection, account_id: int | None) -> list[tuple[str, str | None]] | None:
        """The default folders an account lacks; None when the account itself does not exist.

        A special-use folder counts as there whatever its name: a user who renamed Sent to
        "Envoyés" keeps it, and no second Sent appears at the next login."""
        if account_id is None:
            return None
        rows = conn.execute(select(Mailbox.name, Mailbox.special_use).where(Mailbox.account_id == account_id)).all()
        names, uses = {row.name for row in rows}, {row.special_use for row in rows}
        missing: list[tuple[str, str | None]] = [] if INBOX in names else [(INBOX, None)]
        return missing + [(name, use) for name, use in SPECIAL_FOLDERS if use not in uses]

    def _insert_folder(self, conn: Connection, account_id: int, name: str, special_use: str | None) -> None:
        conn.execute(insert(Mailbox).values(
            account_id=account_id, name=name, uidvalidity=self._store.next_uidvalidity(conn, account_id), uidnext=1,
            highestmodseq=1, special_use=special_use, recent_uid=1,
        ))

    def list(self, address: str) -> list[Folder]:
        with self._store.reader() as reader:
            return [_folder(row) for row in _FOLDERS_OF.rows(reader, address=normalize_address(address))]

    def get(self, address: str, name: str) -> Folder | None:
        with self._store.reader() as reader:
            return _named(reader, address, canonical_name(name))

    def get_by_id(self, folder_id: int) -> Folder | None:
        with self._store.reader() as reader:
            row = _FOLDER_ROW.first(reader, folder=folder_id)
        return _folder(row) if row is not None else None

    @staticmethod
    def _get(conn: Connection, address: str, name: str) -> Folder | None:
        return _named(Reader.on(conn), address, name)

    def create(self, address: str, name: str, special_use: str | None = None) -> Folder:
        """Create a folder and any missing parent (RFC 3501 6.3.3: superior names SHOULD be created)."""
        name = check_name(name)
        if special_use is not None and special_use not in SPECIAL_USES:
            raise FolderError(f"unknown special use {special_use}")
        with self._store.writing() as conn:
            account_id = self._store.account_id(conn, address, create=True)
            names = set(conn.scalars(select(Mailbox.name).where(Mailbox.account_id == account_id)))
            if name in names:
                raise FolderExists("mailbox already exists")
            if special_use is not None and conn.scalar(select(Mailbox.id).where(
                    Mailbox.account_id == account_id, Mailbox.special_use == special_use)) is not None:
                raise FolderError(f"another mailbox already has the {special_use} use")
            parts = name.split(DELIMITER)
            for depth in range(1, len(parts)):
                parent = DELIMITER.join(parts[:depth])
                if parent not in names and parent != INBOX:
                    self._insert_folder(conn, account_id, parent, None)
            self._insert_folder(conn, account_id, name, special_use)
            folder = self._get(conn, address, name)
        assert folder is not None
        return folder

    def delete(self, address: str, name: str) -> None:
        """Delete a folder and its messages; its sub-folders stay (RFC 3501 6.3.4)."""
        name = canonical_name(name)
        if name == INBOX:
            raise FolderError("INBOX cannot be deleted")
        with self._store.transaction() as tx:
            conn = tx.conn
            folder = self._get(conn, address, name)
            if folder is None:
                raise NoSuchFolder("no such mailbox")
            tx.lock_folders([folder.id])
            blob_ids = set(conn.scalars(select(Message.blob_id).where(Message.mailbox_id == folder.id)))
            conn.execute(delete(Message).where(Message.mailbox_id == folder.id))
            conn.execute(delete(Mailbox).where(Mailbox.id == folder.id))
            keys = tx.drop_unreferenced_blobs(blob_ids)
        self._store.remove_files(keys)

    def rename(self, address: str, old: str, new: str) -> None:
        """Rename a folder with its sub-folders; renaming INBOX moves its messages to a new folder."""
        old, new = canonical_name(old), check_name(new)
        with self._store.transaction() as tx:
            conn = tx.conn
            account_id = self._store.account_id(conn, address)
            source = self._get(conn, address, old)
            if account_id is None or source is None:
                raise NoSuchFolder("no such mailbox")
            if new == INBOX or self._get(conn, address, new) is not None:
                raise FolderExists("the new name already exists")
            if new.startswith(old + DELIMITER) and old != INBOX:  # INBOX's inferiors stay where they are
                raise FolderError("a mailbox cannot be moved into itself")
            if old == INBOX:
                tx.lock_folders([source.id])  # before its messages move, as every change to them
                self._insert_folder(conn, account_id, new, None)
                target = self._get(conn, address, new)
                assert target is not None
                conn.execute(update(Mailbox).where(Mailbox.id == target.id).values(
                    uidnext=source.uidnext, highestmodseq=source.highestmodseq))
                tx.log_expunged(source.id, tx.bump_modseq(source.id))  # INBOX's messages leave it
                conn.execute(update(Message).where(Message.mailbox_id == source.id).values(mailbox_id=target.id))
                return
            children = conn.execute(select(Mailbox.id, Mailbox.name).where(
                Mailbox.account_id == account_id, Mailbox.name.startswith(old + DELIMITER, autoescape=True)))
            for child_id, child_name in children.all():
                conn.execute(update(Mailbox).where(Mailbox.id == child_id).values(
                    name=new + child_name[len(old):]))
            conn.execute(update(Mailbox).where(Mailbox.id == source.id).values(name=new))

    def subscribe(self, address: str, name: str) -> None:
        name = canonical_name(name)
        with self._store.writing() as conn:
            account_id = self._store.account_id(conn, address, create=True)
            if conn.scalar(select(Subscription.id).where(Subscription.account_id == account_id,
                                                         Subscription.name == name)) is None:
                conn.execute(insert(Subscription).values(account_id=account_id, name=name))

    def unsubscribe(self, address: str, name: str) -> None:
        name = canonical_name(name)
        with self._store.writing() as conn:
            account_id = self._store.account_id(conn, address)
            if account_id is not None:
                conn.execute(delete(Subscription).where(Subscription.account_id == account_id,
                                                        Subscription.name == name))

    def subscriptions(self, address: str) -> set[str]:
        with self._store.reading() as conn:
            account_id = self._store.account_id(conn, address)
            if account_id is None:
                return set()
            return set(conn.scalars(select(Subscription.name).where(Subscription.account_id == account_id)))

    # -- reading messages --------------------------------------------------------------------

    def messages(self, folder_id: int) -> list[MessageMeta]:
        """Every message of a folder, by UID: a session's view at SELECT."""
        query = (select(*_META_COLUMNS).join(Blob, Message.blob_id == Blob.id)
                 .where(Message.mailbox_id == folder_id).order_by(Message.uid))
        with self._store.reading() as conn:
            return [_meta(row) for row in conn.execute(query)]

    def uids(self, folder_id: int) -> list[int]:
        """Every UID of a folder, ascending (from the folder's index, see :meth:`index`); [] once it is gone."""
        found = self.index(folder_id)
        return found[1].uids.tolist() if found is not None else []

    def index(self, folder_id: int) -> tuple[Folder, FolderIndex] | None:
        """The folder and its UIDs, unseen UIDs and keywords (SELECT's view, FLAGS and UNSEEN), from this
        process's index brought up to date by two range reads (folder_index.py); None once it is gone.

        The folder's counters are read first: a message arriving meanwhile is then in the index and
        above its HIGHESTMODSEQ, never below it where the next refresh would not look."""
        with self._store.reader() as reader:
            row = _FOLDER_ROW.first(reader, folder=folder_id)
            if row is None:
                self._indexes.drop(folder_id)
                return None
            folder = _folder(row)
            counters = (folder.uidvalidity, folder.uidnext, folder.highestmodseq)
            cached = self._indexes.get(folder_id)
            if cached is not None and (cached.uidvalidity, cached.uidnext, cached.highestmodseq) == counters:
                return folder, cached
            if cached is None or cached.uidvalidity != folder.uidvalidity or cached.uidnext > folder.uidnext \
                    or cached.highestmodseq > folder.highestmodseq:  # another folder now has this id
                entry = FolderIndex.build(counters, _FLAGS_ALL.rows(reader, folder=folder_id))
            else:
                since = cached.highestmodseq
                changed = _FLAGS_CHANGED.rows(reader, folder=folder_id, since=since)
                expunged = [uid for uid, in _EXPUNGED_SINCE.rows(reader, folder=folder_id, since=since)]
                entry = cached.updated(counters, changed, expunged)
        self._indexes.put(folder_id, entry)
        return folder, entry

    def metas(self, folder_id: int, uids: Sequence[int]) -> dict[int, MessageMeta]:
        """The metas of these messages (ascending UIDs), by UID; an expunged one is simply absent.

        Dense runs are read as UID ranges, scattered UIDs in IN lists, so a FETCH 1:* costs one scan
        and a FETCH of a few messages in a big folder costs a few index lookups."""
        found: dict[int, MessageMeta] = {}
        if not uids:
            return found
        wanted = set(uids)
        with self._store.reader() as reader:
            for row in _by_uid(reader, folder_id, uids, _METAS_IN, _METAS_RANGE):
                if row[0] in wanted:
                    found[row[0]] = _meta(row)
        return found

    def with_saved_dates(self, folder_id: int, metas: dict[int, MessageMeta]) -> dict[int, MessageMeta]:
        """``metas`` with their save dates (SAVEDATE, RFC 8514): a column only FETCH SAVEDATE and SEARCH SAVED*
        need, kept out of every other read (a third more time for FETCH 1:*)."""
        uids = sorted(metas)
        if not uids:
            return metas
        with self._store.reader() as reader:
            saved = dict(_by_uid(reader, folder_id, uids, _SAVED_IN, _SAVED_RANGE))
        return {uid: dataclasses.replace(meta, saved_at=saved.get(uid)) for uid, meta in metas.items()}

    def counters_many(self, folder_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
        """(uidnext, highestmodseq) of several folders in one query (the change poller's question)."""
        ids = list(folder_ids)
        if not ids:
            return {}
        with self._store.reading() as conn:
            rows = conn.execute(select(Mailbox.id, Mailbox.uidnext, Mailbox.highestmodseq)
                                .where(Mailbox.id.in_(ids)))
            return {row.id: (row.uidnext, row.highestmodseq) for row in rows}

    def changes(self, folder_id: int, seen: tuple[int, int], *, force: bool = False) -> FolderChanges | None:
        """What an IMAP session needs to bring its view up to date, in one read: the folder's counters and,
        when they moved from ``seen`` (uidnext, highestmodseq) or ``force``, the messages changed since the
        session's HIGHESTMODSEQ and the message count. None once the folder is gone."""
        with self._store.reader() as reader:
            row = _COUNTERS.first(reader, folder=folder_id)
            if row is None:
                return None
            counters = (row[0], row[1])
            if counters == seen and not force:
                return FolderChanges(*counters)
            changed = [_meta(meta) for meta in _METAS_CHANGED.rows(reader, folder=folder_id, since=seen[1])]
            count = int(_MESSAGE_COUNT.scalar(reader, folder=folder_id) or 0)
        return FolderChanges(*counters, changed=changed, count=count)

    def counters(self, folder_id: int) -> tuple[int, int] | None:
        """(uidnext, highestmodseq): cheap enough to poll; None once the folder is gone."""
        with self._store.reader() as reader:
            row = _COUNTERS.first(reader, folder=folder_id)
        return (row[0], row[1]) if row is not None else None

    def status(self, folder: Folder, *, size: bool = False) -> FolderStatus | None:
        """STATUS of a folder, from the process's index (see :meth:`index`); its size in bytes (a sum over
        its messages) only when asked. None once the folder is gone."""
        found = self.index(folder.id)
        if found is None:
            return None
        current, entry = found
        with self._store.reader() as reader:
            first_recent = int(_RECENT_UID.scalar(reader, folder=folder.id) or current.uidnext)
            total = int(_FOLDER_SIZE.scalar(reader, folder=folder.id) or 0) if size else 0
        recent = len(entry.uids) - bisect.bisect_left(entry.uids, first_recent)
        return FolderStatus(messages=len(entry.uids), recent=recent, unseen=len(entry.unseen),
                            uidnext=current.uidnext, uidvalidity=current.uidvalidity,
                            highestmodseq=current.highestmodseq, size=total)

    def read(self, blob_key: str) -> bytes:
        return self._store.blobs.read(blob_key)

    # -- changing messages -------------------------------------------------------------------

    def claim_recent(self, folder_id: int, to: int, *, peek: bool = False) -> int:
        """Take the \\Recent messages below ``to`` for this session: returns ``first``, and the UIDs in
        [first, to) are \\Recent for this session and no other (RFC 3501 2.3.2).

        ``to`` is the UIDNEXT of what the session has read (its view holds every message below it),
        so a message appended meanwhile is neither claimed unseen (nobody would see it \\Recent) nor
        seen unclaimed (two sessions would). ``peek``: EXAMINE reports \\Recent without taking it."""
        with self._store.reader() as reader:  # the usual case, nothing new: no write lock taken
            first = int(_RECENT_UID.scalar(reader, folder=folder_id))
            if peek or first >= to:
                return first
        with self._store.transaction(durable=False) as tx:  # lost in a power cut: recent again, harmless
            conn = tx.conn
            tx.lock_folders([folder_id])
            first = int(conn.execute(select(Mailbox.recent_uid).where(Mailbox.id == folder_id)).scalar_one())
            if first < to:
                conn.execute(update(Mailbox).where(Mailbox.id == folder_id).values(recent_uid=to))
        return first

    def store_flags(
        self, folder_id: int, uids: Sequence[int], mode: FlagMode, flags: Iterable[str],
        unchangedsince: int | None = None,
    ) -> tuple[list[MessageMeta], list[int]]:
        """Change flags atomically; returns (messages changed, with their new MODSEQ) and the UIDs that
        failed an UNCHANGEDSINCE test (RFC 7162 3.2). Messages whose flags do not change keep their MODSEQ."""
        wanted = list(flags)
        changed_rows: list[tuple[int, str]] = []
        failed: list[int] = []
        with self._store.transaction(durable=False) as tx:  # flags, as Dovecot: not fsync'd (lazy_commit)
            tx.lock_folders([folder_id])
            reader = tx.reader
            rows = _FLAGS_OF.rows(reader, uids, folder=folder_id)
            for message_id, uid, modseq, text in rows:
                if unchangedsince is not None and modseq > unchangedsince:
                    failed.append(uid)
                    continue
                current = set(text.split())
                new = changed_flags(current, mode, wanted)
                if new != current:
                    changed_rows.append((message_id, flags_text(new)))
            if not changed_rows:  # RFC 7162 3.2: a STORE that changes nothing leaves every MODSEQ alone
                return [], sorted(failed)
            modseq = tx.bump_modseq(folder_id)
            for message_id, text in changed_rows:
                _SET_FLAGS.run(reader, message=message_id, new_flags=text, new_modseq=modseq)
            ids = [message_id for message_id, _ in changed_rows]
            changed = sorted((_meta(row) for row in _METAS_OF.rows(reader, ids)), key=lambda meta: meta.uid)
        return changed, sorted(failed)

    def append(self, address: str, name: str, message: NewMessage, flags: Iterable[str],
               internaldate: datetime) -> tuple[int, int]:
        """Store a message into a folder (IMAP APPEND): durable when this returns; (UIDVALIDITY, UID)."""
        uidvalidity, (uid,) = self.append_many(address, name, [(message, flags, internaldate)])
        return uidvalidity, uid

    def append_many(self, address: str, name: str,
                    messages: Sequence[tuple[NewMessage, Iterable[str], datetime]]) -> tuple[int, list[int]]:
        """Store messages into a folder, all or none (MULTIAPPEND, RFC 3502), in one transaction: durable when
        this returns; (UIDVALIDITY, their UIDs in order)."""
        blobs = self._store.write_blobs([message.raw for message, _, _ in messages])
        try:
            with self._store.transaction() as tx:
                folder = self._get(tx.conn, address, canonical_name(name))
                if folder is None:
                    raise NoSuchFolder("no such mailbox")
                tx.lock_folders([folder.id])
                uids = []
                for (message, flags, internaldate), blob in zip(messages, blobs, strict=True):
                    assert blob is not None  # every message has bytes
                    uids.append(tx.append(folder.id, message, tx.insert_blob(blob), internaldate=internaldate,
                                          flags=flags_text(changed_flags(set(), FlagMode.REPLACE, flags))))
        except BaseException:
            self._store.remove_blobs(blobs)
            raise
        return folder.uidvalidity, uids

    def copy(self, folder_id: int, uids: Sequence[int], target_id: int, *, move: bool = False
             ) -> tuple[int, list[tuple[int, int]]]:
        """COPY (or MOVE) messages, in UID order; returns the target's UIDVALIDITY and (old, new) UIDs.

        A MOVE into the folder the messages are in is allowed (RFC 6851 does not forbid it): they get
        new UIDs, as with COPY then EXPUNGE."""
        with self._store.transaction() as tx:
            tx.lock_folders([folder_id, target_id])
            rows = tx.conn.execute(select(Message.__table__).where(
                Message.mailbox_id == folder_id, Message.uid.in_(list(uids))).order_by(Message.uid)).all()
            target = tx.conn.execute(select(Mailbox.uidvalidity).where(Mailbox.id == target_id)).one_or_none()
            if target is None:
                raise NoSuchFolder("no such mailbox")
            pairs = list(zip([row.uid for row in rows], tx.copy(rows, target_id), strict=True))
            if move and rows:
                tx.remove_messages(folder_id, rows, ())
        return int(target.uidvalidity), pairs

    def expunge(self, folder_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Remove the messages flagged \\Deleted (only those in ``uids`` if given: UID EXPUNGE)."""
        with self._store.transaction() as tx:
            tx.lock_folders([folder_id])
            condition = and_(Message.mailbox_id == folder_id, Message.flags.contains("\\Deleted", autoescape=True))
            if uids is not None:
                condition = and_(condition, Message.uid.in_(list(uids)))
            rows = tx.conn.execute(select(Message.id, Message.uid, Message.flags, Message.blob_id).where(condition))
            doomed = [row for row in rows.all() if "\\Deleted" in row.flags.split()]
            if not doomed:
                return []
            keys = tx.remove_messages(folder_id, doomed, {row.blob_id for row in doomed})
        self._store.remove_files(keys)
        return sorted(row.uid for row in doomed)

    # -- helpers -----------------------------------------------------------------------------

    def _metas(self, conn: Connection, message_ids: list[int]) -> list[MessageMeta]:
        if not message_ids:
            return []
        query = (select(*_META_COLUMNS).join(Blob, Message.blob_id == Blob.id)
                 .where(Message.id.in_(message_ids)).order_by(Message.uid))
        return [_meta(row) for row in conn.execute(query)]


__all__ = ["DELIMITER", "INBOX", "SPECIAL_FOLDERS", "FlagMode", "Folder", "FolderError", "FolderExists",
           "FolderStatus", "Folders", "MessageMeta", "NoSuchFolder"]
