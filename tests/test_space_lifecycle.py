"""The rules of a space's life (mes_bridge.lifecycle, pure) and the store applying them on SQLite and
PostgreSQL: the code letter and its opt-out window, creation by default, activation, opposition,
closure and reactivation, the welcome message, first writers, representatives, deletion and purge.

The window and the retention are shortened through SpacePolicy, never by sleeping."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from support.bridge_kit import INS, make_ins

from mes_bridge.filing.categories import Category
from mes_bridge.lifecycle import Change, ChangeRefused, SpacePolicy, age_on, next_state, opens_space
from mes_bridge.store import ActivationRefused, BridgeStore, MessageMeta, NewDocument, NewPatient, PatientNotFound
from mssante_base.patients.ins import validate_ins
from mssante_base.patients.states import PatientState, check_patient_state

S = PatientState
PARENT, OTHER_PARENT, CHILD, PERSON = (validate_ins(INS[name]) for name in ("active", "corsica", "unknown",
                                                                              "not_activated"))
NEWBORN = validate_ins(make_ins("2230175123457"))
DOCTOR = "dr.house@hopital.mssante.fr"
WELCOME = "Bienvenue dans votre messagerie Mon espace santé"


# -- the rules ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("state", "change", "after"), [
    (S.PENDING, Change.ACTIVATE, S.ACTIVE),
    (S.PENDING, Change.OPPOSE, S.OPPOSED),
    (S.PENDING, Change.CREATE_BY_DEFAULT, S.NOT_ACTIVATED),
    (S.NOT_ACTIVATED, Change.ACTIVATE, S.ACTIVE),
    (S.NOT_ACTIVATED, Change.CLOSE, S.CLOSED),
    (S.NOT_ACTIVATED, Change.OPPOSE, S.OPPOSED),
    (S.ACTIVE, Change.CLOSE, S.CLOSED),
    (S.CLOSED, Change.ACTIVATE, S.ACTIVE),
    (S.OPPOSED, Change.ACTIVATE, S.ACTIVE),
    (S.ACTIVE, Change.DELETE, S.DELETED),
    (S.PENDING, Change.DELETE, S.DELETED),
])
def test_allowed_changes(state: PatientState, change: Change, after: PatientState) -> None:
    assert next_state(state, change) is after


@pytest.mark.parametrize(("state", "change", "words"), [
    (S.ACTIVE, Change.OPPOSE, "already active"),
    (S.ACTIVE, Change.ACTIVATE, "already active"),
    (S.NOT_ACTIVATED, Change.CREATE_BY_DEFAULT, "created by default"),
    (S.OPPOSED, Change.CLOSE, "opposed"),
    (S.DELETED, Change.ACTIVATE, "deleted"),
    (S.DELETED, Change.DELETE, "deleted"),
    (S.ACTIVE, Change.NEW_CODE, "already active"),
])
def test_refused_changes_say_why(state: PatientState, change: Change, words: str) -> None:
    with pytest.raises(ChangeRefused, match=words):
        next_state(state, change)


def test_a_space_opens_once() -> None:
    assert opens_space(S.PENDING, S.NOT_ACTIVATED, opened_before=False)
    assert opens_space(S.OPPOSED, S.ACTIVE, opened_before=False)
    assert not opens_space(S.CLOSED, S.ACTIVE, opened_before=True)  # reactivated: it had its welcome
    assert not opens_space(S.NOT_ACTIVATED, S.ACTIVE, opened_before=True)
    assert not opens_space(S.PENDING, S.OPPOSED, opened_before=False)


def test_representation_ends_at_the_configured_age() -> None:
    policy = SpacePolicy()
    assert policy.represents("2010-06-15", date(2028, 6, 14))
    assert not policy.represents("2010-06-15", date(2028, 6, 15))  # 18 today
    assert policy.represents(None, date(2028, 6, 15))  # no birth date: an agent ends it
    assert SpacePolicy(representation_until_age=0).represents("1950-01-01", date(2028, 1, 1))
    assert SpacePolicy(representation_until_age=15).represents("2010-06-15", date(2025, 6, 14))
    assert age_on(date(2008, 2, 29), date(2026, 2, 28)) == 17 and age_on(date(2008, 2, 29), date(2026, 3, 1)) == 18


def test_pending_spaces_take_no_mail() -> None:
    refusal = check_patient_state(PERSON, S.PENDING)
    assert refusal is not None and (refusal.code, refusal.enhanced) == (550, "5.1.1")
    assert check_patient_state(PERSON, S.DELETED).text == check_patient_state(PERSON, S.CLOSED).text


# -- the store ---------------------------------------------------------------------------------

def _store(url: str, root: Path, **policy: object) -> BridgeStore:
    store = BridgeStore(url, root / "blobs", policy=SpacePolicy(**policy))  # type: ignore[arg-type]
    store.seed([NewPatient(PARENT, S.ACTIVE, "Jeanne", "Martin", "$argon2id$x", email="jeanne@example.org"),
                NewPatient(OTHER_PARENT, S.ACTIVE, "Paul", "Santoni", "$argon2id$y", email="paul@example.org")])
    return store


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[BridgeStore]:
    bridge_store = _store(store_url, tmp_path)
    yield bridge_store
    bridge_store.close()


def letter(store: BridgeStore, ins=PERSON, **traits: object) -> str:
    _, code = store.create_patient(NewPatient(ins, S.NOT_ACTIVATED, "Zoé", "Durand", email="zoe@example.org",
                                              **traits), actor="operator:alice")  # type: ignore[arg-type]
    return code


def later(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def actions(store: BridgeStore, ins) -> list[str]:
    return [entry.action for entry in store.audit(ins)]


def welcomes(store: BridgeStore, ins) -> list[str]:
    return [message.subject for message in store.messages(ins) if message.no_reply]


def deliver(store: BridgeStore, ins, message_id: str, sender: str = DOCTOR, **extra: object) -> None:
    store.deliver(b"Subject: x\r\n\r\nx\r\n", [ins], MessageMeta(message_id, sender, (ins.address,), "Résultats",
                                                                 from_address=sender, from_name="Dr House"),
                  actor="CN=op", **extra)  # type: ignore[arg-type]


def test_the_letter_opens_a_window_then_the_space_is_created_by_default(store: BridgeStore) -> None:
    letter(store)
    record = store.patient(PERSON)
    assert record.state is S.PENDING and record.window_ends_at is not None
    assert record.window_ends_at - record.created_at == timedelta(weeks=6)
    assert store.messages(PERSON) == [] and store.end_windows() == []  # the window is open
    assert store.end_windows(at=later(43)) == [PERSON.value]
    record = store.patient(PERSON)
    assert record.state is S.NOT_ACTIVATED and record.window_ends_at is None and record.space_opened_at
    assert welcomes(store, PERSON) == [WELCOME]
    (notice,) = [n for n in store.notifications(PERSON.value) if n.kind == "created"]
    assert notice.email == "zoe@example.org" and "créé" in notice.subject
    created = next(entry for entry in store.audit(PERSON) if entry.action == "created-by-default")
    assert created.actor == "mes_bridge" and created.detail == {"from": "pending", "to": "not_activated"}
    assert store.end_windows(at=later(50)) == []  # once
    assert store.verify_chain().ok


def test_activation_within_the_window_opens_the_space_once(store: BridgeStore) -> None:
    code = letter(store)
    store.activate(PERSON.value, code, password_hash="$argon2id$h", email=None, actor=f"patient:{PERSON.value}")
    assert store.patient(PERSON).state is S.ACTIVE and welcomes(store, PERSON) == [WELCOME]
    assert store.end_windows(at=later(43)) == []  # no longer pending
    store.change(PERSON, Change.CLOSE, actor="operator:bob")
    assert store.patient(PERSON).state is S.CLOSED
    fresh = store.new_activation_code(PERSON, actor="operator:bob")
    store.activate(PERSON.value, fresh, password_hash="$argon2id$h", email=None, actor=f"patient:{PERSON.value}")
    assert store.patient(PERSON).state is S.ACTIVE and welcomes(store, PERSON) == [WELCOME]  # still one
    assert actions(store, PERSON) == ["patient-add", "activate", "receive", "close", "activation-code", "activate"]


def test_opposition_within_the_window_leaves_no_space(store: BridgeStore) -> None:
    code = letter(store)
    with pytest.raises(ActivationRefused):
        store.oppose_with_code(PERSON.value, "ABCDEFGHJKLM", actor="patient")
    store.oppose_with_code(PERSON.value, code, actor=f"patient:{PERSON.value}")
    assert store.patient(PERSON).state is S.OPPOSED and store.messages(PERSON) == []
    assert store.end_windows(at=later(43)) == []
    with pytest.raises(ActivationRefused):  # the code was spent by the opposition
        store.activate(PERSON.value, code, password_hash="h", email=None, actor="patient")
    fresh = store.new_activation_code(PERSON, actor="operator:bob")  # the person changed their mind
    store.activate(PERSON.value, fresh, password_hash="h", email=None, actor="patient")
    assert store.patient(PERSON).state is S.ACTIVE and welcomes(store, PERSON) == [WELCOME]


def test_activation_after_creation_by_default(store: BridgeStore) -> None:
    letter(store)
    store.end_windows(at=later(43))
    with pytest.raises(ChangeRefused):
        store.change(PERSON, Change.CREATE_BY_DEFAULT, actor="x")
    code = store.new_activation_code(PERSON, actor="operator:bob")
    store.activate(PERSON.value, code, password_hash="h", email=None, actor="patient")
    assert store.patient(PERSON).state is S.ACTIVE and welcomes(store, PERSON) == [WELCOME]


def test_codes_expire_after_their_validity(store_url: str, tmp_path: Path) -> None:
    store = _store(store_url, tmp_path, activation_code_validity=timedelta(0))
    try:
        code = letter(store)
        with pytest.raises(ActivationRefused):
            store.activate(PERSON.value, code, password_hash="h", email=None, actor="patient")
        assert store.patient(PERSON).state is S.PENDING
    finally:
        store.close()


def test_the_first_message_of_each_professional_is_announced(store: BridgeStore) -> None:
    deliver(store, PARENT, "<1@hop>")
    deliver(store, PARENT, "<2@hop>")
    deliver(store, PARENT, "<3@labo>", sender="labo@labo.mssante.fr")
    kinds = [n.kind for n in store.notifications(PARENT.value)]
    assert kinds == ["message", "first-contact", "message", "message", "first-contact"]
    (first, _) = [n for n in store.notifications(PARENT.value) if n.kind == "first-contact"]
    assert "House" not in first.body and "hop" not in first.body  # content-free


def test_a_child_is_reached_through_their_representatives(store: BridgeStore) -> None:
    birth = (date.today() - timedelta(days=365 * 8)).isoformat()
    _, code = store.create_patient(NewPatient(CHILD, S.PENDING, "Léo", "Martin", birth_date=birth),
                                   actor="operator:alice", representatives=[PARENT])
    assert [child.ins for child in store.children(PARENT.value)] == [CHILD.value]
    assert store.represents(PARENT.value, CHILD.value) and not store.represents(OTHER_PARENT.value, CHILD.value)
    with pytest.raises(ActivationRefused):  # not their child
        store.activate_child(CHILD.value, code, representative=OTHER_PARENT.value)
    record = store.activate_child(CHILD.value, code, representative=PARENT.value)
    assert record.state is S.ACTIVE and record.password_hash is None  # no login of their own
    activated = next(entry for entry in store.audit(CHILD) if entry.action == "activate")
    assert activated.actor == f"representative:{PARENT.value}"
    deliver(store, CHILD, "<child@hop>")
    emails = {n.email for n in store.notifications(CHILD.value) if n.kind == "message"}
    assert emails == {"jeanne@example.org"}  # the child's notices go to the parent
    with pytest.raises(PatientNotFound):  # a representative must have a space
        store.create_patient(NewPatient(NEWBORN, S.PENDING, birth_date=birth), actor="x",
                             representatives=[validate_ins(make_ins("1991275999888"))])
    assert store.patient(NEWBORN) is None


def test_representation_ends_at_majority(store_url: str, tmp_path: Path) -> None:
    store = _store(store_url, tmp_path, representation_until_age=18)
    try:
        adult = (date.today() - timedelta(days=365 * 19)).isoformat()
        store.create_patient(NewPatient(CHILD, S.PENDING, birth_date=adult), actor="x", representatives=[PARENT])
        assert store.children(PARENT.value) == [] and not store.represents(PARENT.value, CHILD.value)
        with pytest.raises(ValueError, match="of age"):
            store.add_representative(CHILD, OTHER_PARENT, actor="x")
    finally:
        store.close()


def blob_files(store: BridgeStore) -> set[str]:
    return {name for _, _, names in os.walk(store.blobs.root) for name in names}


def test_deletion_archives_then_the_purge_destroys(store: BridgeStore) -> None:
    deliver(store, PARENT, "<shared@hop>", documents={})
    store.deliver(b"Subject: both\r\n\r\nx\r\n", [PARENT, OTHER_PARENT],
                  MessageMeta("<both@hop>", DOCTOR, (PARENT.address, OTHER_PARENT.address), "Les deux",
                              from_address=DOCTOR), actor="CN=op",
                  documents={PARENT.value: [NewDocument(b"%PDF-1.4 x", "application/pdf", "CR", Category.CPT_REND)]})
    before = blob_files(store)
    store.start_login(PARENT.value, code="123456", ip="127.0.0.1")
    record = store.delete_space(PARENT, actor="operator:alice")
    assert record.state is S.DELETED and record.deleted_at and record.password_hash is None and record.email is None
    (notice,) = [n for n in store.notifications(PARENT.value) if n.kind == "deleted"]
    assert notice.email == "jeanne@example.org"  # told, then the address is forgotten
    with pytest.raises(ChangeRefused):
        store.delete_space(PARENT, actor="operator:alice")
    with pytest.raises(ChangeRefused):
        store.set_state(PARENT, S.ACTIVE, actor="operator:alice")
    assert store.purge() == [] and blob_files(store) == before  # archived until the retention ends
    assert store.purge(at=later(3653 + 1)) == [PARENT.value]
    tomb = store.patient(PARENT)
    assert tomb.state is S.DELETED and tomb.purged_at and tomb.given_name is None and tomb.birth_date is None
    assert store.messages(PARENT) == [] and store.all_documents(PARENT.value) == []
    assert store.notifications(PARENT.value) == []
    shared = {m.blob_key for m in store.messages(OTHER_PARENT)}
    assert shared <= blob_files(store)  # the message both received keeps its blob
    assert len(blob_files(store)) < len(before)
    assert store.verify_chain().ok and actions(store, PARENT)[-2:] == ["delete", "purge"]
    assert store.purge(at=later(4000)) == []


def test_the_migrations_build_the_schema_the_models_describe(store: BridgeStore, store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    from mes_bridge.store.schema import Base

    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()
