"""Patients' messages through a stand-in for the operator's submission listener (implicit TLS, AUTH EXTERNAL)."""

from __future__ import annotations

import asyncio
import email
from email.policy import default as default_policy
from pathlib import Path

import pytest
from support.bridge_kit import INS, fake_submission, make_bridge_home

from mes_bridge.outgoing import BridgeSendError, PatientCannotSend, build_patient_message, send_patient_message
from mes_bridge.service import open_store, seed_patients
from mes_bridge.settings import BridgeSettings, load_bridge_settings
from mssante_base.patients.ins import validate_ins
from mssante_operator.demo_kit import free_ports

DOCTOR = "dr.martin@hopital.operator.test"
OTHER = "dr.durand@clinique.operator.test"
REFUSAL = "550 5.7.1 A patient may write only to a professional who wrote to them first"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    kit = make_bridge_home(tmp_path_factory.mktemp("bridge") / "home")
    store = open_store(load_bridge_settings(kit["home"]))
    seed_patients(load_bridge_settings(kit["home"]), store)
    store.close()
    return kit


def settings_for(kit: dict, port: int) -> BridgeSettings:
    return load_bridge_settings(kit["home"]).model_copy(update={"operator_submission": f"127.0.0.1:{port}"})


def send(settings: BridgeSettings, name: str = "active", to: tuple[str, ...] = (DOCTOR,), **kwargs: object):
    return asyncio.run(send_patient_message(
        settings, ins=validate_ins(INS[name]), to=to, subject=kwargs.pop("subject", "Question"),
        body=kwargs.pop("body", "Bonjour docteur, une question sur mon traitement."), **kwargs,
    ))


def test_message_is_from_the_patient_with_a_reply_context(kit: dict) -> None:
    store = open_store(load_bridge_settings(kit["home"]))
    try:
        patient = store.patient(INS["active"])
    finally:
        store.close()
    message = build_patient_message(patient, to=[DOCTOR], subject="Re: Résultats", body="Merci, docteur.",
                                    attachments=[("ordonnance.pdf", b"%PDF-1.4 test", "application/pdf")],
                                    in_reply_to="<m1@operator.test>")
    assert message["From"].addresses[0].addr_spec == f"{INS['active']}@patient.mssante.fr"
    assert message["From"].addresses[0].display_name == "Jeanne Active"
    assert message["Message-ID"].endswith("@patient.mssante.fr>")
    assert message["In-Reply-To"] == message["References"] == "<m1@operator.test>"
    assert message["Date"]
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "ordonnance.pdf"
    assert attachment.get_content() == b"%PDF-1.4 test"


def test_send_reports_each_recipient_and_records_what_was_sent(kit: dict) -> None:
    with fake_submission(kit, refuse={OTHER: REFUSAL}) as operator:
        outcome = send(settings_for(kit, operator.port), to=(DOCTOR, OTHER),
                       attachments=[("photo.jpg", b"\xff\xd8\xff jpeg", "image/jpeg")])
    assert outcome.accepted == (DOCTOR,)
    assert outcome.refused == {OTHER: REFUSAL}
    (received,) = operator.received
    assert received.mail_from == f"{INS['active']}@patient.mssante.fr"
    assert received.rcpt_tos == [DOCTOR]
    assert received.authenticated_dn == kit["parties"]["bridge"].dn
    parsed = email.message_from_bytes(received.content, policy=default_policy)
    assert parsed["Message-ID"] == outcome.message_id
    assert b"\r\n" in received.content and b"\n" not in received.content.replace(b"\r\n", b"")
    store = open_store(load_bridge_settings(kit["home"]))
    try:
        ins = validate_ins(INS["active"])
        (sent,) = [m for m in store.messages(ins, "out") if m.message_id == outcome.message_id]
        assert sent.recipients == (DOCTOR,)
        assert store.blobs.read(sent.blob_key) == received.content
        assert any(row.action == "send" for row in store.audit(ins))
    finally:
        store.close()


def test_every_recipient_refused_sends_no_data_and_records_nothing(kit: dict) -> None:
    with fake_submission(kit, refuse={OTHER: REFUSAL, DOCTOR: "451 4.4.3 try later"}) as operator:
        outcome = send(settings_for(kit, operator.port), to=(DOCTOR, OTHER))
    assert outcome.accepted == ()
    assert outcome.refused == {OTHER: REFUSAL, DOCTOR: "451 4.4.3 try later"}
    assert operator.received == []
    store = open_store(load_bridge_settings(kit["home"]))
    try:
        assert not [m for m in store.messages(validate_ins(INS["active"]), "out")
                    if m.message_id == outcome.message_id]
    finally:
        store.close()


def test_auth_external_refused_is_a_permanent_error(kit: dict) -> None:
    with fake_submission(kit, expected="operator") as operator, pytest.raises(BridgeSendError) as caught:
        send(settings_for(kit, operator.port))
    assert caught.value.code == 535
    assert not caught.value.temporary
    assert caught.value.reply.startswith("535 5.7.8")


def test_unreachable_operator(kit: dict) -> None:
    (port,) = free_ports(1)
    with pytest.raises(BridgeSendError) as caught:
        send(settings_for(kit, port))
    assert caught.value.unreachable and caught.value.temporary


@pytest.mark.parametrize("name", ["not_activated", "opposed", "unknown"])
def test_only_an_active_patient_can_send(kit: dict, name: str, tmp_path: Path) -> None:
    with pytest.raises(PatientCannotSend):
        send(settings_for(kit, 1), name=name)
