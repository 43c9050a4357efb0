"""The one message pipeline: each listener's ordered checks per stage, refusals that name their check, the one
recipient router, the transaction kept on the envelope, the one annuaire lookup."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope, Session

from mes_bridge.lmtp import IntakeHandler, intake_transaction
from mes_bridge.store import PatientRecord
from mssante_base.annuaire import AnnuaireUnavailable, MailboxEntry
from mssante_base.errors import Refusal
from mssante_base.message import headers
from mssante_base.patients.ins import PATIENT_DOMAIN
from mssante_base.patients.states import PatientState
from mssante_operator.smtp import mta, policy, submission
from mssante_operator.smtp.checks import Check, check, run_checks
from mssante_operator.smtp.directory import lookup_mailbox
from mssante_operator.smtp.mta import MtaContext, MtaHandler
from mssante_operator.smtp.router import PATIENT_PATH_CLOSED, Route, Target, route_recipient
from mssante_operator.smtp.transaction import Transaction, begin, current
from mssante_operator.trust_space.liste_blanche import ListeBlanche

ROOT = Path(__file__).resolve().parent
while not (ROOT / "pyproject.toml").exists():
    ROOT = ROOT.parent

NIR = "288091234567894"


def names(checks: tuple[Check, ...]) -> list[str]:
    return [each.name for each in checks]


def test_the_mta_checks_in_order() -> None:
    assert names(mta.MAIL_CHECKS) == ["peer_certificate", "sender_domain"]
    assert names(mta.RCPT_CHECKS) == ["recipient_count", "route", "patient_recipient", "patient_writer",
                                      "local_mailbox"]
    assert names(mta.DATA_CHECKS) == ["tls_required", "line_endings", "from_header", "dkim", "patient_content",
                                      "patient_author"]


def test_the_submission_checks_in_order() -> None:
    assert names(submission.MAIL_CHECKS) == ["envelope_sender"]
    assert names(submission.RCPT_CHECKS) == ["recipient_count", "route", "patient_to_patient", "patient_recipient",
                                             "patient_writer", "local_mailbox", "patient_reply"]
    assert names(submission.DATA_CHECKS) == ["line_endings", "header_senders", "patient_from", "xdm_content"]


def test_the_lmtp_intake_checks_in_order() -> None:
    handler = IntakeHandler(SimpleNamespace())  # type: ignore[arg-type]
    assert [name for name, _ in handler.rcpt_checks] == [
        "patient_address", "recipient_count", "patient_ins", "patient_registry", "patient_state"]


def test_a_refusal_carries_the_name_of_its_check_and_stops_the_list() -> None:
    ran: list[str] = []

    @check("first")
    async def first(tx: Transaction) -> None:
        ran.append("first")

    @check("second")
    async def second(tx: Transaction) -> None:
        ran.append("second")
        raise policy.ANNUAIRE_DOWN

    @check("third")
    async def third(tx: Transaction) -> None:
        ran.append("third")

    with pytest.raises(Refusal) as caught:
        asyncio.run(run_checks((first, second, third), Transaction(peer=None, principal=None, mail_from="a@b.fr")))
    assert caught.value.check == "second" and caught.value == policy.ANNUAIRE_DOWN
    assert caught.value.reply == policy.ANNUAIRE_DOWN.reply and ran == ["first", "second"]


def mta_handler(**overrides: Any) -> MtaHandler:
    context: dict[str, Any] = dict(
        hostname="mx.example.fr", local_domains=["example.fr"], max_recipients=2, annuaire=None,
        liste_blanche=lambda: ListeBlanche(None, {}, ()), revocations=None, dkim_keys=None, delivery=None)
    return MtaHandler(MtaContext(**{**context, **overrides}))


def test_the_mta_logs_the_check_that_refused(caplog: pytest.LogCaptureFixture) -> None:
    session, envelope = Session(asyncio.new_event_loop()), Envelope()
    session.peer_tls = None  # type: ignore[attr-defined]  # no TLS
    with caplog.at_level(logging.INFO, logger="mssante_operator.smtp.mta"):
        reply = asyncio.run(mta_handler().handle_MAIL(None, session, envelope, "a@peer.fr", []))  # type: ignore[arg-type]
    assert reply == policy.TLS_REQUIRED.reply
    assert "mail refused" in caplog.text and "check=peer_certificate" in caplog.text
    assert envelope.mail_from is None  # no transaction begun


class DownAnnuaire:
    """An annuaire that cannot answer (only ``lookup`` is asked)."""

    async def lookup(self, address: str) -> MailboxEntry | None:
        raise AnnuaireUnavailable("ldap://annuaire: timed out")


def test_the_one_annuaire_lookup_maps_unavailable_to_451() -> None:
    with pytest.raises(Refusal) as caught:
        asyncio.run(lookup_mailbox(DownAnnuaire(), "dr@example.fr"))  # type: ignore[arg-type]
    assert caught.value == policy.ANNUAIRE_DOWN


def test_an_mta_recipient_refused_by_the_annuaire_names_its_check(caplog: pytest.LogCaptureFixture) -> None:
    envelope = Envelope()
    begin(envelope, Transaction(peer=None, principal=None, mail_from="a@peer.fr"))
    with caplog.at_level(logging.INFO, logger="mssante_operator.smtp.mta"):
        reply = asyncio.run(mta_handler(annuaire=DownAnnuaire()).handle_RCPT(
            None, None, envelope, "Dr@Example.fr", []))  # type: ignore[arg-type]
    assert reply == policy.ANNUAIRE_DOWN.reply and "check=local_mailbox" in caplog.text
    assert envelope.rcpt_tos == [] and current(envelope).recipients == {}


def test_the_router_for_mail_from_peers_never_relays() -> None:
    local = ["example.fr"]
    assert route_recipient("dr@Example.FR", local_domains=local, liste=None) == Route(Target.LOCAL, "example.fr")
    assert route_recipient(f"{NIR}@{PATIENT_DOMAIN}", local_domains=local, liste=None,
                           patients_open=True) == Route(Target.PATIENT, PATIENT_DOMAIN)
    closed = route_recipient(f"{NIR}@{PATIENT_DOMAIN}", local_domains=local, liste=None)
    assert closed == policy.check_recipient_domain(PATIENT_DOMAIN, local)
    assert route_recipient("x@other.fr", local_domains=local, liste=None) == policy.check_recipient_domain(
        "other.fr", local)


def test_the_router_for_submitted_mail() -> None:
    local, liste = ["example.fr"], ListeBlanche(None, {}, ())
    assert route_recipient(f"{NIR}@{PATIENT_DOMAIN}", local_domains=local, liste=liste) == PATIENT_PATH_CLOSED
    refused = route_recipient("x@other.fr", local_domains=local, liste=liste)
    assert isinstance(refused, Refusal) and refused.code == 550


def test_the_transaction_parses_the_headers_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = headers.summarise
    monkeypatch.setattr(headers, "summarise", lambda data: calls.append(data) or real(data))
    tx = Transaction(peer=None, principal=None, mail_from="a@b.fr",
                     data=b"From: a@b.fr\r\nSubject: [FIN]\r\nX-MSS-MES: FIN\r\n\r\nbody\r\n")
    assert tx.summary.subject == "[FIN]" and tx.summary.mss_mes == ["FIN"] and tx.summary is tx.summary
    assert len(calls) == 1


def test_patient_domain_is_defined_once() -> None:
    packages = ("mssante_base", "mssante_operator", "mes_bridge")
    defined = [path.relative_to(ROOT).as_posix()
               for package in packages for path in (ROOT / package).rglob("*.py")
               if re.search(r"^PATIENT_DOMAIN\s*=", path.read_text(), re.M)]
    assert defined == ["mssante_base/patients/ins.py"]


class OnePatientStore:
    def patient(self, ins: Any) -> PatientRecord | None:
        now = datetime.now(UTC)
        return PatientRecord(ins=str(ins), state=PatientState.ACTIVE, given_name="Jeanne", family_name="Martin",
                              password_hash=None, created_at=now, updated_at=now)


def test_the_lmtp_intake_keeps_the_patients_names_on_the_transaction(caplog: pytest.LogCaptureFixture) -> None:
    handler = IntakeHandler(OnePatientStore(), max_recipients=1)  # type: ignore[arg-type]
    envelope = Envelope()
    address = f"{NIR}@{PATIENT_DOMAIN}"
    assert asyncio.run(handler.handle_RCPT(None, None, envelope, address, [])).startswith("250")  # type: ignore[arg-type]
    assert intake_transaction(envelope).names == {NIR: "Jeanne Martin"} and envelope.rcpt_tos == [address]
    with caplog.at_level(logging.INFO, logger="mes_bridge.lmtp"):
        reply = asyncio.run(handler.handle_RCPT(None, None, envelope, address, []))  # type: ignore[arg-type]
        refused = asyncio.run(handler.handle_RCPT(None, None, Envelope(), "x@example.fr", []))  # type: ignore[arg-type]
    assert reply.startswith("452 4.5.3") and "check=recipient_count" in caplog.text
    assert refused.startswith("550 5.1.2 x@example.fr: only patient addresses")
    assert "check=patient_address" in caplog.text and "x@example.fr" not in caplog.text
