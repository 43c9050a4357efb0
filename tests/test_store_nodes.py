"""Several nodes on one database: one blob storage for all, a missing file never bounces, one report per outcome.

Each test runs on SQLite and PostgreSQL; a "node" is a second Store (or queue runner) on the same database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, or_, select

from mssante_operator.config import OutboundSettings
from mssante_operator.outcomes import Reply
from mssante_operator.smtp.local_delivery import LocalDelivery
from mssante_operator.smtp.notices import Notices
from mssante_operator.smtp.outbound import OutgoingMessage, RecipientResult
from mssante_operator.smtp.queue import QueueRunner
from mssante_operator.store import NewMessage, Store
from mssante_operator.store.facade import BlobStorageMismatch
from mssante_operator.store.models import OutboundRecipient, StoreIdentity
from mssante_operator.store.queue import OutboundEnvelope, Outcome, QueuedRecipient, RecipientStatus

SENDER = "alice@operateur.example"
RAW = b"Message-ID: <n1@operateur.example>\r\nSubject: compte rendu\r\n\r\nBonjour\r\n"


def new_message() -> NewMessage:
    return NewMessage(raw=RAW, message_id="<n1@operateur.example>", from_addr=SENDER, subject="compte rendu",
                      authentication_results="", received_at=datetime.now(UTC))


def open_node(store_url: str, blob_dir: Path) -> Store:
    """A node's store: opened and migrated as `serve` does at start-up."""
    store = Store(store_url, blob_dir)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store


@pytest.fixture
def node(store_url: str, tmp_path: Path) -> Iterator[Store]:
    store = open_node(store_url, tmp_path / "shared-blobs")
    yield store
    store.close()


# -- one blob storage per cluster ------------------------------------------------------------------


def test_a_node_with_another_blob_storage_refuses_to_start(node: Store, store_url: str, tmp_path: Path) -> None:
    node.deliver(new_message(), ["bob@operateur.example"])
    stray = Store(store_url, tmp_path / "node-local-blobs")
    try:
        with pytest.raises(BlobStorageMismatch) as refused:
            stray.migrate()
        assert "storage.blob_dir" in str(refused.value) and str(tmp_path / "node-local-blobs") in str(refused.value)
        assert stray.blobs.cluster_id() is None  # the stray directory is left unmarked
        with pytest.raises(BlobStorageMismatch):
            stray.check_blob_storage()
    finally:
        stray.close()
    same = open_node(store_url, tmp_path / "shared-blobs")  # a node on the cluster's storage starts
    same.check_blob_storage()
    same.close()


def test_a_fresh_database_and_blob_directory_are_marked_together(node: Store) -> None:
    marker = node.blobs.cluster_id()
    assert marker is not None and len(marker) == 32
    node.check_blob_storage()
    node.migrate()  # every later start compares, and agrees
    assert node.blobs.cluster_id() == marker


def test_an_upgraded_database_adopts_the_blob_directory(node: Store, store_url: str, tmp_path: Path) -> None:
    """A database from before the marker (no cluster id): the first node to start binds its blob directory."""
    node.deliver(new_message(), ["bob@operateur.example"])
    marker = node.blobs.cluster_id()
    with node.writing() as conn:  # as it was before this version
        conn.execute(delete(StoreIdentity))
    (node.blobs.root / "cluster-id").unlink()
    node.migrate()
    adopted = node.blobs.cluster_id()
    assert adopted is not None and adopted != marker
    stray = Store(store_url, tmp_path / "other-blobs")
    with pytest.raises(BlobStorageMismatch):
        stray.migrate()
    stray.close()
    # A database restored without its id, beside a marked directory: the directory's id is taken back.
    with node.writing() as conn:
        conn.execute(delete(StoreIdentity))
    node.migrate()
    assert node.blobs.cluster_id() == adopted
    node.check_blob_storage()


# -- a missing file is deferred, never bounced -----------------------------------------------------


OK = Reply.from_smtp(250, "2.0.0 ok")


class FakeTargets:
    """Stands for the peers: answers every recipient with ``reply``; remembers what it was sent."""

    def __init__(self, reply: Reply = OK) -> None:
        self.reply = reply
        self.sent: list[OutgoingMessage] = []

    async def send(self, domain: str, message: OutgoingMessage) -> list[RecipientResult]:
        self.sent.append(message)
        return [RecipientResult(r.key, self.reply, remote_mta="mx.peer.example")
                for r in message.recipients]

    async def close(self) -> None:
        pass


