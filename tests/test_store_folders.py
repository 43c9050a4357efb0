"""IMAP folders in the store, on SQLite and PostgreSQL: hierarchy, flags and MODSEQ, APPEND, COPY/MOVE,
EXPUNGE, \\Recent claims, and the blob files shared by copies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy

from mssante_base.storage import compiled
from mssante_operator.store import NewMessage, Store
from mssante_operator.store.folders import INBOX, FlagMode, FolderError, FolderExists, NoSuchFolder

ALICE = "alice@hopital.example"
WHEN = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def message(subject: str = "CR", message_id: str | None = "<same@peer.example>") -> NewMessage:
    raw = f"Message-ID: {message_id}\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()
    return NewMessage(raw=raw, message_id=message_id, from_addr="a@b.fr", subject=subject,
                      authentication_results="", received_at=WHEN)


def blob_files(store: Store) -> list[Path]:
    return sorted(p for p in store.blobs.root.glob("??/*") if p.is_file())  # shards: the root holds the marker


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    store = Store(store_url, tmp_path / "blobs")
    store.migrate()
    store.folders.ensure_account(ALICE)
    yield store
    store.close()


def folder_id(store: Store, name: str) -> int:
    folder = store.folders.get(ALICE, name)
    assert folder is not None
    return folder.id


def test_an_account_gets_inbox_and_the_special_use_folders(store: Store) -> None:
    folders = {f.name: f.special_use for f in store.folders.list(ALICE)}
    assert folders == {"INBOX": None, "Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash",
                       "Junk": "\\Junk", "Archive": "\\Archive"}
    store.folders.ensure_account(ALICE)  # idempotent
    assert len(store.folders.list(ALICE)) == 6
    assert store.folders.get(ALICE, "inbox").name == INBOX  # type: ignore[union-attr]


def test_create_makes_parents_and_refuses_duplicates_and_bad_names(store: Store) -> None:
    store.folders.create(ALICE, "Patients/2026/Dupont")
    names = {f.name for f in store.folders.list(ALICE)}
    assert {"Patients", "Patients/2026", "Patients/2026/Dupont"} <= names
    with pytest.raises(FolderExists):
        store.folders.create(ALICE, "Patients/")
    with pytest.raises(FolderExists):
        store.folders.create(ALICE, "inbox")
    for bad in ("", "a//b", "/a", "a*", "a%b", "a\x01"):
        with pytest.raises(FolderError):
            store.folders.create(ALICE, bad)
    with pytest.raises(FolderError, match="Sent"):
        store.folders.create(ALICE, "Envoyés", special_use="\\Sent")


def test_uidvalidity_changes_when_a_folder_is_deleted_and_created_again(store: Store) -> None:
    first = store.folders.create(ALICE, "Temp").uidvalidity
    store.folders.delete(ALICE, "Temp")
    assert store.folders.create(ALICE, "Temp").uidvalidity > first


def test_rename_moves_children_and_renaming_inbox_moves_its_messages(store: Store) -> None:
    store.folders.create(ALICE, "Old/Child")
    store.folders.rename(ALICE, "Old", "New")
    names = {f.name for f in store.folders.list(ALICE)}
    assert "New/Child" in names and "Old" not in names and "Old/Child" not in names
    with pytest.raises(FolderError):
        store.folders.rename(ALICE, "New", "New/Inside")
    store.folders.append(ALICE, INBOX, message(), [], WHEN)
    store.folders.rename(ALICE, "INBOX", "Ancien INBOX")
    assert store.folders.messages(folder_id(store, INBOX)) == []
    assert [m.uid for m in store.folders.messages(folder_id(store, "Ancien INBOX"))] == [1]
    with pytest.raises(NoSuchFolder):
        store.folders.rename(ALICE, "Nowhere", "Somewhere")


def test_inbox_cannot_be_deleted_and_deleting_a_folder_removes_its_files(store: Store) -> None:
    with pytest.raises(FolderError):
        store.folders.delete(ALICE, "INBOX")
    store.folders.create(ALICE, "Temp")
    store.folders.append(ALICE, "Temp", message(), [], WHEN)
    assert len(blob_files(store)) == 1
    store.folders.delete(ALICE, "Temp")
    assert blob_files(store) == []


def test_append_allows_the_same_message_id_twice_and_returns_uids(store: Store) -> None:
    uidvalidity, first = store.folders.append(ALICE, "Drafts", message(), ["\\Draft"], WHEN)
    _, second = store.folders.append(ALICE, "Drafts", message(), ["\\Draft", "\\Seen"], WHEN)
    assert (first, second) == (1, 2) and uidvalidity == store.folders.get(ALICE, "Drafts").uidvalidity  # type: ignore[union-attr]
    metas = store.folders.messages(folder_id(store, "Drafts"))
    assert [m.flags for m in metas] == [{"\\Draft"}, {"\\Draft", "\\Seen"}]
    assert metas[0].internaldate == WHEN
    with pytest.raises(NoSuchFolder):
        store.folders.append(ALICE, "Nowhere", message(), [], WHEN)


def test_flags_change_atomically_with_a_new_modseq(store: Store) -> None:
    box = folder_id(store, INBOX)
    for n in range(3):
        store.folders.append(ALICE, INBOX, message(f"m{n}"), [], WHEN)
    before = store.folders.counters(box)
    changed, failed = store.folders.store_flags(box, [1, 2], FlagMode.ADD, ["\\Seen", "$Label1"])
    assert [m.uid for m in changed] == [1, 2] and failed == []
    assert all(m.flags == {"\\Seen", "$Label1"} for m in changed)
    modseq = changed[0].modseq
    assert modseq > before[1]  # type: ignore[index]
    highest = store.folders.counters(box)[1]  # type: ignore[index]
    unchanged, _ = store.folders.store_flags(box, [1], FlagMode.ADD, ["\\Seen"])
    assert unchanged == []  # no change, no new MODSEQ for the message
    assert store.folders.counters(box)[1] == highest  # type: ignore[index]  # nor for the folder
    changed, _ = store.folders.store_flags(box, [1, 2, 3], FlagMode.REMOVE, ["$Label1"])
    assert [m.uid for m in changed] == [1, 2]
    changed, _ = store.folders.store_flags(box, [3], FlagMode.REPLACE, ["\\Flagged"])
    assert changed[0].flags == {"\\Flagged"}
    found = store.folders.changes(box, (0, modseq))
    assert found is not None and {m.uid for m in found.changed or ()} == {1, 2, 3} and found.count == 3
    assert store.folders.changes(box, (found.uidnext, found.highestmodseq)).changed is None  # nothing moved
    assert store.folders.changes(box, (found.uidnext, found.highestmodseq), force=True).changed == []


def test_unchangedsince_refuses_messages_changed_after_it(store: Store) -> None:
    box = folder_id(store, INBOX)
    store.folders.append(ALICE, INBOX, message("a"), [], WHEN)
    store.folders.append(ALICE, INBOX, message("b"), [], WHEN)
    first, _ = store.folders.store_flags(box, [2], FlagMode.ADD, ["\\Seen"])
    changed, failed = store.folders.store_flags(box, [1, 2], FlagMode.ADD, ["\\Flagged"],
                                                unchangedsince=first[0].modseq - 1)
    assert [m.uid for m in changed] == [1] and failed == [2]


def test_copy_and_move_keep_flags_share_files_and_give_new_uids(store: Store) -> None:
    inbox, archive = folder_id(store, INBOX), folder_id(store, "Archive")
    for n in range(3):
        store.folders.append(ALICE, INBOX, message(f"m{n}"), ["\\Seen"] if n == 0 else [], WHEN)
    uidvalidity, pairs = store.folders.copy(inbox, [1, 3], archive)
    assert pairs == [(1, 1), (3, 2)] and uidvalidity == store.folders.get(ALICE, "Archive").uidvalidity  # type: ignore[union-attr]
    assert len(blob_files(store)) == 3  # copies share the files
    assert store.folders.messages(archive)[0].flags == {"\\Seen"}
    _, moved = store.folders.copy(inbox, [2], archive, move=True)
    assert moved == [(2, 3)]
    assert [m.uid for m in store.folders.messages(inbox)] == [1, 3]
    with pytest.raises(NoSuchFolder):
        store.folders.copy(inbox, [1], 10_000)
    _, same = store.folders.copy(inbox, [1], inbox, move=True)  # into its own folder: a new UID
    assert same == [(1, 4)] and [m.uid for m in store.folders.messages(inbox)] == [3, 4]


def test_internaldate_keeps_the_zone_it_was_given_in(store: Store) -> None:
    box, archive = folder_id(store, INBOX), folder_id(store, "Archive")
    pacific = datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7)))
    store.folders.append(ALICE, INBOX, message("tz"), [], pacific)
    store.folders.copy(box, [1], archive)
    for meta in (store.folders.messages(box)[0], store.folders.messages(archive)[0]):
        assert meta.internaldate == pacific and meta.internaldate.utcoffset() == timedelta(hours=-7)
        assert (meta.internaldate.day, meta.internaldate.hour) == (17, 2)


def test_a_renamed_special_folder_is_not_created_again_at_login(store: Store) -> None:
    store.folders.rename(ALICE, "Sent", "Envoyés")
    store.folders.delete(ALICE, "Junk")
    store.folders.create(ALICE, "Junk")  # a plain folder of that name: it becomes the \Junk folder
    store.folders.ensure_account(ALICE)
    folders = {f.name: f.special_use for f in store.folders.list(ALICE)}
    assert folders["Envoyés"] == "\\Sent" and "Sent" not in folders
    assert folders["Junk"] == "\\Junk"
    store.folders.delete(ALICE, "Trash")
    store.folders.ensure_account(ALICE)  # a deleted special folder comes back
    assert store.folders.get(ALICE, "Trash").special_use == "\\Trash"  # type: ignore[union-attr]


def test_expunge_removes_deleted_messages_and_their_unshared_files(store: Store) -> None:
    inbox, archive = folder_id(store, INBOX), folder_id(store, "Archive")
    for n in range(3):
        store.folders.append(ALICE, INBOX, message(f"m{n}"), [], WHEN)
    store.folders.copy(inbox, [1], archive)
    store.folders.store_flags(inbox, [1, 2, 3], FlagMode.ADD, ["\\Deleted"])
    assert store.folders.expunge(inbox, uids=[2]) == [2]  # UID EXPUNGE
    assert len(blob_files(store)) == 2
    before = store.folders.counters(inbox)
    assert store.folders.expunge(inbox) == [1, 3]
    assert store.folders.counters(inbox)[1] > before[1]  # type: ignore[index]
    assert len(blob_files(store)) == 1  # message 1's file still serves the copy in Archive
    assert store.folders.read(store.folders.messages(archive)[0].blob_key).startswith(b"Message-ID")
    assert store.folders.expunge(inbox) == []


def test_exactly_one_session_claims_recent_messages(store: Store) -> None:
    inbox = folder_id(store, INBOX)
    store.folders.append(ALICE, INBOX, message("a"), [], WHEN)
    store.folders.append(ALICE, INBOX, message("b"), [], WHEN)
    assert store.folders.status(store.folders.get(ALICE, INBOX)).recent == 2  # type: ignore[arg-type]
    assert store.folders.claim_recent(inbox, 3, peek=True) == 1  # EXAMINE: 1 and 2 are \Recent, still unclaimed
    assert store.folders.claim_recent(inbox, 3) == 1  # this session sees UIDs 1 and 2 as \Recent
    assert store.folders.claim_recent(inbox, 3) == 3  # the next one sees none of them
    store.folders.append(ALICE, INBOX, message("c"), [], WHEN)
    # A session that has read up to UID 2 claims nothing of UID 3: it is left for whoever reads it.
    assert store.folders.claim_recent(inbox, 3) == 3
    assert store.folders.status(store.folders.get(ALICE, INBOX)).recent == 1  # type: ignore[arg-type]
    assert store.folders.claim_recent(inbox, 4) == 3
    assert store.folders.claim_recent(inbox, 4) == 4


def test_status_counts(store: Store) -> None:
    box = folder_id(store, INBOX)
    store.folders.append(ALICE, INBOX, message("a"), ["\\Seen"], WHEN)
    store.folders.append(ALICE, INBOX, message("b"), [], WHEN)
    status = store.folders.status(store.folders.get(ALICE, INBOX), size=True)  # type: ignore[arg-type]
    assert (status.messages, status.unseen, status.uidnext) == (2, 1, 3)
    assert status.size == sum(m.size for m in store.folders.messages(box))


def test_subscriptions_may_name_missing_folders(store: Store) -> None:
    store.folders.subscribe(ALICE, "Sent")
    store.folders.subscribe(ALICE, "Ghost")
    store.folders.subscribe(ALICE, "Sent")
    assert store.folders.subscriptions(ALICE) == {"Sent", "Ghost"}
    store.folders.unsubscribe(ALICE, "Ghost")
    assert store.folders.subscriptions(ALICE) == {"Sent"}


def test_smtp_deliveries_still_dedup_but_imap_copies_do_not(store: Store) -> None:
    store.deliver(message(), [ALICE])
    store.deliver(message(), [ALICE])  # a peer retrying: stored once
    inbox = folder_id(store, INBOX)
    assert len(store.folders.messages(inbox)) == 1
    store.folders.copy(inbox, [1], inbox)  # COPY into the same folder: a second copy
    assert len(store.folders.messages(inbox)) == 2


def test_metas_by_uid_ranges_and_lists_first_unseen_keywords_and_count(store: Store) -> None:
    box = folder_id(store, INBOX)
    for n in range(40):
        store.folders.append(ALICE, INBOX, message(f"m{n}"), ["\\Seen"] if n < 5 else ["$Urgent"] if n == 7 else [],
                             WHEN)
    store.folders.store_flags(box, [8], FlagMode.ADD, ["$urgent", "Dossier"])
    dense = store.folders.metas(box, list(range(3, 30)))
    assert sorted(dense) == list(range(3, 30))
    scattered = store.folders.metas(box, [1, 20, 40, 41])  # 41 does not exist: absent, not an error
    assert sorted(scattered) == [1, 20, 40] and scattered[1].flags == {"\\Seen"}
    found = store.folders.index(box)
    assert found is not None and found[1].first_unseen == 6
    assert found[1].keywords == {"$Urgent", "Dossier"}  # $urgent is the same keyword
    assert store.folders.changes(box, (0, 0)).count == 40 and len(store.folders.uids(box)) == 40
    first = store.folders.claim_recent(box, 41)
    assert first == 1 and store.folders.claim_recent(box, 41) == 41  # nothing new: nothing claimed


def _behind_a_store(store: Store, operation: Callable[[], object]) -> object:
    """Run ``operation`` in a thread while a STORE holds the INBOX row, between its folder lock and its
    message update; the STORE changes the INBOX's messages once ``operation`` waits on a lock. Returns what
    ``operation`` returned. PostgreSQL: taking a message before the folder deadlocks here."""
    import threading
    import time

    from sqlalchemy import select, text, update

    from mssante_operator.store.models import Mailbox, Message

    inbox = folder_id(store, INBOX)
    results: list[object] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            results.append(operation())
        except BaseException as exc:  # a deadlock would land here or in the STORE below
            failures.append(exc)

    with store.writing() as conn:  # the STORE, between its folder lock and its message update
        conn.execute(select(Mailbox.id).where(Mailbox.id == inbox).with_for_update()).all()
        worker = threading.Thread(target=run)
        worker.start()
        with store.reading() as watcher:  # the operation is waiting on a lock (an event, not a delay)
            for _ in range(6000):
                waiting = watcher.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                              " AND wait_event_type = 'Lock'"))
                if waiting:
                    break
                watcher.rollback()  # pg_stat_activity is read once per transaction: a new one sees anew
                time.sleep(0.01)
            assert waiting
        conn.execute(update(Message).where(Message.mailbox_id == inbox).values(flags="\\Deleted \\Seen"))
    worker.join(60)
    assert not failures and len(results) == 1
    return results[0]


def test_an_expunge_waits_for_a_store_holding_the_folder_instead_of_deadlocking(store: Store) -> None:
    """PostgreSQL: a STORE holds the folder's row and is about to change a message flagged \\Deleted
    while an EXPUNGE of that message runs. The EXPUNGE must wait for the folder before it touches the
    message; taking the message first and the folder second deadlocked (seen under 20 sessions)."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite's write transactions are exclusive: no row locks to order")
    store.folders.append(ALICE, INBOX, message("a"), ["\\Deleted"], WHEN)
    assert _behind_a_store(store, lambda: store.folders.expunge(folder_id(store, INBOX))) == [1]


