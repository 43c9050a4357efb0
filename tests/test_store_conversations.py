"""Patient conversations (Store.conversations) on both engines: upserts, history, operator end, atomicity."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import StatementError

from mssante_base.patients.conversations import ConversationAction, ConversationEvent, ConversationStatus
from mssante_operator.store import NewMessage, Store
from mssante_operator.store.conversations import ConversationNotFound
from mssante_operator.store.queue import OutboundEnvelope, QueuedRecipient
from mssante_operator.store.submission import Submission, Submissions

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PATIENT, OTHER = "180012A12345620", "280071234567866"  # hypothetical INS with valid keys
DOCTOR, CARDIO = "dr.martin@operateur.example", "cardiologie@operateur.example"
OPEN, END = ConversationAction.OPEN, ConversationAction.END


def event(action: ConversationAction = OPEN, *, patient: str = PATIENT, mailbox: str = DOCTOR, minutes: int = 0,
          message_id: str | None = "<m1@operateur.example>", actor: str = DOCTOR) -> ConversationEvent:
    return ConversationEvent(patient, mailbox, action, message_id, actor, T0 + timedelta(minutes=minutes))


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    store = Store(store_url, tmp_path / "blobs")
    store.migrate()
    yield store
    store.close()


def test_an_open_creates_the_conversation_and_its_history(store: Store) -> None:
    assert store.conversations.status(PATIENT, DOCTOR) is None
    store.conversations.record([event()])
    assert store.conversations.status(PATIENT, DOCTOR) is ConversationStatus.OPEN
    [record] = store.conversations.ls(patient=PATIENT)
    assert (record.patient_ins, record.mailbox, record.status) == (PATIENT, DOCTOR, ConversationStatus.OPEN)
    assert (record.opened_at, record.opened_by, record.opened_by_message_id) == (T0, DOCTOR, "<m1@operateur.example>")
    assert (record.ended_at, record.ended_by, record.ended_by_message_id) == (None, None, None)
    assert record.updated_at == T0
    assert record.patient_address == "180012a12345620@patient.mssante.fr"
    assert store.conversations.history(PATIENT, DOCTOR) == [event()]


def test_end_then_reopen_keeps_every_event(store: Store) -> None:
    store.conversations.record([event()])
    store.conversations.record([event(END, minutes=5, message_id="<fin@operateur.example>")])
    [ended] = store.conversations.ls(mailbox=DOCTOR)
    assert ended.status is ConversationStatus.ENDED
    assert (ended.opened_at, ended.opened_by_message_id) == (T0, "<m1@operateur.example>")  # the opening is kept
    assert (ended.ended_at, ended.ended_by_message_id) == (T0 + timedelta(minutes=5), "<fin@operateur.example>")
    store.conversations.record([event(minutes=9, message_id="<m2@operateur.example>")])
    [reopened] = store.conversations.ls(mailbox=DOCTOR)
    assert reopened.status is ConversationStatus.OPEN
    assert (reopened.opened_at, reopened.opened_by_message_id) == (T0 + timedelta(minutes=9), "<m2@operateur.example>")
    assert (reopened.ended_at, reopened.ended_by, reopened.ended_by_message_id) == (None, None, None)
    assert [e.action for e in store.conversations.history(PATIENT, DOCTOR)] == [OPEN, END, OPEN]


def test_an_end_for_a_pair_never_opened_creates_it_ended(store: Store) -> None:
    store.conversations.record([event(END, message_id="<fin@operateur.example>")])
    [record] = store.conversations.ls()
    assert record.status is ConversationStatus.ENDED
    assert (record.opened_at, record.opened_by, record.opened_by_message_id) == (T0, DOCTOR, "<fin@operateur.example>")
    assert (record.ended_at, record.ended_by, record.ended_by_message_id) == (T0, DOCTOR, "<fin@operateur.example>")


def test_events_of_one_transaction_apply_in_order_per_pair(store: Store) -> None:
    events = [event(mailbox=CARDIO), event(), event(END, minutes=1), event(patient=OTHER, minutes=2),
              event(END, mailbox=CARDIO, minutes=3), event(mailbox=CARDIO, minutes=4)]  # fmt: skip
    store.conversations.record(events)
    assert store.conversations.statuses(PATIENT, [DOCTOR, CARDIO]) == {
        DOCTOR: ConversationStatus.ENDED, CARDIO: ConversationStatus.OPEN}  # fmt: skip
    assert store.conversations.history(PATIENT, CARDIO) == [events[0], events[4], events[5]]
    assert [(r.patient_ins, r.mailbox) for r in store.conversations.ls()] == [
        (PATIENT, CARDIO), (PATIENT, DOCTOR), (OTHER, DOCTOR)]  # fmt: skip


def test_statuses_are_keyed_by_the_mailboxes_as_given(store: Store) -> None:
    store.conversations.record([event(), event(patient=OTHER, mailbox=CARDIO)])
    asked = ["Dr.Martin@Operateur.example", CARDIO, "inconnu@operateur.example"]
    assert store.conversations.statuses(PATIENT, asked) == {"Dr.Martin@Operateur.example": ConversationStatus.OPEN}
    assert store.conversations.statuses(PATIENT, []) == {}
    assert store.conversations.status(PATIENT, "DR.MARTIN@operateur.example") is ConversationStatus.OPEN
    assert store.conversations.ls(patient=PATIENT, mailbox=CARDIO) == []


def test_an_operator_ends_a_conversation_once(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConversationNotFound, match=f"patient {PATIENT} and {DOCTOR}"):
        store.conversations.end(PATIENT, DOCTOR, actor="operator:alice", at=T0)
    store.conversations.record([event()])
    later = T0 + timedelta(hours=1)
    with caplog.at_level(logging.INFO, logger="mssante_operator.audit"):
        record = store.conversations.end(PATIENT, "Dr.Martin@operateur.example", actor="operator:alice", at=later)
    assert record.status is ConversationStatus.ENDED
    assert (record.ended_at, record.ended_by, record.ended_by_message_id) == (later, "operator:alice", None)
    assert caplog.messages == [
        f"conversation end patient={PATIENT} mailbox={DOCTOR} message_id=None actor=operator:alice"]
    again = store.conversations.end(PATIENT, DOCTOR, actor="operator:bob", at=later + timedelta(hours=1))
    assert again == record  # no change, no event
    assert store.conversations.history(PATIENT, DOCTOR)[1:] == [
        ConversationEvent(PATIENT, DOCTOR, END, None, "operator:alice", later)]


def test_each_applied_event_is_audited(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mssante_operator.audit"):
        store.conversations.record([event(), event(END, patient=OTHER, mailbox=CARDIO, actor="CN=peer")])
    assert caplog.messages == [
        f"conversation open patient={PATIENT} mailbox={DOCTOR} message_id=<m1@operateur.example> actor={DOCTOR}",
        f"conversation end patient={OTHER} mailbox={CARDIO} message_id=<m1@operateur.example> actor=CN=peer",
    ]


def test_concurrent_writers_never_collide_nor_deadlock(store: Store) -> None:
    """Every thread opens the same new pairs, in opposite orders: upserts, one lock order."""
    pairs = [(PATIENT, DOCTOR), (PATIENT, CARDIO), (OTHER, DOCTOR), (OTHER, CARDIO)]
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        ordered = pairs if index % 2 else pairs[::-1]
        try:
            for round_ in range(5):
                store.conversations.record([event(patient=p, mailbox=m, minutes=round_) for p, m in ordered])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.conversations.ls()) == 4
    assert all(len(store.conversations.history(p, m)) == 30 for p, m in pairs)


# -- committed with the message ------------------------------------------------------------------


def message(message_id: str = "<cr1@operateur.example>") -> NewMessage:
    raw = f"Message-ID: {message_id}\r\nSubject: compte rendu\r\n\r\nBonjour\r\n".encode()
    return NewMessage(raw, message_id, DOCTOR, "compte rendu", "", T0)


def test_a_submission_commits_its_conversation_events(store: Store) -> None:
    item = Submission(message(), local_recipients=(CARDIO,), conversations=(event(),))
    Submissions(store).submit_many([item])
    assert [m.message_id for m in store.list_messages(CARDIO)] == ["<cr1@operateur.example>"]
    assert store.conversations.history(PATIENT, DOCTOR) == [event()]


def test_no_conversation_without_its_message_nor_message_without_its_conversation(store: Store) -> None:
    good = Submission(message(), local_recipients=(CARDIO,), conversations=(event(),))
    unqueueable = Submission(message("<cr2@operateur.example>"), outbound=OutboundEnvelope(
        DOCTOR, (QueuedRecipient("not an address"),), "<cr2@operateur.example>", DOCTOR), expires_at=T0)
    with pytest.raises(ValueError, match="not a mailbox address"):
        Submissions(store).submit_many([good, unqueueable])  # the batch's transaction rolls back
    naive = replace(event(), at=datetime(2026, 1, 5, 9, 0))  # the store refuses it while applying
    with pytest.raises(StatementError, match="naive datetime"):
        Submissions(store).submit_many([Submission(message(), local_recipients=(CARDIO,), conversations=(naive,))])
    assert store.list_messages(CARDIO) == []
    assert store.conversations.ls() == []
    assert store.conversations.history(PATIENT, DOCTOR) == []
