"""Folder change notices reach watching sessions: in-process at once, from another process by
PostgreSQL NOTIFY or (SQLite) by polling. Waits are generous (a busy machine); no timing is asserted."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from mssante_operator.imap.watcher import FolderWatcher
from mssante_operator.store import NewMessage, Store
from mssante_operator.store.folders import FlagMode
from mssante_operator.store.notifications import parse_payload

ALICE = "alice@hopital.example"


def message(n: int) -> NewMessage:
    raw = f"Message-ID: <m{n}.{time.time_ns()}@peer>\r\nSubject: s\r\n\r\nbody\r\n".encode()
    return NewMessage(raw=raw, message_id=f"<m{n}.{time.time_ns()}@peer>", from_addr="a@b.fr", subject="s",
                      authentication_results="", received_at=datetime.now(UTC))


def test_payloads_are_parsed_defensively() -> None:
    assert parse_payload("3,17") == {3, 17}
    assert parse_payload("3,x,,-1, 4") == {3, 4}


def test_a_change_wakes_the_watchers_of_that_folder_only(store_url: str, tmp_path: Path) -> None:
    """The watcher's store is ``ours``; ``theirs`` is another process's Store on the same database:
    its changes arrive by NOTIFY (PostgreSQL) or by polling (SQLite)."""
    ours = Store(store_url, tmp_path / "blobs")
    ours.migrate()
    theirs = Store(store_url, tmp_path / "blobs")
    try:
        ours.folders.ensure_account(ALICE)
        inbox = ours.folders.get(ALICE, "INBOX")
        sent = ours.folders.get(ALICE, "Sent")
        assert inbox is not None and sent is not None

        async def scenario() -> None:
            watcher = FolderWatcher(ours, poll_interval=0.3)
            await watcher.start()
            try:
                watch_inbox, watch_sent = watcher.watch(inbox.id), watcher.watch(sent.id)
                # What a session does once it has read the folders: the counters it reported.
                counters = ours.folders.counters_many([inbox.id, sent.id])
                watch_inbox.seen, watch_sent.seen = counters[inbox.id], counters[sent.id]
                await asyncio.to_thread(ours.deliver, message(1), [ALICE])
                assert await watch_inbox.wait(timeout=30)  # in-process: at once
                assert not watch_sent.changed.is_set()

                await asyncio.to_thread(theirs.deliver, message(2), [ALICE])
                assert await watch_inbox.wait(timeout=30)
                assert not watch_sent.changed.is_set()

                await asyncio.to_thread(theirs.folders.store_flags, inbox.id, [1], FlagMode.ADD, ["\\Seen"])
                assert await watch_inbox.wait(timeout=30)  # flag changes too

                watch_inbox.close()
                await asyncio.to_thread(ours.deliver, message(3), [ALICE])
                await asyncio.sleep(0.1)
                assert not watch_inbox.changed.is_set()
                watch_sent.close()
            finally:
                await watcher.stop()

        asyncio.run(scenario())
    finally:
        theirs.close()
        ours.close()



def test_a_delivery_before_the_pollers_first_look_still_wakes_the_session(tmp_path: Path, monkeypatch) -> None:
    """SQLite, two workers: another process delivers after this session's SELECT but before the poller
    has looked at the folder. The poller must compare with what the session reported, not take what
    it first finds as its baseline (the session would then idle through that message)."""
    from mssante_base.annuaire import BalKind, MailboxEntry
    from mssante_operator.auth.authenticator import Principal
    from mssante_operator.imap.session import ServerContext, Session, State

    url = f"sqlite:///{tmp_path / 'store.db'}"
    ours = Store(url, tmp_path / "blobs")
    ours.migrate()
    theirs = Store(url, tmp_path / "blobs")
    delivered = threading.Event()
    read_counters = ours.folders.counters_many

    def counters_once_the_other_worker_delivered(folder_ids):  # the poller's look comes after the delivery
        delivered.wait(30)
        return read_counters(folder_ids)

    monkeypatch.setattr(ours.folders, "counters_many", counters_once_the_other_worker_delivered)
    try:
        ours.folders.ensure_account(ALICE)
        ours.deliver(message(1), [ALICE])
        inbox = ours.folders.get(ALICE, "INBOX")
        assert inbox is not None

        async def scenario() -> None:
            watcher = FolderWatcher(ours, poll_interval=0.05)
            await watcher.start()
            written = bytearray()

            async def write(data: bytes) -> None:
                written.extend(data)

            ctx = ServerContext(store=ours, authenticator=None, watcher=watcher,  # type: ignore[arg-type]
                                hostname="imap.test", append_limit=1 << 20)
            session = Session(ctx=ctx, write=write, peer_ip="127.0.0.1", tls=True,
                              principal=Principal(login=ALICE, mechanism="PLAIN", own=MailboxEntry(ALICE, BalKind.PER)),
                              state=State.AUTHENTICATED)
            try:
                await session.select(inbox, False, False)
                assert session.watch is not None and session.selected is not None
                session.watch.changed.clear()
                await asyncio.to_thread(theirs.deliver, message(2), [ALICE])
                delivered.set()
                assert await session.watch.wait(timeout=30)
                await session.refresh()
                assert b"* 2 EXISTS\r\n" in written
            finally:
                delivered.set()
                await session.close()
                await watcher.stop()

        asyncio.run(scenario())
    finally:
        theirs.close()
        ours.close()
