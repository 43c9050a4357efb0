"""Store behaviour on both engines (SQLite and PostgreSQL) through the public facade only."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from mssante_operator.store import (
    DeliveryOutcome,
    MessageNotFoundError,
    NewMessage,
    Store,
)
from mssante_operator.store.models import Base
from mssante_operator.store.write_unit import WriteUnit

STORED, DUPLICATE = DeliveryOutcome.STORED, DeliveryOutcome.DUPLICATE
ALICE = "alice@hopital.example"
BOB = "bob@clinique.example"


def message(
    message_id: str | None = "<m1@peer.example>", body: bytes = b"Hello\r\n", **kw: object
) -> NewMessage:
    raw = f"Message-ID: {message_id}\r\nSubject: test\r\n\r\n".encode() + body
    fields: dict[str, object] = {
        "raw": raw,
        "message_id": message_id,
        "from_addr": "Dr Émile Peer <emile@peer.example>",
        "subject": "Résultats d'analyse",
        "authentication_results": "op.example; dkim=pass header.d=peer.example",
        "received_at": datetime(2024, 11, 21, 10, 30, tzinfo=UTC),
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


def blob_files(store: Store) -> list[Path]:
    return sorted(p for p in store.blobs.root.glob("??/*") if p.is_file())  # shards: the root holds the marker


@pytest.fixture
def blob_dir(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def store(store_url: str, blob_dir: Path) -> Iterator[Store]:
    store = Store(store_url, blob_dir)
    store.migrate()
    yield store
    store.close()


def uids(store: Store, address: str) -> list[int]:
    return [m.uid for m in store.list_messages(address)]


# -- UIDs and MODSEQs ---------------------------------------------------------------------------


def test_uids_are_monotonic_per_mailbox_and_independent_between_mailboxes(store: Store) -> None:
    for i in range(3):
        store.deliver(message(f"<a{i}@x>"), [ALICE])
    store.deliver(message("<b0@x>"), [BOB])
    store.deliver(message("<a3@x>"), [ALICE, BOB])
    assert uids(store, ALICE) == [1, 2, 3, 4]
    assert uids(store, BOB) == [1, 2]


def test_modseq_increases_with_each_delivery(store: Store) -> None:
    for i in range(3):
        store.deliver(message(f"<{i}@x>"), [ALICE])
    modseqs = [m.modseq for m in store.list_messages(ALICE)]
    assert modseqs == sorted(set(modseqs))
    assert modseqs[0] > 1  # HIGHESTMODSEQ starts at 1; the first change takes the next value


# -- dedup ----------------------------------------------------------------------------------


def test_same_message_id_is_stored_once_per_mailbox(store: Store) -> None:
    assert store.deliver(message(), [ALICE]) == {ALICE: STORED}
    assert store.deliver(message(body=b"other body\r\n"), [ALICE, BOB]) == {ALICE: DUPLICATE, BOB: STORED}
    assert uids(store, ALICE) == [1]
    assert uids(store, BOB) == [1]


def test_messages_without_message_id_are_never_deduplicated(store: Store) -> None:
    store.deliver(message(None), [ALICE])
    store.deliver(message(None), [ALICE])
    assert uids(store, ALICE) == [1, 2]
    assert [m.message_id for m in store.list_messages(ALICE)] == [None, None]


def test_overlong_message_id_is_stored_without_dedup_key(store: Store) -> None:
    """PostgreSQL cannot index arbitrarily long keys; such Message-IDs are treated as absent."""
    long_id = "<" + "x" * 5000 + "@peer.example>"
    assert store.deliver(message(long_id), [ALICE]) == {ALICE: STORED}
    assert store.deliver(message(long_id), [ALICE]) == {ALICE: STORED}
    assert [m.message_id for m in store.list_messages(ALICE)] == [None, None]


def test_duplicates_within_one_group_commit(store: Store) -> None:
    outcomes = store.deliver_many([(message(), [ALICE]), (message(), [ALICE, BOB])])
    assert outcomes == [{ALICE: STORED}, {ALICE: DUPLICATE, BOB: STORED}]


def test_all_duplicate_delivery_leaves_no_blob_and_burns_no_uid(store: Store) -> None:
    store.deliver(message(), [ALICE])
    assert store.deliver(message(), [ALICE]) == {ALICE: DUPLICATE}
    assert len(blob_files(store)) == 1
    store.deliver(message("<next@x>"), [ALICE])
    assert uids(store, ALICE) == [1, 2]


def test_unique_index_still_catches_a_duplicate_that_skipped_the_check(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ON CONFLICT fallback: reported as duplicate, no error, no dangling blob."""
    store.deliver(message(), [ALICE])
    monkeypatch.setattr(WriteUnit, "is_duplicate", lambda *_: False)
    assert store.deliver(message(), [ALICE]) == {ALICE: DUPLICATE}
    assert uids(store, ALICE) == [1]
    assert len(blob_files(store)) == 1


def test_address_spellings_share_one_account_and_one_delivery(store: Store) -> None:
    outcome = store.deliver(message(None), ["Alice@Hopital.Example", ALICE])
    assert outcome == {"Alice@Hopital.Example": STORED, ALICE: STORED}
    assert uids(store, "ALICE@hopital.example") == [1]


# -- blobs and reading ---------------------------------------------------------------------


