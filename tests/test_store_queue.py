"""The outbound queue (Store.queue) on both engines: durability, leases, outcomes, notices, maintenance."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from mssante_operator.outcomes import Reply
from mssante_operator.store import NewMessage, Store
from mssante_operator.store.models import Blob
from mssante_operator.store.queue import (
    Delivery,
    OutboundEnvelope,
    Outcome,
    QueuedRecipient,
    QueueEntryNotFound,
    RecipientStatus,
    new_queue_id,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DAYS_5 = timedelta(days=5)
RAW = b"Message-ID: <q1@operateur.example>\r\nSubject: compte rendu\r\n\r\nBonjour\r\n"
SCHEDULED, DEFERRED = RecipientStatus.SCHEDULED, RecipientStatus.DEFERRED
DELIVERED, FAILED = RecipientStatus.DELIVERED, RecipientStatus.FAILED


def envelope(*recipients: str | QueuedRecipient, sender: str = "alice@operateur.example") -> OutboundEnvelope:
    return OutboundEnvelope(
        sender=sender,
        recipients=tuple(r if isinstance(r, QueuedRecipient) else QueuedRecipient(r) for r in recipients),
        message_id="<q1@operateur.example>",
        submitted_by="alice@operateur.example",
    )


def blob_files(store: Store) -> list[Path]:
    return sorted(p for p in store.blobs.root.glob("??/*") if p.is_file())  # shards: the root holds the marker


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    store = Store(store_url, tmp_path / "blobs")
    store.migrate()
    yield store
    store.close()


def enqueue(store: Store, *recipients: str | QueuedRecipient, now: datetime = T0, **kw: str) -> str:
    return store.queue.enqueue(RAW, envelope(*recipients, **kw), now=now, expires_at=now + DAYS_5)


def statuses(store: Store, queue_id: str) -> dict[str, tuple[RecipientStatus, int]]:
    entry = store.queue.show(queue_id)
    assert entry is not None
    return {r.address: (r.status, r.attempts) for r in entry.recipients}


LATER = Reply.from_smtp(451, "4.4.1 try again later")
OK, NO = Reply.from_smtp(250, "ok"), Reply.from_smtp(550, "no")


def deferred(delivery: Delivery, minutes: int, reply: Reply = LATER) -> Outcome:
    return Outcome(delivery.recipient_id, DEFERRED, reply, next_attempt_at=T0 + timedelta(minutes=minutes))


# -- queueing ------------------------------------------------------------------------------------


def test_enqueue_is_durable_rows_and_blob(store: Store) -> None:
    recipients = (
        QueuedRecipient("Bob@Clinique-Ouest.mssante.fr", orcpt="rfc822;bob@clinique-ouest.mssante.fr",
                        notify=("SUCCESS", "FAILURE")),
        QueuedRecipient("carol@cabinet.mssante.fr", notify=("NEVER",)),
    )  # fmt: skip
    env = OutboundEnvelope("alice@operateur.example", recipients, "<q1@operateur.example>", "alice@operateur.example",
                           envid="QQ314159", ret="HDRS")  # fmt: skip
    queue_id = store.queue.enqueue(RAW, env, now=T0, expires_at=T0 + DAYS_5)
    assert len(queue_id) == 16 and int(queue_id, 16) >= 0
    [blob] = blob_files(store)
    assert blob.read_bytes() == RAW

    entry = store.queue.show(queue_id)
    assert entry is not None
    assert (entry.sender, entry.size, entry.created_at, entry.expires_at) == (env.sender, len(RAW), T0, T0 + DAYS_5)
    assert [(r.address, r.status, r.attempts, r.next_attempt_at) for r in entry.recipients] == [
        ("Bob@Clinique-Ouest.mssante.fr", SCHEDULED, 0, T0),
        ("carol@cabinet.mssante.fr", SCHEDULED, 0, T0),
    ]
    first, second = store.queue.claim("w1", now=T0, lease=60)
    assert (first.domain, first.orcpt, first.notify) == (
        "clinique-ouest.mssante.fr", "rfc822;bob@clinique-ouest.mssante.fr", ("SUCCESS", "FAILURE"))
    assert (first.envid, first.ret, first.queue_id, first.attempts) == ("QQ314159", "HDRS", queue_id, 0)
    assert second.notify == ("NEVER",) and second.orcpt is None
    assert store.queue.read(first.blob_key) == RAW == store.queue.read(second.blob_key)


def test_failed_enqueue_leaves_neither_rows_nor_file(store: Store) -> None:
    with pytest.raises(StatementError, match="naive"):  # refused inside the transaction, after the blob write
        store.queue.enqueue(RAW, envelope("bob@peer.example"), now=T0, expires_at=datetime(2026, 1, 10))
    with pytest.raises(ValueError):  # refused before anything is written
        store.queue.enqueue(RAW, envelope("not-an-address"), now=T0, expires_at=T0 + DAYS_5)
    with pytest.raises(ValueError):
        store.queue.enqueue(RAW, envelope(), now=T0, expires_at=T0 + DAYS_5)
    assert blob_files(store) == []
    assert store.queue.entries() == [] and store.queue.next_due() is None


def test_queued_blob_survives_orphan_collection(store: Store) -> None:
    enqueue(store, "bob@peer.example")
    [path] = blob_files(store)
    os.utime(path, (time.time() - 7200, time.time() - 7200))
    assert store.collect_orphan_blobs() == 0
    assert path.exists()


# -- claims and leases ---------------------------------------------------------------------------


def test_claim_takes_due_recipients_earliest_first_and_leases_them(store: Store) -> None:
    later = enqueue(store, "b1@peer.example", now=T0 + timedelta(seconds=10))
    earlier = enqueue(store, "a1@peer.example", "a2@peer.example", now=T0)
    enqueue(store, "future@peer.example", now=T0 + timedelta(hours=1))
    claimed = store.queue.claim("w1", now=T0 + timedelta(seconds=20), lease=60)
    assert [(d.queue_id, d.address) for d in claimed] == [
        (earlier, "a1@peer.example"), (earlier, "a2@peer.example"), (later, "b1@peer.example")]
    assert store.queue.claim("w2", now=T0 + timedelta(seconds=30), lease=60) == []  # leased
    entry = store.queue.show(earlier)
    assert entry is not None and {r.leased_until for r in entry.recipients} == {T0 + timedelta(seconds=80)}
    assert store.queue.next_due() == T0 + timedelta(seconds=80)  # claimable again when the leases end


def test_claim_limit(store: Store) -> None:
    enqueue(store, *(f"r{i}@peer.example" for i in range(5)))
    assert [d.address for d in store.queue.claim("w1", now=T0, lease=60, limit=2)] == [
        "r0@peer.example", "r1@peer.example"]
    assert len(store.queue.claim("w2", now=T0, lease=60, limit=10)) == 3


def test_a_crashed_workers_recipients_come_back_after_the_lease(store: Store) -> None:
    queue_id = enqueue(store, "bob@peer.example")
    [lost] = store.queue.claim("crashed", now=T0, lease=60)
    assert store.queue.claim("w2", now=T0 + timedelta(seconds=59), lease=60) == []
    [again] = store.queue.claim("w2", now=T0 + timedelta(seconds=61), lease=60)
    assert again.recipient_id == lost.recipient_id
    # The first worker comes back late: its outcome no longer applies, the new owner's does.
    late = Outcome(lost.recipient_id, FAILED, Reply.from_smtp(550, "5.1.1 unknown"), notice=True)
    assert store.queue.record("crashed", [late], now=T0 + timedelta(seconds=62)) == 0
    assert statuses(store, queue_id) == {"bob@peer.example": (SCHEDULED, 0)}
    done = Outcome(again.recipient_id, DELIVERED, Reply.from_smtp(250, "2.0.0 ok"), action="relayed",
                   remote_mta="mx.peer.example")
    assert store.queue.record("w2", [done], now=T0 + timedelta(seconds=63)) == 1
    assert statuses(store, queue_id) == {"bob@peer.example": (DELIVERED, 1)}


def test_release_gives_leases_back_at_once(store: Store) -> None:
    enqueue(store, "a@peer.example", "b@peer.example")
    store.queue.claim("w1", now=T0, lease=600)
    assert store.queue.release("other") == 0
    assert store.queue.release("w1") == 2
    assert len(store.queue.claim("w2", now=T0 + timedelta(seconds=1), lease=600)) == 2


@pytest.mark.parametrize("workers", [4])
def test_concurrent_claimers_never_get_the_same_recipient(store: Store, workers: int) -> None:
    for m in range(20):
        enqueue(store, *(f"r{m}-{i}@peer{i % 3}.example" for i in range(10)))
    claimed: list[list[int]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def worker(n: int) -> None:
        try:
            start.wait()
            while batch := store.queue.claim(f"w{n}", now=T0, lease=300, limit=7):
                claimed[n].extend(d.recipient_id for d in batch)
        except BaseException as exc:  # reported below: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    every = [rid for ids in claimed for rid in ids]
    assert len(every) == 200 and len(set(every)) == 200


# -- outcomes ------------------------------------------------------------------------------------


def test_record_counts_attempts_and_sets_final_state(store: Store) -> None:
    queue_id = enqueue(store, "ok@peer.example", "later@peer.example", "bad@peer.example")
    ok, later, bad = store.queue.claim("w1", now=T0, lease=60)
    outcomes = [
        Outcome(ok.recipient_id, DELIVERED, Reply.from_smtp(250, "2.0.0 queued as X"), action="relayed",
                remote_mta="mx.peer.example"),
        deferred(later, 5),
        Outcome(bad.recipient_id, FAILED, Reply.from_smtp(550, "5.1.1 no such user"), action="failed", notice=True),
    ]
    assert store.queue.record("w1", outcomes, now=T0 + timedelta(seconds=2)) == 3
    assert statuses(store, queue_id) == {
        "ok@peer.example": (DELIVERED, 1), "later@peer.example": (DEFERRED, 1), "bad@peer.example": (FAILED, 1)}
    entry = store.queue.show(queue_id)
    assert entry is not None
    states = {r.address: r for r in entry.recipients}
    assert states["later@peer.example"].next_attempt_at == T0 + timedelta(minutes=5)
    assert states["later@peer.example"].last_reply == LATER
    assert states["bad@peer.example"].next_attempt_at is None  # final: no next attempt
    assert {r.last_attempt_at for r in entry.recipients} == {T0 + timedelta(seconds=2)}
    assert {r.leased_until for r in entry.recipients} == {None}
    assert states["ok@peer.example"].action == "relayed"
    # Only the failure owes a notice; a second record of the same outcomes changes nothing (no lease).
    [notice] = store.queue.pending_notices("w1", now=T0, delay_warning=None)
    assert (notice.kind, notice.address, notice.status, str(notice.reply)) == (
        "final", "bad@peer.example", FAILED, "550 5.1.1 no such user")
    assert store.queue.record("w1", outcomes, now=T0 + timedelta(seconds=3)) == 0
    assert store.queue.next_due() == T0 + timedelta(minutes=5)
    # The deferred one comes back at its next attempt, with its attempt count.
    assert store.queue.claim("w1", now=T0 + timedelta(minutes=4), lease=60) == []
    [retry] = store.queue.claim("w1", now=T0 + timedelta(minutes=5), lease=60)
    assert (retry.address, retry.attempts) == ("later@peer.example", 1)
    store.queue.record("w1", [deferred(retry, 30)], now=T0 + timedelta(minutes=5))
    assert statuses(store, queue_id)["later@peer.example"] == (DEFERRED, 2)


def test_record_refuses_a_deferral_without_next_attempt(store: Store) -> None:
    enqueue(store, "bob@peer.example")
    [d] = store.queue.claim("w1", now=T0, lease=60)
    with pytest.raises(ValueError):
        store.queue.record("w1", [Outcome(d.recipient_id, DEFERRED, LATER)], now=T0)
    with pytest.raises(ValueError):
        store.queue.record("w1", [Outcome(d.recipient_id, SCHEDULED, LATER)], now=T0)
    with pytest.raises(TypeError):  # a reply line is never parsed back
        store.queue.record("w1", [deferred(d, 5, "451 4.4.1 later")], now=T0)  # type: ignore[arg-type]


def test_record_applies_only_to_rows_leased_by_that_owner(store: Store) -> None:
    enqueue(store, "mine@peer.example", "yours@peer.example")
    [mine] = store.queue.claim("w1", now=T0, lease=60, limit=1)
    [yours] = store.queue.claim("w2", now=T0, lease=60, limit=1)
    done = [Outcome(d.recipient_id, DELIVERED, OK) for d in (mine, yours)]
    assert store.queue.record("w1", done, now=T0) == 1
    assert store.queue.record("w1", done, now=T0) == 0  # its lease ended with the first record


def test_record_in_bulk(store: Store) -> None:
    for m in range(12):
        enqueue(store, *(f"r{m}-{i}@peer.example" for i in range(100)))
    claimed = store.queue.claim("w1", now=T0, lease=60, limit=1200)
    assert len(claimed) == 1200
    outcomes = [Outcome(d.recipient_id, DELIVERED, OK, action="relayed") for d in claimed]
    assert store.queue.record("w1", outcomes, now=T0) == 1200
    assert store.queue.next_due() is None
    assert store.queue.pending_notices("w1", now=T0, delay_warning=0) == []


# -- notices -------------------------------------------------------------------------------------


def test_final_notices_until_marked_notified(store: Store) -> None:
    enqueue(store, "a@peer.example", "b@peer.example")
    a, b = store.queue.claim("w1", now=T0, lease=60)
    store.queue.record("w1", [
        Outcome(a.recipient_id, DELIVERED, OK, action="delivered", remote_mta="mx.peer.example", notice=True),
        Outcome(b.recipient_id, FAILED, NO, action="failed", notice=True),
    ], now=T0)  # fmt: skip
    notices = store.queue.pending_notices("w1", now=T0, delay_warning=None)
    assert [(n.address, n.action, n.remote_mta, n.next_attempt_at) for n in notices] == [
        ("a@peer.example", "delivered", "mx.peer.example", None), ("b@peer.example", "failed", "", None)]
    assert notices[0].blob_key == a.blob_key and notices[0].last_attempt_at == T0
    assert len(store.queue.pending_notices("w1", now=T0, delay_warning=None, limit=1)) == 1
    store.queue.mark_notified([a.recipient_id])
    assert [n.address for n in store.queue.pending_notices("w1", now=T0, delay_warning=None)] == ["b@peer.example"]


def test_a_final_notice_is_one_workers_once_the_message_is_settled(store: Store) -> None:
    """The record that ends a message's pass gives its owed notices to one worker; a dead worker's run out."""
    enqueue(store, "a@peer.example", "b@peer.example")
    [a] = store.queue.claim("w1", now=T0, lease=60, limit=1)
    [b] = store.queue.claim("w2", now=T0, lease=60, limit=1)
    store.queue.record("w1", [Outcome(a.recipient_id, FAILED, NO, action="failed", notice=True)], now=T0)
    assert store.queue.pending_notices("w1", now=T0, delay_warning=None) == []  # b still in flight: not yet
    store.queue.record("w2", [Outcome(b.recipient_id, DELIVERED, OK, action="relayed")], now=T0,
                       notice_lease=60)
    assert store.queue.pending_notices("w1", now=T0, delay_warning=None) == []
    assert [n.address for n in store.queue.pending_notices("w2", now=T0, delay_warning=None)] == ["a@peer.example"]
    # w2 dies before sending it: once its claim runs out, another worker takes it over, and only that one.
    assert store.queue.pending_notices("w3", now=T0 + timedelta(seconds=59), delay_warning=None) == []
    later = T0 + timedelta(seconds=61)
    assert [n.address for n in store.queue.pending_notices("w3", now=later, delay_warning=None)] == ["a@peer.example"]
    assert store.queue.pending_notices("w2", now=later, delay_warning=None) == []
    store.queue.release("w3")  # a clean stop gives it back at once
    assert len(store.queue.pending_notices("w4", now=later, delay_warning=None)) == 1
    store.queue.mark_notified([a.recipient_id])
    assert store.queue.pending_notices("w4", now=later + DAYS_5, delay_warning=None) == []


def test_delay_warnings_follow_notify_and_are_sent_once(store: Store) -> None:
    enqueue(store, "default@peer.example", QueuedRecipient("delay@peer.example", notify=("FAILURE", "DELAY")),
            QueuedRecipient("failure@peer.example", notify=("FAILURE",)),
            QueuedRecipient("never@peer.example", notify=("NEVER",)))  # fmt: skip
    enqueue(store, "dsn@peer.example", sender="")  # a bounce itself: nobody to warn
    claimed = store.queue.claim("w1", now=T0, lease=60)
    store.queue.record("w1", [deferred(d, 30) for d in claimed], now=T0)
    assert store.queue.pending_notices("w1", now=T0 + timedelta(minutes=59), delay_warning=3600) == []
    assert store.queue.pending_notices("w1", now=T0 + timedelta(hours=2), delay_warning=None) == []
    notices = store.queue.pending_notices("w1", now=T0 + timedelta(hours=1), delay_warning=3600)
    assert [(n.kind, n.address, n.status, n.action) for n in notices] == [
        ("delay", "default@peer.example", DEFERRED, "delayed"), ("delay", "delay@peer.example", DEFERRED, "delayed")]
    assert notices[0].next_attempt_at == T0 + timedelta(minutes=30)
    assert notices[0].reply == LATER
    assert store.queue.pending_notices("w2", now=T0 + timedelta(hours=1), delay_warning=3600) == []  # w1's
    store.queue.mark_warned([n.recipient_id for n in notices])
    assert store.queue.pending_notices("w1", now=T0 + timedelta(hours=3), delay_warning=3600) == []


# -- operators' actions --------------------------------------------------------------------------


def test_retry_makes_pending_recipients_due_now(store: Store) -> None:
    first = enqueue(store, "a@peer.example", "b@peer.example")
    second = enqueue(store, "c@peer.example")
    a, b, c = store.queue.claim("w1", now=T0, lease=60)
    store.queue.record("w1", [deferred(a, 60), Outcome(b.recipient_id, DELIVERED, OK), deferred(c, 60)], now=T0)
    now = T0 + timedelta(minutes=1)
    assert store.queue.claim("w1", now=now, lease=60) == []
    assert store.queue.retry(first, now=now) == 1  # the delivered one stays delivered
    assert [d.address for d in store.queue.claim("w1", now=now, lease=60)] == ["a@peer.example"]
    assert store.queue.retry(None, now=now) == 2  # every pending recipient, leased or not
    assert [d.address for d in store.queue.claim("w1", now=now, lease=60)] == ["c@peer.example"]
    with pytest.raises(QueueEntryNotFound):
        store.queue.retry("0123456789abcdef", now=now)
    assert statuses(store, second) == {"c@peer.example": (DEFERRED, 1)}


def test_entries_and_status_filter(store: Store) -> None:
    first = enqueue(store, "a@peer.example", "b@peer.example", now=T0)
    second = enqueue(store, "c@peer.example", now=T0 + timedelta(seconds=1))
    [a] = store.queue.claim("w1", now=T0, lease=60, limit=1)
    store.queue.record("w1", [Outcome(a.recipient_id, FAILED, NO)], now=T0)
    assert [e.queue_id for e in store.queue.entries()] == [first, second]
    assert [e.queue_id for e in store.queue.entries(limit=1)] == [first]
    assert [e.queue_id for e in store.queue.entries(status=SCHEDULED)] == [first, second]
    [failed] = store.queue.entries(status=FAILED)
    assert failed.queue_id == first and len(failed.recipients) == 2  # the whole message, for context
    assert store.queue.entries(status=DELIVERED) == []
    assert store.queue.show("0123456789abcdef") is None


def test_drop_removes_the_message_and_its_blob(store: Store) -> None:
    queue_id = enqueue(store, "a@peer.example", "b@peer.example")
    store.queue.claim("w1", now=T0, lease=60, limit=1)
    assert store.queue.drop(queue_id) == 2
    assert store.queue.show(queue_id) is None and blob_files(store) == []
    assert store.queue.claim("w1", now=T0 + timedelta(hours=1), lease=60) == []
    with pytest.raises(QueueEntryNotFound):
        store.queue.drop(queue_id)


def _received(raw: bytes = RAW) -> NewMessage:
    return NewMessage(raw=raw, message_id="<q1@operateur.example>", from_addr="alice@operateur.example",
                      subject="compte rendu", authentication_results="", received_at=T0)  # fmt: skip


def _queue_blob_of(store: Store, blob_key: str, *recipients: str) -> str:
    """Queue the blob a mailbox row already uses, as a submission does for the Sent copy."""
    with store.transaction() as tx:
        blob_id = tx.conn.scalar(select(Blob.id).where(Blob.key == blob_key))
        return tx.enqueue(blob_id, len(RAW), envelope(*recipients), now=T0, expires_at=T0 + DAYS_5,
                          queue_id=new_queue_id())


def test_a_blob_shared_with_a_mailbox_goes_with_its_last_reference(store: Store) -> None:
    local = "alice@operateur.example"
    store.deliver(_received(), [local])
    [meta] = store.folders.messages(store.folders.get(local, "INBOX").id)
    queue_id = _queue_blob_of(store, meta.blob_key, "bob@peer.example")
    assert store.queue.drop(queue_id) == 1
    assert store.read_message(local, meta.uid) == RAW  # the INBOX copy keeps the blob

    # The other way round: the mailbox copy goes first, the queue keeps the blob.
    store.folders.create(local, "Envoyés")
    store.folders.append(local, "Envoyés", _received(b"sent copy\r\n"), [], T0)
    [sent] = store.folders.messages(store.folders.get(local, "Envoyés").id)
    queue_id = _queue_blob_of(store, sent.blob_key, "carol@peer.example")
    store.folders.delete(local, "Envoyés")
    assert store.blobs.path(sent.blob_key).exists()
    [delivery] = store.queue.claim("w1", now=T0, lease=60)
    assert store.queue.read(delivery.blob_key) == b"sent copy\r\n"
    store.queue.drop(queue_id)
    assert not store.blobs.path(sent.blob_key).exists()
    assert store.blobs.path(meta.blob_key).exists()


def test_purge_finished_forgets_final_notified_messages(store: Store) -> None:
    done = enqueue(store, "a@peer.example", "b@peer.example")
    owed = enqueue(store, "c@peer.example")
    pending = enqueue(store, "d@peer.example", "e@peer.example")
    a, b, c, d, e = store.queue.claim("w1", now=T0, lease=60)
    store.queue.record("w1", [
        Outcome(a.recipient_id, DELIVERED, OK), Outcome(b.recipient_id, FAILED, NO),
        Outcome(c.recipient_id, FAILED, NO, notice=True),
        Outcome(d.recipient_id, DELIVERED, OK), deferred(e, 30),
    ], now=T0)  # fmt: skip
    assert store.queue.purge_finished(T0 - timedelta(seconds=1)) == 0  # finished, but not long enough ago
    assert len(blob_files(store)) == 3
    assert store.queue.purge_finished(T0) == 1
    assert store.queue.show(done) is None and len(blob_files(store)) == 2
    store.queue.mark_notified([c.recipient_id])
    assert store.queue.purge_finished(T0) == 1
    assert [entry.queue_id for entry in store.queue.entries()] == [pending]
    assert len(blob_files(store)) == 1 and owed
