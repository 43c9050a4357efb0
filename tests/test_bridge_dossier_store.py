"""The bridge's dossier store on SQLite and PostgreSQL: activation, login challenges, delivery with documents,
reading limited to the patient's own rows, visibility, the read-receipt outbox and the audit chain."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from support.bridge_kit import INS

from mes_bridge.filing.categories import Category
from mes_bridge.store import (
    ActivationRefused,
    BridgeStore,
    DocumentFilter,
    DocumentNotFound,
    MessageMeta,
    NewAttachment,
    NewDocument,
    NewPatient,
)
from mssante_base.patients.ins import validate_ins
from mssante_base.patients.states import PatientState

ACTIVE, OTHER, NEWCOMER = (validate_ins(INS[name]) for name in ("active", "corsica", "unknown"))
DOCTOR = "dr.house@hopital.mssante.fr"
LAB = "resultats@labo.mssante.fr"


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[BridgeStore]:
    bridge_store = BridgeStore(store_url, tmp_path / "blobs")
    bridge_store.seed([NewPatient(ACTIVE, PatientState.ACTIVE, "Jeanne", "Martin", "$argon2id$x",
                                  email="jeanne@example.org"),
                       NewPatient(OTHER, PatientState.ACTIVE, "Paul", "Santoni", email="paul@example.org")])
    yield bridge_store
    bridge_store.close()


def meta(message_id: str, sender: str = DOCTOR, *, ends: bool = False, name: str = "Dr House") -> MessageMeta:
    return MessageMeta(message_id=message_id, sender=sender, recipients=(ACTIVE.address,), subject="Résultats",
                       from_address=sender, from_name=name, ends_exchange=ends, attachments=1)


def pdf(title: str = "Bilan", data: bytes = b"%PDF-1.4 bilan", **extra: object) -> NewDocument:
    return NewDocument(data=data, mime_type="application/pdf", title=title, category=Category.BIOLOGIE,
                       filename=f"{title}.pdf", author_address=LAB, author_name="Labo", attachment_index=0,
                       **extra)  # type: ignore[arg-type]


def deliver(store: BridgeStore, message_id: str, *documents: NewDocument, sender: str = LAB,
            ends: bool = False, to: tuple = (ACTIVE,)) -> int:
    store.deliver(b"Subject: x\r\n\r\nbody\r\n", list(to), meta(message_id, sender, ends=ends), actor="CN=op",
                  attachments=[NewAttachment(0, "bilan.pdf", "application/pdf", 14)],
                  documents={ins.value: list(documents) for ins in to})
    return store.messages_page(to[0].value, limit=1)[0].id


def test_create_and_activate_with_the_provisional_code(store: BridgeStore) -> None:
    record, code = store.create_patient(NewPatient(NEWCOMER, PatientState.NOT_ACTIVATED, "Zoé", "Durand",
                                                   birth_date="1999-08-01", sex="F"), actor="operator:alice")
    assert len(code) == 12 and code.isalnum() and code.isupper()
    assert record.state is PatientState.PENDING and record.birth_date == "1999-08-01"  # the letter: window open
    with pytest.raises(ActivationRefused):
        store.activate(NEWCOMER.value, "WRONGCODE123", password_hash="h", email=None, actor="patient")
    with pytest.raises(ActivationRefused):  # same words for an unknown or active space
        store.activate(ACTIVE.value, code, password_hash="h", email=None, actor="patient")
    typed = f"{code[:4]}-{code[4:8]} {code[8:].lower()}"
    active = store.activate(NEWCOMER.value, typed, password_hash="$argon2id$h", email="zoe@example.org",
                            actor="patient")
    assert active.state is PatientState.ACTIVE and active.activated_at is not None
    assert active.email == "zoe@example.org"
    with pytest.raises(ActivationRefused):  # spent
        store.activate(NEWCOMER.value, code, password_hash="h", email=None, actor="patient")
    with pytest.raises(ValueError, match="already exists"):
        store.create_patient(NewPatient(NEWCOMER, PatientState.NOT_ACTIVATED), actor="operator:alice")
    assert [entry.action for entry in store.audit(NEWCOMER)] == ["patient-add", "activate", "receive"]  # welcome


def test_login_challenge_sends_the_code_to_the_outbox_and_is_spent_once(store: BridgeStore) -> None:
    challenge_id = store.start_login(ACTIVE.value, code="123456", ip="127.0.0.1")
    (notice,) = [n for n in store.notifications(ACTIVE.value) if n.kind == "login-code"]
    assert "123456" in notice.body and notice.email == "jeanne@example.org"
    challenge = store.login_challenge(challenge_id)
    assert challenge is not None and challenge.ins == ACTIVE.value and challenge.code_hash != "123456"
    assert store.login_attempt_failed(challenge_id) == 1
    store.finish_login(challenge_id, ip="127.0.0.1")
    assert store.login_challenge(challenge_id) is None
    assert store.login_challenge("no-such-challenge") is None
    expired = store.start_login(ACTIVE.value, code="000000", ttl_seconds=-1, ip="127.0.0.1")
    assert store.login_challenge(expired) is None


def test_delivery_files_documents_links_attachments_and_notifies_without_content(store: BridgeStore) -> None:
    message = deliver(store, "<r1@labo>", pdf())
    (attachment,) = store.attachments(ACTIVE.value, message)
    (document,) = store.documents(ACTIVE.value)
    assert attachment.document == document.id and attachment.detected_type == "application/pdf"
    assert document.message == message and document.deposited_by == LAB and document.category is Category.BIOLOGIE
    assert store.read_blob(document.blob_key) == b"%PDF-1.4 bilan"
    (notice,) = [n for n in store.notifications(ACTIVE.value) if n.kind == "message"]
    assert "Bilan" not in notice.body and "Labo" not in notice.body and "nouveau document" in notice.body
    actions = [entry.action for entry in store.audit(ACTIVE)]
    assert actions[-4:] == ["receive", "deposit", "notify", "notify"]  # the message, then the first writer's notice
    assert [n.kind for n in store.notifications(ACTIVE.value)][-2:] == ["message", "first-contact"]
    deposit = store.audit(ACTIVE)[-3]
    assert deposit.actor == f"professional:{LAB}" and deposit.detail["document"] == document.id


def test_a_duplicate_delivery_files_nothing_twice(store: BridgeStore) -> None:
    deliver(store, "<twice@labo>", pdf())
    deliver(store, "<twice@labo>", pdf())
    assert store.count_messages(ACTIVE.value) == 1 + 1 and store.count_documents(ACTIVE.value) == 1  # + welcome
    blobs = [name for _, _, names in os.walk(store.blobs.root) for name in names]
    assert len(blobs) == 2 + 2  # the message and the document, once (and the two spaces' welcomes)


def test_another_patients_ids_are_never_reachable(store: BridgeStore) -> None:
    message = deliver(store, "<mine@labo>", pdf())
    document = store.documents(ACTIVE.value)[0].id
    assert store.message(OTHER.value, message) is None
    assert store.attachments(OTHER.value, message) == []
    assert store.document(OTHER.value, document) is None
    assert store.open_message(OTHER.value, message, actor="patient:x") is False
    with pytest.raises(DocumentNotFound):
        store.set_masked(OTHER.value, document, True, actor="patient:x")
    assert store.thread(OTHER.value, LAB) == [] and store.conversations(OTHER.value) == []
    assert store.message(ACTIVE.value, message).read_at is None


def test_hidden_documents_wait_for_release_and_masking_is_audited(store: BridgeStore) -> None:
    deliver(store, "<hidden@labo>", pdf("Annonce", b"%PDF-1.4 annonce", hidden_from_patient=True))
    assert store.documents(ACTIVE.value) == [] and store.count_documents(ACTIVE.value) == 0
    assert "deposit" not in [entry.action for entry in store.history(ACTIVE.value)]
    assert store.count_history(ACTIVE.value) == len(store.history(ACTIVE.value))
    (hidden,) = store.all_documents(ACTIVE.value)
    assert store.document(ACTIVE.value, hidden.id) is None
    with pytest.raises(DocumentNotFound):
        store.set_masked(ACTIVE.value, hidden.id, True, actor=f"patient:{ACTIVE.value}")
    store.release(ACTIVE.value, hidden.id, actor="professional:dr@x")
    masked = store.set_masked(ACTIVE.value, hidden.id, True, actor=f"patient:{ACTIVE.value}")
    assert masked.masked_from_professionals and not masked.hidden_from_patient
    assert [entry.action for entry in store.audit(ACTIVE)][-2:] == ["release", "mask"]
    assert "deposit" in [entry.action for entry in store.history(ACTIVE.value)]


def test_documents_filters_counts_and_authors(store: BridgeStore) -> None:
    deliver(store, "<a@labo>", pdf("A", b"%PDF a"))
    deliver(store, "<b@hop>", NewDocument(data=b"%PDF b", mime_type="application/pdf", title="CR",
                                          category=Category.CPT_REND, author_address=DOCTOR), sender=DOCTOR)
    store.file_document(ACTIVE.value, NewDocument(data=b"photo", mime_type="image/jpeg", title="Ordonnance",
                                                  category=Category.ORD_SOIN), actor=f"patient:{ACTIVE.value}")
    assert [d.title for d in store.documents(ACTIVE.value)] == ["Ordonnance", "CR", "A"]
    assert [d.title for d in store.documents(ACTIVE.value, DocumentFilter(category=Category.BIOLOGIE))] == ["A"]
    assert [d.title for d in store.documents(ACTIVE.value, DocumentFilter(author="patient"))] == ["Ordonnance"]
    assert [d.title for d in store.documents(ACTIVE.value, DocumentFilter(author=DOCTOR.upper()))] == ["CR"]
    future = datetime.now(UTC) + timedelta(days=1)
    assert store.count_documents(ACTIVE.value, DocumentFilter(since=future)) == 0
    assert store.documents(ACTIVE.value, offset=1, limit=1)[0].title == "CR"
    counts = store.category_counts(ACTIVE.value)
    assert counts[Category.BIOLOGIE] == 1 and counts[Category.ORD_SOIN] == 1 and counts[Category.SYNTHESE] == 0
    assert next(address for address, _ in store.authors(ACTIVE.value)) == "patient"
    assert {address for address, _ in store.authors(ACTIVE.value)} == {"patient", LAB, DOCTOR}


def test_first_opening_queues_the_read_receipt_once(store: BridgeStore) -> None:
    message = deliver(store, "<dnt@labo>", pdf())
    assert store.open_message(ACTIVE.value, message, actor="p", mdn=b"MDN", mdn_to=LAB) is True
    assert store.open_message(ACTIVE.value, message, actor="p", mdn=b"MDN", mdn_to=LAB) is False
    (item,) = store.due_outbox()
    assert item.recipient == LAB and item.raw == b"MDN" and item.extra["message"] == message
    store.outbox_failed(item, "451 4.4.1 try later", retry_at=datetime.now(UTC) + timedelta(minutes=5))
    assert store.due_outbox() == []
    (item,) = store.due_outbox(at=datetime.now(UTC) + timedelta(minutes=6))
    store.outbox_sent(item)
    assert store.due_outbox(at=datetime.now(UTC) + timedelta(days=1)) == []
    assert [e.action for e in store.audit(ACTIVE)][-4:] == ["view-message", "mdn-queued", "view-message", "mdn-sent"]
    assert store.count_messages(ACTIVE.value, unread_only=True) == 1  # the welcome, still unread


def test_conversations_follow_the_last_message_of_each_mailbox(store: BridgeStore) -> None:
    deliver(store, "<1@hop>", sender=DOCTOR)
    deliver(store, "<2@labo>", sender=LAB)
    deliver(store, "<3@hop>", sender=DOCTOR, ends=True)
    store.record_sent(b"reply", ACTIVE, MessageMeta(message_id="<p@patient>", sender=ACTIVE.address,
                                                    recipients=(LAB.upper(),), subject="Merci",
                                                    from_address=ACTIVE.address), actor="patient")
    summaries = {s.mailbox: s for s in store.conversations(ACTIVE.value)}
    assert summaries[DOCTOR].open is False and summaries[DOCTOR].messages == 2 and summaries[DOCTOR].unread == 2
    assert summaries[LAB].open is True
    assert [s.mailbox for s in store.conversations(ACTIVE.value)] == [DOCTOR, LAB]
    assert [m.direction for m in store.thread(ACTIVE.value, LAB)] == ["in", "out"]
    deliver(store, "<4@hop>", sender=DOCTOR)
    assert store.conversation(ACTIVE.value, DOCTOR.upper()).open is True


def test_the_audit_chain_verifies_and_is_append_only(store: BridgeStore, store_url: str) -> None:
    deliver(store, "<chain@labo>", pdf())
    report = store.verify_chain()
    assert report.ok and report.entries == len(store.audit())
    engine = sa.create_engine(store_url)
    with engine.begin() as conn, pytest.raises(sa.exc.DBAPIError, match="append-only"):
        conn.execute(sa.text("UPDATE bridge_audit SET actor = 'someone else'"))
    with engine.begin() as conn, pytest.raises(sa.exc.DBAPIError, match="append-only"):
        conn.execute(sa.text("DELETE FROM bridge_audit"))
    # Tampering around the triggers (a hand-edited file) is what the chain shows.
    with engine.begin() as conn:
        trigger_names = ("bridge_audit_no_update",) if engine.dialect.name == "sqlite" else ()
        for name in trigger_names:
            conn.execute(sa.text(f"DROP TRIGGER {name}"))
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("ALTER TABLE bridge_audit DISABLE TRIGGER bridge_audit_no_change"))
        target = conn.execute(sa.text("SELECT min(id) FROM bridge_audit WHERE action = 'deposit'")).scalar()
        conn.execute(sa.text("UPDATE bridge_audit SET detail = '{}' WHERE id = :id"), {"id": target})
    engine.dispose()
    report = store.verify_chain()
    assert not report.ok and report.first_bad == target and "modified" in report.reason


def test_a_database_from_before_migrations_is_upgraded_and_its_audit_chained(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the schema of the first mes_bridge (create_all, no alembic_version)
        conn.execute(sa.text("CREATE TABLE bridge_patients (ins VARCHAR(15) PRIMARY KEY, state VARCHAR(16) NOT NULL,"
                             " given_name VARCHAR(200), family_name VARCHAR(200), password_hash VARCHAR(300),"
                             " created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL)"))
        conn.execute(sa.text("CREATE TABLE bridge_messages (id INTEGER PRIMARY KEY, ins VARCHAR(15) NOT NULL,"
                             " direction VARCHAR(3) NOT NULL, message_id VARCHAR(1000), sender TEXT NOT NULL,"
                             " recipients TEXT NOT NULL, subject TEXT NOT NULL, size INTEGER NOT NULL,"
                             " blob_key VARCHAR(32) NOT NULL, at DATETIME NOT NULL,"
                             " UNIQUE (ins, direction, message_id))"))
        conn.execute(sa.text("CREATE TABLE bridge_audit (id INTEGER PRIMARY KEY, at DATETIME NOT NULL,"
                             " actor TEXT NOT NULL, action VARCHAR(32) NOT NULL, ins VARCHAR(15),"
                             " detail TEXT NOT NULL)"))
        conn.execute(sa.text("INSERT INTO bridge_patients VALUES (:ins, 'active', 'A', 'B', NULL,"
                             " '2026-11-01 10:00:00.000000', '2026-11-01 10:00:00.000000')"), {"ins": ACTIVE.value})
        conn.execute(sa.text("INSERT INTO bridge_audit (at, actor, action, ins, detail) VALUES"
                             " ('2026-11-01 10:00:00.000000', 'seed', 'patient-add', :ins, 'state=active')"),
                     {"ins": ACTIVE.value})
    engine.dispose()
    store = BridgeStore(url, tmp_path / "blobs")
    try:
        assert store.patient(ACTIVE).state is PatientState.ACTIVE
        assert store.audit(ACTIVE)[0].detail == {"text": "state=active"}
        deliver(store, "<after@labo>", pdf())
        assert store.verify_chain().ok
    finally:
        store.close()


def test_an_archive_holding_a_hidden_document_is_withheld_with_the_pdf_filed_beside_it(store: BridgeStore) -> None:
    """The readable PDF sent beside an IHE_XDM.ZIP is filed with the archive's metadata: when that says
    INVISIBLE_REP_LEGAUX, the PDF and the archive (which holds the same document) are withheld alike."""
    from mes_bridge.store import Audience

    store.deliver(b"Subject: x\r\n\r\nx\r\n", [ACTIVE], meta("<xdm@labo>", LAB), actor="CN=op",
                  attachments=[NewAttachment(0, "cr.pdf", "application/pdf", 14),
                               NewAttachment(1, "IHE_XDM.ZIP", "application/zip", 900),
                               NewAttachment(2, "notes.txt", "text/plain", 10)],
                  documents={ACTIVE.value: [pdf("CR", hidden_from_legal_reps=True, xdm_unique_id="1.2.3")]})
    message = store.messages_page(ACTIVE.value, limit=1)[0].id
    assert store.withheld_attachments(ACTIVE.value, message, Audience.PATIENT) == set()
    assert store.withheld_attachments(ACTIVE.value, message, Audience.REPRESENTATIVE) == {0, 1}