SETTINGS = OutboundSettings(retry_schedule=[3600.0], retry_interval=3600.0, lease=60.0)


def runner(store: Store, targets: FakeTargets, name: str,
           settings: OutboundSettings = SETTINGS) -> tuple[QueueRunner, LocalDelivery]:
    delivery = LocalDelivery(store)
    notices = Notices(store=store, delivery=delivery, hostname="mx.operateur.example", domain="operateur.example",
                      delay_warning=0)
    return QueueRunner(store=store, client=targets, settings=settings, notices=notices,  # type: ignore[arg-type]
                       owner=name, writer=delivery.executor), delivery


async def until(condition: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Wait for ``condition()`` (run in a thread: it reads the store) to be true; returns its value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition never met")
        await asyncio.sleep(0.05)


def status_of(store: Store, queue_id: str) -> tuple[RecipientStatus, int]:
    entry = store.queue.show(queue_id)
    assert entry is not None
    return entry.recipients[0].status, entry.recipients[0].attempts


def test_a_missing_message_file_is_deferred_then_delivered_once_back(
    node: Store, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    queue_id = node.queue.enqueue(RAW, OutboundEnvelope(SENDER, (QueuedRecipient("bob@clinique.example"),),
                                                        "<n1@operateur.example>", SENDER),
                                  now=now, expires_at=now + timedelta(seconds=1))  # fmt: skip
    [delivery] = node.queue.claim("peek", now=now, lease=1)
    node.queue.release("peek")
    path = node.blobs.path(delivery.blob_key)
    aside = path.with_name("aside")
    path.rename(aside)
    targets = FakeTargets()

    async def scenario() -> None:
        queue_runner, local = runner(node, targets, "node-b")
        queue_runner.start()
        try:
            await until(lambda: status_of(node, queue_id)[0] is RecipientStatus.DEFERRED)
            aside.rename(path)  # the file is back (the node that has it, or the storage that came back)
            await asyncio.to_thread(node.queue.retry, queue_id, now=datetime.now(UTC))
            queue_runner.wake()
            await until(lambda: status_of(node, queue_id)[0] is RecipientStatus.DELIVERED)
        finally:
            await queue_runner.stop()
            await local.close()

    with caplog.at_level(logging.INFO, logger="mssante_operator.smtp.queue"):
        asyncio.run(scenario())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and queue_id in r.getMessage()]
    assert errors and "missing" in errors[0].getMessage()
    assert RAW.decode() not in caplog.text  # never the content
    assert [m.raw for m in targets.sent] == [RAW]  # sent once, when the file was there
    assert node.queue.pending_notices("check", now=datetime.now(UTC), delay_warning=None) == []  # no bounce owed
    entry = node.queue.show(queue_id)
    assert entry is not None and entry.recipients[0].attempts == 2


def test_a_delay_warning_whose_file_is_missing_waits_with_one_log_line(
    node: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning is owed, but this node cannot read the message: one ERROR line (no traceback, no
    content), nothing marked, so the node that has the file sends it."""
    now = datetime.now(UTC) - timedelta(hours=2)
    queue_id = node.queue.enqueue(RAW, OutboundEnvelope(SENDER, (QueuedRecipient("bob@clinique.example"),),
                                                        "<n2@operateur.example>", SENDER),
                                  now=now, expires_at=now + timedelta(days=5))  # fmt: skip
    [delivery] = node.queue.claim("w1", now=now, lease=60)
    later = Reply.from_smtp(451, "4.4.1 later")
    node.queue.record("w1", [Outcome(delivery.recipient_id, RecipientStatus.DEFERRED, later,
                                     next_attempt_at=now + timedelta(hours=3))], now=now)
    node.blobs.path(delivery.blob_key).unlink()
    notices = Notices(store=node, delivery=LocalDelivery(node), hostname="mx.operateur.example",
                      domain="operateur.example", delay_warning=3600)
    with caplog.at_level(logging.INFO, logger="mssante_operator.smtp.notices"):
        assert asyncio.run(notices.send_pending("w1", lease=1)) == 0
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert queue_id in error.getMessage() and error.exc_info is None
    assert RAW.decode() not in caplog.text
    later = datetime.now(UTC) + timedelta(seconds=2)  # the claim ran out: still owed, to any worker
    assert [n.kind for n in node.queue.pending_notices("w2", now=later, delay_warning=3600)] == ["delay"]


# -- one final report per message and outcome -----------------------------------------------------


class RacingTargets(FakeTargets):
    """Fails every recipient permanently, but only once the other node is sending too (a barrier)."""

    def __init__(self, barrier: asyncio.Barrier) -> None:
        super().__init__(Reply.from_smtp(550, "5.1.1 no such user"))
        self.barrier = barrier

    async def send(self, domain: str, message: OutgoingMessage) -> list[RecipientResult]:
        await asyncio.wait_for(self.barrier.wait(), 30)
        return await super().send(domain, message)


def unsettled(store: Store) -> int:
    """Recipients not final yet, or whose final notice is not sent yet."""
    with store.reading() as conn:
        return conn.scalar(select(func.count()).select_from(OutboundRecipient).where(
            or_(OutboundRecipient.final_at.is_(None), OutboundRecipient.notified.is_(False))))


def test_two_nodes_finishing_one_message_send_one_report(node: Store, store_url: str, tmp_path: Path) -> None:
    """Each node fails one recipient of the same messages at the same moment: one bounce per message."""
    other = open_node(store_url, tmp_path / "shared-blobs")
    now = datetime.now(UTC)
    queue_ids = [node.queue.enqueue(RAW, OutboundEnvelope(
        SENDER, (QueuedRecipient(f"a{m}@clinique.example"), QueuedRecipient(f"b{m}@cabinet.example")),
        f"<n{m}@operateur.example>", SENDER), now=now, expires_at=now + timedelta(days=1)) for m in range(2)]

    async def scenario() -> None:
        barrier = asyncio.Barrier(2)
        one_at_a_time = SETTINGS.model_copy(update={"batch": 1})  # each node holds one recipient at a time
        runners = []
        for store, name in ((node, "node-a"), (other, "node-b")):
            queue_runner, local = runner(store, RacingTargets(barrier), name, one_at_a_time)
            runners.append((queue_runner, local))
            queue_runner.start()
        try:
            await until(lambda: unsettled(node) == 0)
        finally:
            for queue_runner, local in runners:
                await queue_runner.stop()
                await local.close()

    try:
        asyncio.run(scenario())
    finally:
        other.close()
    reports = [node.read_message(SENDER, m.uid).decode() for m in node.list_messages(SENDER)]
    assert len(reports) == len(queue_ids)  # one report per message, no more
    for m in range(len(queue_ids)):
        [report] = [r for r in reports if f"rfc822;a{m}@clinique.example" in r]
        assert f"rfc822;b{m}@cabinet.example" in report and report.count("Action: failed") == 2


# -- the report says the typed outcome -------------------------------------------------------------


def test_a_failure_whose_enhanced_code_is_of_another_class_still_gets_its_report(node: Store) -> None:
    """A peer that answers 550 with 4.1.1: the report's Status is the failure's class (5.0.0), its
    Diagnostic-Code the reply as received (the code used to be parsed back from the line: no report at all)."""
    now = datetime.now(UTC)
    node.queue.enqueue(RAW, OutboundEnvelope(SENDER, (QueuedRecipient("bob@clinique.example"),),
                                             "<n3@operateur.example>", SENDER),
                       now=now, expires_at=now + timedelta(days=5))  # fmt: skip
    [delivery] = node.queue.claim("w1", now=now, lease=60)
    confused = Reply.from_smtp(550, "4.1.1 no such user")
    node.queue.record("w1", [Outcome(delivery.recipient_id, RecipientStatus.FAILED, confused, action="failed",
                                     notice=True)], now=now)  # fmt: skip

    async def scenario() -> int:
        local = LocalDelivery(node)
        try:
            notices = Notices(store=node, delivery=local, hostname="mx.operateur.example", domain="operateur.example",
                              delay_warning=0)
            return await notices.send_pending("w1", lease=60)
        finally:
            await local.close()

    assert asyncio.run(scenario()) == 1
    [report] = [node.read_message(SENDER, m.uid).decode() for m in node.list_messages(SENDER)]
    assert "Status: 5.0.0\r\n" in report and "Diagnostic-Code: smtp; 550 4.1.1 no such user\r\n" in report