def test_renaming_inbox_waits_for_a_store_holding_it_instead_of_deadlocking(store: Store) -> None:
    """PostgreSQL: RENAME INBOX moves the INBOX's messages to a new folder; it must take the INBOX row
    before those messages, as every change to a folder's messages does, or it deadlocks with a STORE."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite's write transactions are exclusive: no row locks to order")
    store.folders.append(ALICE, INBOX, message("a"), [], WHEN)
    _behind_a_store(store, lambda: store.folders.rename(ALICE, INBOX, "Ancien"))
    assert [m.flags for m in store.folders.messages(folder_id(store, "Ancien"))] == [{"\\Deleted", "\\Seen"}]


def test_folder_index_follows_every_writer_of_another_process_without_reading_every_message(
        store_url: str, tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """SELECT's index (UIDs, first unseen, keywords) is read in full once per process; after that, changes made
    by another process (another Store on the same database) are read as two range queries: the messages
    changed since the index's MODSEQ and the expunge log, never the whole folder."""
    box = folder_id(store, INBOX)
    for n in range(30):
        store.folders.append(ALICE, INBOX, message(f"m{n}", None), ["\\Seen"] if n < 3 else [], WHEN)
    found = store.folders.index(box)
    assert found is not None and found[1].uids.tolist() == list(range(1, 31)) and found[1].first_unseen == 4
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(" ".join(statement.split()))

    other = Store(store_url, tmp_path / "blobs")
    try:
        other.folders.store_flags(box, [4, 5], FlagMode.ADD, ["\\Seen", "Dossier"])
        other.folders.store_flags(box, [6, 7], FlagMode.ADD, ["\\Deleted"])
        assert other.folders.expunge(box) == [6, 7]
        other.folders.append(ALICE, INBOX, message("new", None), ["$Urgent"], WHEN)
        archive = other.folders.create(ALICE, "Archive2")
        other.folders.copy(box, [8], archive.id, move=True)
        sqlalchemy.event.listen(store.engine, "before_cursor_execute", record)
        rows = compiled.Compiled.rows
        monkeypatch.setattr(compiled.Compiled, "rows", lambda self, reader, **params: (
            record(None, None, self.sql(reader.dialect)), rows(self, reader, **params))[1])
        found = store.folders.index(box)
        monkeypatch.undo()
        sqlalchemy.event.remove(store.engine, "before_cursor_execute", record)
        assert found is not None
        _, index = found
        expected = [n for n in range(1, 32) if n not in (6, 7, 8)]
        assert index.uids.tolist() == expected == [m.uid for m in store.folders.messages(box)]
        assert index.first_unseen == 9 and index.keywords == {"Dossier", "$Urgent"}
        reads = [s for s in statements if "FROM messages" in s or "FROM expunged_messages" in s]
        assert len(reads) == 2 and all("modseq >" in s for s in reads), statements
        other.folders.rename(ALICE, INBOX, "Ancien")  # INBOX's messages leave it: logged as expunged
        found = store.folders.index(box)
        assert found is not None and found[1].uids.tolist() == [] and found[1].first_unseen is None
        other.folders.delete(ALICE, "Ancien")
        assert store.folders.index(folder_id(store, "Archive2"))[1].uids.tolist() == [1]  # type: ignore[index]
    finally:
        other.close()


def test_folder_index_of_a_folder_created_again_is_read_afresh(store: Store) -> None:
    """A folder deleted and created again may get the same id: its counters tell the index it is new."""
    folder = store.folders.create(ALICE, "Projet")
    store.folders.append(ALICE, "Projet", message("a", None), [], WHEN)
    assert store.folders.index(folder.id)[1].uids.tolist() == [1]  # type: ignore[index]
    store.folders.delete(ALICE, "Projet")
    assert store.folders.index(folder.id) is None
    again = store.folders.create(ALICE, "Projet")
    assert store.folders.index(again.id)[1].uids.tolist() == []  # type: ignore[index]
