"""The bridge's store on SQLite and PostgreSQL: seeding, states, delivery with dedup, durability."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.bridge_kit import INS

from mes_bridge.store import BridgeStore, MessageMeta, MessageRecord, NewPatient, PatientNotFound
from mssante_base.patients.ins import Ins, validate_ins
from mssante_base.patients.states import PatientState

ACTIVE, OTHER, UNKNOWN = (validate_ins(INS[name]) for name in ("active", "not_activated", "unknown"))


def meta(message_id: str | None = "<m@x.test>") -> MessageMeta:
    return MessageMeta(message_id=message_id, sender="dr@x.test", recipients=(ACTIVE.address,), subject="S")


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[BridgeStore]:
    bridge_store = BridgeStore(store_url, tmp_path / "blobs")
    bridge_store.seed([NewPatient(ACTIVE, PatientState.ACTIVE, "Jeanne", "Martin", "$argon2id$x"),
                       NewPatient(OTHER, PatientState.NOT_ACTIVATED)])
    yield bridge_store
    bridge_store.close()


def blob_files(store: BridgeStore) -> list[str]:
    return [name for _, _, names in os.walk(store.blobs.root) for name in names]


def received(store: BridgeStore, ins: Ins, direction: str = "in") -> list[MessageRecord]:
    """The space's messages but the welcome each seeded space holds."""
    return [message for message in store.messages(ins, direction) if not message.no_reply]


def test_seeded_spaces_that_take_mail_hold_their_welcome_message(store: BridgeStore) -> None:
    for ins in (ACTIVE, OTHER):
        (welcome,) = store.messages(ins)
        assert welcome.no_reply and welcome.subject == "Bienvenue dans votre messagerie Mon espace santé"
        assert store.patient(ins).space_opened_at is not None
    assert len(blob_files(store)) == 2


def test_seed_never_overwrites_a_known_patient(store: BridgeStore) -> None:
    store.set_state(ACTIVE, PatientState.CLOSED, actor="test")
    added = store.seed([NewPatient(ACTIVE, PatientState.ACTIVE), NewPatient(UNKNOWN, PatientState.OPPOSED)])
    assert added == [UNKNOWN.value]
    assert store.patient(ACTIVE).state is PatientState.CLOSED
    assert store.patient(ACTIVE).display_name == "Jeanne Martin"
    assert [p.ins for p in store.patients()] == sorted([ACTIVE.value, OTHER.value, UNKNOWN.value])


def test_set_state_is_audited_and_unknown_patients_are_refused(store: BridgeStore) -> None:
    record = store.set_state(OTHER, PatientState.ACTIVE, actor="operator:alice")
    assert record.state is PatientState.ACTIVE
    (row,) = [r for r in store.audit(OTHER) if r.action == "patient-state"]
    assert row.actor == "operator:alice"
    assert row.detail == {"from": "not_activated", "to": "active"}
    with pytest.raises(PatientNotFound):
        store.set_state(UNKNOWN, PatientState.ACTIVE, actor="x")
    for state in (PatientState.UNKNOWN, PatientState.PENDING, PatientState.DELETED):
        with pytest.raises(ValueError, match="cannot be set directly"):
            store.set_state(OTHER, state, actor="x")


def test_deliver_shares_one_blob_and_deduplicates(store: BridgeStore) -> None:
    welcomes = len(blob_files(store))
    assert store.deliver(b"raw one\r\n", [ACTIVE, OTHER], meta(), actor="op") == {ACTIVE.value: True,
                                                                                  OTHER.value: True}
    assert len(blob_files(store)) == welcomes + 1
    assert store.deliver(b"raw one\r\n", [ACTIVE, OTHER], meta(), actor="op") == {ACTIVE.value: False,
                                                                                  OTHER.value: False}
    assert len(blob_files(store)) == welcomes + 1  # nothing new: no blob written
    (message,) = received(store, ACTIVE)
    assert store.blobs.read(message.blob_key) == b"raw one\r\n"
    assert (message.direction, message.sender, message.recipients, message.size) == ("in", "dr@x.test",
                                                                                     (ACTIVE.address,), 9)


def test_messages_without_message_id_are_all_kept(store: BridgeStore) -> None:
    for _ in range(2):
        assert store.deliver(b"x\r\n", [ACTIVE], meta(None), actor="op") == {ACTIVE.value: True}
    assert len(received(store, ACTIVE)) == 2


def test_sent_and_received_are_apart(store: BridgeStore) -> None:
    assert store.record_sent(b"out\r\n", ACTIVE, meta(), actor="patient") is True
    assert store.deliver(b"in\r\n", [ACTIVE], meta(), actor="op") == {ACTIVE.value: True}
    assert [m.direction for m in store.messages(ACTIVE, "out")] == ["out"]
    assert [m.direction for m in received(store, ACTIVE)] == ["in"]


def test_a_failed_commit_leaves_no_row_and_no_blob(store: BridgeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    welcomes = sorted(blob_files(store))
    monkeypatch.setattr(store, "_audit", broken)
    with pytest.raises(RuntimeError):
        store.deliver(b"lost\r\n", [ACTIVE], meta("<lost@x.test>"), actor="op")
    assert received(store, ACTIVE) == []
    assert sorted(blob_files(store)) == welcomes