def test_multi_recipient_delivery_shares_one_blob(store: Store) -> None:
    msg = message()
    store.deliver(msg, [ALICE, BOB, "carol@cabinet.example"])
    [path] = blob_files(store)
    assert path.read_bytes() == msg.raw
    assert path.stat().st_mode & 0o777 == 0o600  # health data: owner only
    assert store.read_message(BOB, 1) == store.read_message(ALICE, 1) == msg.raw


def test_read_message_returns_the_exact_bytes(store: Store) -> None:
    raw_body = bytes(range(256)) + b"\r\n.\r\nno final newline"
    msg = message(body=raw_body)
    store.deliver(msg, [ALICE])
    assert store.read_message(ALICE, 1) == msg.raw


def test_read_message_unknown_raises(store: Store) -> None:
    store.deliver(message(), [ALICE])
    with pytest.raises(MessageNotFoundError):
        store.read_message(ALICE, 2)
    with pytest.raises(MessageNotFoundError):
        store.read_message(BOB, 1)


def test_list_messages_fields(store: Store) -> None:
    msg = message()
    store.deliver(msg, [ALICE])
    [stored] = store.list_messages(ALICE)
    assert stored.uid == 1
    assert stored.message_id == msg.message_id
    assert stored.from_addr == msg.from_addr
    assert stored.subject == msg.subject
    assert stored.size == len(msg.raw)
    assert stored.received_at == msg.received_at
    assert stored.internaldate == msg.received_at
    assert stored.authentication_results == msg.authentication_results
    assert stored.flags == frozenset()


def test_unknown_address_or_mailbox_lists_nothing(store: Store) -> None:
    store.deliver(message(), [ALICE])
    assert store.list_messages("nobody@nowhere.example") == []
    assert store.list_messages(ALICE, mailbox="Archives") == []


def test_datetimes_come_back_timezone_aware_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=1))
    received = datetime(2024, 11, 21, 11, 30, 15, 123456, tzinfo=paris)
    store.deliver(message(received_at=received), [ALICE])
    [stored] = store.list_messages(ALICE)
    assert stored.received_at == received
    assert stored.received_at.utcoffset() == timedelta(0)
    assert stored.internaldate.tzinfo is not None


def test_naive_datetime_is_refused_before_anything_is_written(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.deliver(message(received_at=datetime(2024, 1, 1)), [ALICE])
    assert blob_files(store) == []


# -- concurrency ---------------------------------------------------------------------------


def test_concurrent_deliveries_get_distinct_uids(store: Store) -> None:
    threads, per_thread = 8, 10

    def work(t: int) -> None:
        for i in range(per_thread):
            assert store.deliver(message(f"<{t}.{i}@x>"), [ALICE, BOB]) == {ALICE: STORED, BOB: STORED}

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    expected = list(range(1, threads * per_thread + 1))
    assert uids(store, ALICE) == expected
    assert uids(store, BOB) == expected
    modseqs = [m.modseq for m in store.list_messages(ALICE)]
    assert len(set(modseqs)) == len(modseqs)


def test_concurrent_duplicates_store_exactly_once(store: Store) -> None:
    barrier = threading.Barrier(6)

    def work(_: int) -> DeliveryOutcome:
        barrier.wait()
        return store.deliver(message("<same@x>"), [ALICE])[ALICE]

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(work, range(6)))
    assert sorted(o.value for o in outcomes) == ["duplicate"] * 5 + ["stored"]
    assert uids(store, ALICE) == [1]
    assert len(blob_files(store)) == 1


def test_concurrent_group_commits_in_opposite_orders_do_not_deadlock(store: Store) -> None:
    def work(t: int) -> None:
        order = [ALICE, BOB] if t % 2 else [BOB, ALICE]
        for i in range(5):
            batch = [(message(f"<{t}.{i}.{j}@x>"), order) for j in range(3)]
            store.deliver_many(batch)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(work, range(6)))
    assert uids(store, ALICE) == list(range(1, 91))
    assert uids(store, BOB) == list(range(1, 91))


def test_several_processes_share_one_store(store: Store, store_url: str, blob_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from datetime import UTC, datetime
        from pathlib import Path
        from mssante_operator.store import NewMessage, Store
        store = Store({store_url!r}, Path({str(blob_dir)!r}))
        store.migrate()
        for i in range(15):
            msg = NewMessage(b"x", f"<{{sys.argv[1]}}.{{i}}@x>", "f", "s", "a", datetime.now(UTC))
            store.deliver(msg, [{ALICE!r}])
            store.list_messages({ALICE!r})
        store.close()
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert uids(store, ALICE) == list(range(1, 46))


# -- schema and maintenance ----------------------------------------------------------------


def test_migrate_is_idempotent_and_matches_the_models(store: Store, store_url: str, blob_dir: Path) -> None:
    store.deliver(message(), [ALICE])
    store.migrate()
    again = Store(store_url, blob_dir)
    again.migrate()
    assert uids(again, ALICE) == [1]
    again.close()
    engine = create_engine(store_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_collect_orphan_blobs_removes_only_old_unreferenced_files(store: Store) -> None:
    store.deliver(message(), [ALICE])
    [referenced] = blob_files(store)
    old_orphan = store.blobs.path(store.blobs.write(b"crashed before commit").key)
    new_orphan = store.blobs.path(store.blobs.write(b"delivery in progress").key)
    two_hours_ago = time.time() - 7200
    for path in (referenced, old_orphan):
        os.utime(path, (two_hours_ago, two_hours_ago))

    assert store.collect_orphan_blobs() == 1
    assert not old_orphan.exists()
    assert new_orphan.exists()
    assert store.read_message(ALICE, 1) == referenced.read_bytes()
