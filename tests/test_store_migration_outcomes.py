"""Migration 0007: the queue's reply strings become typed columns, and `queue show` prints the same lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from mssante_operator.outcomes import Reply, ResultKind
from mssante_operator.store import Store
from mssante_operator.store.facade import MIGRATIONS_DIR
from mssante_operator.store.queue import OutboundEnvelope, Outcome, QueuedRecipient, RecipientStatus

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
_STATUS = {"delivered": RecipientStatus.DELIVERED, "deferred": RecipientStatus.DEFERRED,
           "failed": RecipientStatus.FAILED}
# (status, last_reply as versions before 0007 wrote it) -> the typed reply it becomes
ROWS = [
    ("scheduled", "", None),
    ("delivered", "250 2.0.0 Ok: queued as 42", Reply(ResultKind.DELIVERED, "Ok: queued as 42", 250, "2.0.0")),
    ("delivered", "250 Ok", Reply(ResultKind.DELIVERED, "Ok", 250)),
    ("deferred", "451 4.4.1 try again later", Reply(ResultKind.TEMPORARY, "try again later", 451, "4.4.1")),
    ("deferred", "connection refused by 127.0.0.1:25",
     Reply(ResultKind.TEMPORARY, "connection refused by 127.0.0.1:25")),
    ("deferred", "4.3.0 the queued message file is missing on this node; left for a node that has it",
     Reply(ResultKind.TEMPORARY, "the queued message file is missing on this node; left for a node that has it",
           enhanced="4.3.0")),
    ("failed", "550 5.1.1", Reply(ResultKind.PERMANENT, "", 550, "5.1.1")),
    ("failed", "5.4.7 gave up after 3 attempts (delivery time expired); last: 451 4.4.1 later",
     Reply(ResultKind.PERMANENT, "gave up after 3 attempts (delivery time expired); last: 451 4.4.1 later",
           enhanced="5.4.7")),
    ("failed", "domain x.example does not exist (DNS NXDOMAIN)",
     Reply(ResultKind.PERMANENT, "domain x.example does not exist (DNS NXDOMAIN)")),
    ("failed", "550 4.1.1 a peer mixing classes", Reply(ResultKind.PERMANENT, "4.1.1 a peer mixing classes", 550)),
    ("failed", "550 ", Reply(ResultKind.PERMANENT, "", 550)),
]  # fmt: skip


def _upgrade(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    engine.dispose()


def test_reply_strings_are_split_into_typed_columns(store_url: str, tmp_path: Path) -> None:
    _upgrade(store_url, "0006")
    meta = sa.MetaData()
    meta.reflect(sa.create_engine(store_url), only=["blobs", "outbound_messages", "outbound_recipients"])
    blobs, messages, recipients = (meta.tables[name] for name in ("blobs", "outbound_messages", "outbound_recipients"))
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(blobs.insert(), {"id": 1, "key": "k", "size": 1, "sha256": "0" * 64, "created_at": T0})
        conn.execute(messages.insert(), {
            "id": 1, "queue_id": "0123456789abcdef", "blob_id": 1, "sender": "a@operateur.example", "envid": None,
            "ret": None, "message_id": None, "submitted_by": "a@operateur.example", "size": 1, "created_at": T0,
            "expires_at": T0 + timedelta(days=5)})  # fmt: skip
        conn.execute(recipients.insert(), [{
            "id": n + 1, "outbound_message_id": 1, "address": f"r{n}@peer.example", "domain": "peer.example",
            "status": status, "attempts": 0 if status == "scheduled" else 1, "next_attempt_at": T0,
            "last_reply": line, "warned": False, "notified": True,
        } for n, (status, line, _) in enumerate(ROWS)])  # fmt: skip
    engine.dispose()

    store = Store(store_url, tmp_path / "blobs")
    store.migrate()
    entry = store.queue.show("0123456789abcdef")
    store.close()
    assert entry is not None
    assert [r.last_reply for r in entry.recipients] == [typed for _, _, typed in ROWS]
    assert [r.last_reply.line if r.last_reply else "" for r in entry.recipients] == [line for _, line, _ in ROWS]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_migration_goes_back_to_reply_strings(store_url: str, tmp_path: Path) -> None:
    store = Store(store_url, tmp_path / "blobs")
    store.migrate()
    recipients = tuple(QueuedRecipient(f"r{n}@peer.example") for n in range(len(ROWS)))
    store.queue.enqueue(b"Subject: x\r\n\r\nx\r\n", OutboundEnvelope("a@operateur.example", recipients, None,
                        "a@operateur.example"), now=T0, expires_at=T0 + timedelta(days=5))  # fmt: skip
    claimed = store.queue.claim("w1", now=T0, lease=60)
    store.queue.record("w1", [
        Outcome(d.recipient_id, _STATUS[status], typed, next_attempt_at=T0 + timedelta(hours=1))
        for d, (status, _, typed) in zip(claimed, ROWS, strict=True) if typed is not None
    ], now=T0)  # fmt: skip
    store.close()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0006")
        lines = conn.scalars(sa.text("SELECT last_reply FROM outbound_recipients ORDER BY id")).all()
    engine.dispose()
    assert lines == [line for _, line, _ in ROWS]
