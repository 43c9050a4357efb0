"""`mssante-operator queue ls|show|retry|drop` on a demo kit, with messages queued through the store API."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support.harness import kit_store

from mssante_operator.cli import main
from mssante_operator.demo_kit import create_kit
from mssante_operator.outcomes import Reply
from mssante_operator.store import Store
from mssante_operator.store.queue import OutboundEnvelope, Outcome, QueuedRecipient, RecipientStatus

SECRET = "Diagnostic confidentiel du patient"
RAW = f"Message-ID: <cr1@operateur.example>\r\nSubject: {SECRET}\r\n\r\n{SECRET}\r\n".encode()
UNKNOWN = "0123456789abcdef"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("queue-cli") / "home"
    create_kit(home)
    return home


@pytest.fixture
def store(kit: Path) -> Iterator[Store]:
    """The kit's store, emptied of queued messages by each test's end."""
    with kit_store(kit) as store:
        yield store
        for entry in store.queue.entries():
            store.queue.drop(entry.queue_id)
    store.close()


def queue(store: Store, *recipients: str, sender: str = "dr.martin@operateur.example") -> str:
    envelope = OutboundEnvelope(sender, tuple(QueuedRecipient(r) for r in recipients), "<cr1@operateur.example>",
                                "dr.martin@operateur.example")  # fmt: skip
    now = datetime.now(UTC)
    return store.queue.enqueue(RAW, envelope, now=now - timedelta(minutes=3), expires_at=now + timedelta(days=5))


REFUSED = Reply.from_smtp(451, "4.4.1 clinique-ouest: connection refused")


def defer_all(store: Store, reply: Reply = REFUSED) -> None:
    now = datetime.now(UTC)
    claimed = store.queue.claim("test", now=now, lease=60)
    store.queue.record("test", [
        Outcome(d.recipient_id, RecipientStatus.DEFERRED, reply, next_attempt_at=now + timedelta(hours=1))
        for d in claimed
    ], now=now)  # fmt: skip


def run(kit: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["queue", *args, "--home", str(kit)])


def test_ls_shows_a_readable_table_and_never_the_content(kit: Path, store: Store) -> None:
    assert run(kit, "ls").stdout.strip() == "the queue is empty"
    first = queue(store, "bob@clinique-ouest.mssante.fr", "carol@clinique-ouest.mssante.fr")
    defer_all(store)
    second = queue(store, "dan@labo.mssante.fr", sender="")
    result = run(kit, "ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["QUEUE", "ID", "AGE", "SIZE"]
    assert lines[1].split()[0] == first and "dr.martin@operateur.example" in lines[1]
    assert lines[1].split()[1].startswith("3m")  # queued three minutes ago
    assert lines[2].split()[:3] == ["bob@clinique-ouest.mssante.fr", "deferred,", "1"]
    assert "next " in lines[2] and lines[2].endswith(": 451 4.4.1 clinique-ouest: connection refused")
    assert lines[4].split()[0] == second and lines[4].endswith("<>")  # the null sender of a bounce
    assert lines[5].split()[:2] == ["dan@labo.mssante.fr", "scheduled,"]
    assert SECRET not in result.output
    store.queue.claim("worker", now=datetime.now(UTC), lease=60)
    assert "    dan@labo.mssante.fr  scheduled, 0 attempt(s), being tried now\n" in run(kit, "ls").stdout
    deferred = run(kit, "ls", "--status", "deferred").stdout
    assert first in deferred and second not in deferred
    assert run(kit, "ls", "--status", "failed").stdout.strip() == "no queued message has a failed recipient"


def test_ls_json_is_one_object_per_line(kit: Path, store: Store) -> None:
    first = queue(store, "bob@clinique-ouest.mssante.fr")
    defer_all(store)
    second = queue(store, "dan@labo.mssante.fr")
    result = run(kit, "ls", "--json")
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["queue_id"] for o in objects] == [first, second]
    [bob] = objects[0]["recipients"]
    assert (bob["address"], bob["status"], bob["attempts"]) == ("bob@clinique-ouest.mssante.fr", "deferred", 1)
    assert datetime.fromisoformat(bob["next_attempt_at"]) > datetime.now(UTC)
    assert objects[1]["size"] == len(RAW) and objects[1]["sender"] == "dr.martin@operateur.example"
    scheduled = run(kit, "ls", "--json", "--status", "scheduled").stdout.splitlines()
    assert [json.loads(line)["queue_id"] for line in scheduled] == [second]
    assert SECRET not in result.output


def test_show_prints_every_recipients_state(kit: Path, store: Store) -> None:
    queue_id = queue(store, "bob@clinique-ouest.mssante.fr", "carol@clinique-ouest.mssante.fr")
    defer_all(store)
    result = run(kit, "show", queue_id)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["queue_id"] == queue_id and shown["message_id"] == "<cr1@operateur.example>"
    assert [(r["address"], r["status"], r["last_reply"]) for r in shown["recipients"]] == [
        (address, "deferred", "451 4.4.1 clinique-ouest: connection refused")
        for address in ("bob@clinique-ouest.mssante.fr", "carol@clinique-ouest.mssante.fr")
    ]
    assert {(r["last_kind"], r["last_code"], r["last_enhanced"], r["last_text"]) for r in shown["recipients"]} == {
        ("temporary", 451, "4.4.1", "clinique-ouest: connection refused")}
    assert SECRET not in result.output
    unknown = run(kit, "show", UNKNOWN)
    assert unknown.exit_code == 1 and f"{UNKNOWN}: no such queued message" in unknown.stderr


def test_retry_one_or_all(kit: Path, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mssante_operator.audit")
    first = queue(store, "bob@clinique-ouest.mssante.fr", "carol@clinique-ouest.mssante.fr")
    queue(store, "dan@labo.mssante.fr")
    defer_all(store)
    assert store.queue.claim("w", now=datetime.now(UTC), lease=60) == []
    result = run(kit, "retry", first)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "2 recipient(s) due now"
    claimed = store.queue.claim("w", now=datetime.now(UTC), lease=60)
    assert {d.address for d in claimed} == {"bob@clinique-ouest.mssante.fr", "carol@clinique-ouest.mssante.fr"}
    assert run(kit, "retry", "--all").stdout.strip() == "3 recipient(s) due now"
    assert f"queue retry queue_id={first} due=2" in caplog.text and "queue retry queue_id=all due=3" in caplog.text
    assert run(kit, "retry").exit_code == 2
    assert run(kit, "retry", first, "--all").exit_code == 2
    unknown = run(kit, "retry", UNKNOWN)
    assert unknown.exit_code == 1 and "no such queued message" in unknown.stderr


def test_drop_removes_without_asking(kit: Path, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mssante_operator.audit")
    queue_id = queue(store, "bob@clinique-ouest.mssante.fr", "carol@clinique-ouest.mssante.fr")
    kept = queue(store, "dan@labo.mssante.fr")
    [blob_key] = {d.blob_key for d in store.queue.claim("w", now=datetime.now(UTC), lease=60, limit=2)}
    result = run(kit, "drop", queue_id)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"dropped {queue_id}: from dr.martin@operateur.example to bob@clinique-ouest.mssante.fr, "
        f"carol@clinique-ouest.mssante.fr (2 recipient(s), {len(RAW)} B), no bounce sent"
    )
    assert f"queue drop queue_id={queue_id} recipients=2" in caplog.text
    assert store.queue.show(queue_id) is None and not store.blobs.path(blob_key).exists()
    assert [e.queue_id for e in store.queue.entries()] == [kept]
    again = run(kit, "drop", queue_id)
    assert again.exit_code == 1 and f"{queue_id}: no such queued message" in again.stderr
