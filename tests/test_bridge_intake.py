"""The LMTP intake files what a message carries: over real mutual-TLS LMTP, into the dossier and the outbox."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest
from support.bridge_kit import (
    INS,
    LMTPS,
    RunningBridge,
    address,
    fake_submission,
    fresh_bridge,
    lmtp_transaction,
    tls_for,
)
from support.filing_samples import AUTHOR, EXE, HTML, SENDER, pdf, xdm, xdm_document
from support.filing_samples import message as professional_message

from mes_bridge.filing.categories import Category
from mes_bridge.outbox import OutboxSender
from mes_bridge.settings import load_bridge_settings

ACTIVE, CORSICA = INS["active"], INS["corsica"]


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBridge]:
    with fresh_bridge(tmp_path_factory, max_message_size=4 * 1024 * 1024) as running:
        yield running


def deliver(bridge: RunningBridge, raw: bytes, *names: str) -> list[tuple[int, bytes]]:
    raw = re.sub(rb"(?<!\r)\n", b"\r\n", raw)  # the samples are built with LF line ends
    with LMTPS(bridge.lmtp_port, tls_for(bridge, "operator")) as client:
        _, replies = lmtp_transaction(client, SENDER, [address(name) for name in names], raw)
    return replies


def lab_report(message_id: str, ins: str = ACTIVE, **headers: str) -> bytes:
    report = pdf("Hémoglobine 13,2 g/dL")
    archive = xdm([xdm_document("CR_BIO.pdf", report, title="Bilan sanguin du 14 mars")], ins=ins)
    raw = professional_message([("bilan.pdf", "application/pdf", report),
                                ("IHE_XDM.ZIP", "application/zip", archive)], headers=headers)
    return raw.replace(b"<m1@hopital.mssante.fr>", message_id.encode())


def newest(bridge: RunningBridge, ins: str) -> Any:
    return bridge.service.store.messages_page(ins, limit=1)[0]


def test_a_lab_report_is_filed_under_biology_with_the_xdm_metadata(bridge: RunningBridge) -> None:
    replies = deliver(bridge, lab_report("<bio-1@labo>"), "active")
    assert [code for code, _ in replies] == [250]
    store = bridge.service.store
    message = newest(bridge, ACTIVE)
    assert message.attachments == 2 and message.from_address == SENDER
    pdf_part, zip_part = store.attachments(ACTIVE, message.id)
    assert pdf_part.detected_type == "application/pdf" and zip_part.detected_type == "application/zip"
    (document,) = [d for d in store.documents(ACTIVE) if d.message == message.id]
    assert document.category is Category.BIOLOGIE and document.title == "Bilan sanguin du 14 mars"
    assert document.author_name == AUTHOR.display_name and document.author_address == SENDER
    assert document.document_date is not None and document.document_date.year == 2025
    assert pdf_part.document == document.id and zip_part.document is None
    notices = [n for n in store.notifications(ACTIVE) if n.kind == "message"]
    assert notices and "Bilan" not in notices[-1].body and "nouveau document" in notices[-1].body


def test_other_types_stay_attachments_only(bridge: RunningBridge) -> None:
    raw = professional_message([("page.pdf", "application/pdf", HTML), ("outil.exe", "application/octet-stream", EXE),
                                ("scan.txt", "text/plain", pdf("vrai PDF"))])
    deliver(bridge, raw.replace(b"<m1@hopital.mssante.fr>", b"<types@hop>"), "active")
    store = bridge.service.store
    message = newest(bridge, ACTIVE)
    parts = store.attachments(ACTIVE, message.id)
    assert parts[0].detected_type == "text/html"
    (document,) = [d for d in store.documents(ACTIVE) if d.message == message.id]
    assert document.mime_type == "application/pdf" and document.attachment_index == parts[2].index
    assert document.category is Category.AUTR_DOC


def test_an_xdm_about_another_patient_files_nothing_and_reports_by_mdn(bridge: RunningBridge) -> None:
    raw = lab_report("<wrong-patient@labo>", ins=CORSICA, **{"Disposition-Notification-To": SENDER})
    replies = deliver(bridge, raw, "active", "corsica")
    assert [code for code, _ in replies] == [250, 250]
    store = bridge.service.store
    wrong = newest(bridge, ACTIVE)
    assert [d for d in store.documents(ACTIVE) if d.message == wrong.id] == []
    assert [d.title for d in store.documents(CORSICA) if d.message == newest(bridge, CORSICA).id] == [
        "Bilan sanguin du 14 mars"]
    (item,) = [i for i in store.outbox(ACTIVE) if i.extra["message"] == wrong.id]
    assert item.recipient == SENDER and store.outbox(CORSICA) == []
    settings = load_bridge_settings(bridge.kit["home"])
    with fake_submission(bridge.kit) as operator:
        sender = OutboxSender(store, settings.model_copy(update={"operator_submission": f"127.0.0.1:{operator.port}"}))
        assert bridge.call(sender.send_due()) >= 1
        (submitted,) = [s for s in operator.received if s.rcpt_tos == [SENDER]]
    assert submitted.mail_from == address("active")
    report = message_from_bytes(submitted.content)
    assert report.get_content_type() == "multipart/report"
    fields = report.get_payload()[1].get_payload()[0]
    assert "processed/error" in fields["Disposition"] and fields["Original-Message-ID"] == "<wrong-patient@labo>"
    assert [e.action for e in store.audit()][-1] == "mdn-sent"
    assert store.due_outbox() == []


def test_a_temporary_operator_failure_keeps_the_receipt_for_later(bridge: RunningBridge) -> None:
    store = bridge.service.store
    deliver(bridge, lab_report("<later@labo>", ins=CORSICA, **{"Disposition-Notification-To": SENDER}), "active")
    message = newest(bridge, ACTIVE)
    settings = load_bridge_settings(bridge.kit["home"])
    with fake_submission(bridge.kit, refuse={SENDER: "451 4.3.0 busy"}) as operator:
        sender = OutboxSender(store, settings.model_copy(update={"operator_submission": f"127.0.0.1:{operator.port}"}))
        assert bridge.call(sender.send_due()) == 0
    (item,) = [i for i in store.outbox(ACTIVE) if i.extra["message"] == message.id]
    assert item.attempts == 1 and item.last_error.startswith("451") and item.extra["sent_at"] is None
    assert item.next_attempt_at > item.created_at


def test_a_big_report_is_read_in_a_worker_process_and_filed(bridge: RunningBridge) -> None:
    report = pdf("Scanner thoracique", filler=os.urandom(300_000))
    archive = xdm([xdm_document("CR_IMG.pdf", report, title="Scanner thoracique", type_code="18748-4")], ins=ACTIVE)
    raw = professional_message([("scanner.pdf", "application/pdf", report),
                                ("IHE_XDM.ZIP", "application/zip", archive)])
    replies = deliver(bridge, raw.replace(b"<m1@hopital.mssante.fr>", b"<big@hop>"), "active")
    assert [code for code, _ in replies] == [250]
    assert bridge.service.pool._executor is not None  # read by the pool, not in the event loop's process
    store = bridge.service.store
    (document,) = [d for d in store.documents(ACTIVE) if d.message == newest(bridge, ACTIVE).id]
    assert document.category is Category.RADIO_SC and store.read_blob(document.blob_key) == report
