"""Delivery reports that arrive without DKIM (as a stock Postfix sends its own): the rule that accepts them.

Accepted only when the report can be about nothing but a message we relayed to that peer (see
``policy.check_unsigned_report``): the parser (``dsn.parse_report``), the queue lookup
(``store.queue.recipients_of``), the pure policy, and the MTA listener with a real peer session,
where forged reports (a message never relayed, another addressee, a peer not listed for the
reported domain) are still refused with ``550 5.7.20``. The real Postfix case is in test_postfix_peer.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support.harness import (
    OPERATOR_DOMAIN,
    RunningOperator,
    configure,
    connect,
    lab_report,
    make_kit,
    peer,
    running_operator,
)
from support.harness import signed as dkim_signed
from support.peer import PeerOperator
from test_submission import DOCTOR, letter, submit_client, wait_until

from mssante_base.message import dsn
from mssante_base.trust.tls import PeerTls
from mssante_operator.demo_kit import EXTRA_LISTED, TRUST_CA_KEY
from mssante_operator.smtp import policy
from mssante_operator.store.queue import RecipientStatus, RelayedRecipient
from mssante_operator.trust_space import dev_pki
from mssante_operator.trust_space.liste_blanche import ListeBlanche, parse_liste_blanche

LAB = "labo-biolab.mssante.fr"
LAB_USER = f"resultats@{LAB}"
OUR_HOST = f"mx.{OPERATOR_DOMAIN}"
SECRETARY = f"ines.secretaire@{OPERATOR_DOMAIN}"
MESSAGE_ID = "<179666789887.20178.1217@hopital-demo.mssante.fr>"
QUEUE_ID = "80f9c56812bccb7b"


def returned_header(queue_id: str = QUEUE_ID, message_id: str = MESSAGE_ID, to: str = LAB_USER) -> str:
    """The original's header as a Postfix report returns it: the peer's Received on top of ours."""
    return (
        f"Received: from {OUR_HOST} (localhost [127.0.0.1])\r\n"
        f"\tby smtp.{LAB} (Postfix) with ESMTPS id F089416C22B\r\n\tfor <{to}>; Mon, 7 Dec 2026 18:24:58 +0000\r\n"
        f"Received: from poste-12.hopital ([127.0.0.1])\r\n"
        f"\tby {OUR_HOST} with ESMTPSA (TLSv1.3 TLS_AES_256_GCM_SHA384)\r\n"
        f"\tid {queue_id}\r\n\tfor <{to}>; Mon, 07 Dec 2026 18:24:58 +0000\r\n"
        f"From: {DOCTOR}\r\nTo: {to}\r\nSubject: Compte rendu\r\nMessage-ID: {message_id}\r\n"
    )


def postfix_report(original_header: str, *, to: str = DOCTOR, final: str = LAB_USER, domain: str = LAB,
                   action: str = "delivered", envid: str | None = None, full: bool = False) -> bytes:
    """A success report shaped as Postfix 3.7 writes it (unsigned), about the message whose header is given."""
    boundary = "F089416C22B.1796667899/smtp." + domain
    returned = (f"Content-Type: message/rfc822\r\n\r\n{original_header}\r\nLe texte.\r\n" if full else
                f"Content-Description: Message Headers\r\nContent-Type: text/rfc822-headers\r\n"
                f"Content-Transfer-Encoding: 8bit\r\n\r\n{original_header}")
    return (
        f"Date: Mon,  7 Dec 2026 18:24:59 +0000 (UTC)\r\n"
        f"From: MAILER-DAEMON@{domain} (Mail Delivery System)\r\n"
        f"Subject: Successful Mail Delivery Report\r\nTo: {to}\r\nAuto-Submitted: auto-replied\r\n"
        f"MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"\r\n'
        f"Content-Transfer-Encoding: 8bit\r\nMessage-Id: <{secrets.token_hex(6)}@smtp.{domain}>\r\n\r\n"
        f"This is a MIME-encapsulated message.\r\n\r\n--{boundary}\r\n"
        f"Content-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Your message was successfully delivered to the destination(s) listed below.\r\n\r\n--{boundary}\r\n"
        f"Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; smtp.{domain}\r\nX-Postfix-Queue-ID: F089416C22B\r\n"
        + (f"Original-Envelope-Id: {envid}\r\n" if envid else "")
        + f"Arrival-Date: Mon,  7 Dec 2026 18:24:58 +0000 (UTC)\r\n\r\n"
        f"Final-Recipient: rfc822; {final}\r\nOriginal-Recipient: rfc822;{final}\r\nAction: {action}\r\n"
        f"Status: 2.0.0\r\nDiagnostic-Code: X-Postfix; delivery via virtual: delivered to maildir\r\n\r\n"
        f"--{boundary}\r\n{returned}\r\n--{boundary}--\r\n"
    ).encode()


# --- the parser --------------------------------------------------------------------------------------


@pytest.mark.parametrize("full", [False, True], ids=["headers", "whole-message"])
def test_a_postfix_report_names_its_recipients_and_our_message(full: bool) -> None:
    report = dsn.parse_report(postfix_report(returned_header(), envid="Lot+42", full=full), OUR_HOST)
    assert report is not None
    assert report.recipients == (dsn.ReportedOutcome(LAB_USER, LAB_USER, "delivered"),)
    assert report.message_id == MESSAGE_ID and report.envid == "Lot+42"
    assert report.queue_ids == (QUEUE_ID,)  # ours only, not the peer's own id


@pytest.mark.parametrize("raw", [
    lab_report(DOCTOR, [LAB_USER]),
    postfix_report(returned_header()).replace(b"report-type=delivery-status", b"report-type=disposition-notification"),
    postfix_report(returned_header()).replace(b"Final-Recipient", b"X-Final-Recipient"),
    postfix_report(returned_header()).replace(f"Final-Recipient: rfc822; {LAB_USER}".encode(),
                                              b"Final-Recipient: rfc822; " + b"x" * 400 + b"@x"),
], ids=["not-a-report", "read-receipt", "no-recipient", "junk-recipient"])
def test_what_is_no_delivery_report_parses_to_none(raw: bytes) -> None:
    assert dsn.parse_report(raw, OUR_HOST) is None


# --- the policy (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trust:
    liste: ListeBlanche
    labo: PeerTls
    ehpad: PeerTls  # a peer of the trust space listed for another domain only


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningOperator, PeerOperator]]:
    home = tmp_path_factory.mktemp("reports") / "home"
    manifest = make_kit(home)
    with PeerOperator(home, manifest, "labo", dsn=True) as lab:
        configure(home, outbound={"routes": {LAB: lab.route}})
        with running_operator(home, manifest) as operator:
            yield operator, lab


@pytest.fixture(scope="module")
def ehpad(kit: tuple[RunningOperator, PeerOperator]) -> dict[str, Any]:
    """A certificate of the kit's trust CA with the DN the liste blanche lists for the EHPAD's domain only."""
    home = kit[0].home
    ca = dev_pki.Authority(
        cert=x509.load_pem_x509_certificate((home / kit[0].manifest["trust_ca"]).read_bytes()),
        key=serialization.load_pem_private_key((home / TRUST_CA_KEY).read_bytes(), password=None),  # type: ignore[arg-type]
    )
    listed = EXTRA_LISTED[0]
    issued = dev_pki.issue(ca, cn=f"smtp.{listed.name}", ou="1420001234", org="EHPAD LES TILLEULS", st="Loire (42)")
    assert issued.dn == listed.dn_text
    dev_pki.write_chain(home / "certs/ehpad.pem", issued.chain)
    dev_pki.write_key(home / "certs/ehpad.key", issued.key)
    return {"cert": "certs/ehpad.pem", "key": "certs/ehpad.key", "domain": listed.name, "certificate": issued.cert}


@pytest.fixture(scope="module")
def trust(kit: tuple[RunningOperator, PeerOperator], ehpad: dict[str, Any]) -> Trust:
    home, manifest = kit[0].home, kit[0].manifest
    labo_cert = x509.load_pem_x509_certificate((home / peer(manifest, "labo")["cert"]).read_bytes())
    return Trust(liste=parse_liste_blanche((home / "listeblanche.xml").read_bytes()),
                 labo=PeerTls("TLSv1.3", "TLS_AES_256_GCM_SHA384", labo_cert),
                 ehpad=PeerTls("TLSv1.3", "TLS_AES_256_GCM_SHA384", ehpad["certificate"]))


RELAYED = RelayedRecipient(queue_id=QUEUE_ID, sender=DOCTOR, message_id=MESSAGE_ID, envid=None, address=LAB_USER,
                           orcpt=None, status=RecipientStatus.DELIVERED)


def check(trust: Trust, raw: bytes, *, to: str = DOCTOR, relayed: RelayedRecipient | None = RELAYED,
          peer_tls: PeerTls | None = None) -> str | None:
    report = dsn.parse_report(raw, OUR_HOST)
    assert report is not None
    refusal = policy.check_unsigned_report(report, [to], peer_tls or trust.labo, trust.liste,
                                           [relayed] if relayed else [])
    assert refusal is None or (refusal.code, refusal.enhanced) == (550, "5.7.20")
    return None if refusal is None else refusal.text


def test_a_report_on_a_message_we_relayed_to_that_peer_is_accepted(trust: Trust) -> None:
    assert check(trust, postfix_report(returned_header())) is None
    assert check(trust, postfix_report(returned_header(), envid="Lot+42"), relayed=replace(RELAYED, envid="Lot+42")) \
        is None


@pytest.mark.parametrize(("change", "envid", "why"), [
    ({"relayed": None}, None, "refers to no message we relayed"),
    ({"relayed": replace(RELAYED, message_id="<autre@hopital-demo.mssante.fr>")}, None,
     "refers to no message we relayed"),
    ({"relayed": replace(RELAYED, envid="Lot+43")}, "Lot+42", "refers to no message we relayed"),
    ({"relayed": replace(RELAYED, status=RecipientStatus.DEFERRED)}, None, f"we relayed nothing to {LAB_USER}"),
    ({"relayed": replace(RELAYED, address=f"autre@{LAB}")}, None, f"we relayed nothing to {LAB_USER}"),
    ({"to": SECRETARY}, None, "not addressed to the sender"),
], ids=["unknown-id", "other-message-id", "other-envid", "not-handed-over", "other-recipient", "other-addressee"])
def test_a_report_on_anything_else_is_refused(trust: Trust, change: dict[str, Any], envid: str | None,
                                              why: str) -> None:
    assert why in (check(trust, postfix_report(returned_header(), envid=envid), **change) or "")


def test_a_report_without_our_received_id_is_refused(trust: Trust) -> None:
    header = returned_header().replace(f"by {OUR_HOST}", "by mx.ailleurs.example")
    assert "does not name a message we relayed" in (check(trust, postfix_report(header)) or "")


def test_a_peer_not_listed_for_the_reported_domain_is_refused(trust: Trust) -> None:
    text = check(trust, postfix_report(returned_header(), domain=EXTRA_LISTED[0].name), peer_tls=trust.ehpad)
    assert text is not None and f"is not registered for domain {LAB}" in text


# --- the queue lookup ----------------------------------------------------------------------------------


def test_recipients_of_reads_the_queue_by_id(kit: tuple[RunningOperator, PeerOperator]) -> None:
    queue = kit[0].operator.store.queue
    assert queue.recipients_of([]) == [] and queue.recipients_of(["0123456789abcdef"]) == []


# --- the MTA listener, with a message really relayed to the (aiosmtpd) peer -----------------------------


@pytest.fixture(scope="module")
def relayed(kit: tuple[RunningOperator, PeerOperator]) -> tuple[str, str]:
    """The doctor's letter relayed to the lab with NOTIFY=SUCCESS: (its queue id, the header the lab got)."""
    running, lab = kit
    with submit_client(running) as client:
        client.mail(DOCTOR)
        assert client.docmd("RCPT", f"TO:<{LAB_USER}> NOTIFY=SUCCESS")[0] == 250
        code, text = client.data(letter(DOCTOR, [LAB_USER], subject="Compte rendu relaye"))
    assert code == 250
    queue_id = text.decode().rsplit(" ", 1)[1]
    received = wait_until(lambda: [r for r in lab.received if b"Compte rendu relaye" in r.content])[0]
    wait_until(lambda: running.operator.store.queue.show(queue_id).recipients[0].status == "delivered")
    header = received.content.split(b"\r\n\r\n", 1)[0].decode() + "\r\n"
    return queue_id, f"Received: from {OUR_HOST} (localhost [127.0.0.1])\r\n\tby smtp.{LAB} (aiosmtpd)\r\n" + header


def send_report(running: RunningOperator, sender_peer: dict[str, Any], raw: bytes, to: str = DOCTOR) -> str:
    with connect(running, sender_peer) as client:
        assert client.mail("<>")[0] == 250
        assert client.rcpt(to)[0] == 250
        code, text = client.data(raw)
    return f"{code} {text.decode()}"


def reports_about(running: RunningOperator, queue_id: str) -> int:
    store = running.operator.store
    return sum(1 for m in store.list_messages(DOCTOR)
               if "MAILER-DAEMON" in m.from_addr and queue_id.encode() in store.read_message(DOCTOR, m.uid))


def test_the_listener_takes_a_genuine_unsigned_report(kit: tuple[RunningOperator, PeerOperator],
                                                       relayed: tuple[str, str]) -> None:
    running = kit[0]
    queue_id, header = relayed
    before = reports_about(running, queue_id)
    reply = send_report(running, peer(running.manifest, "labo"), postfix_report(header))
    assert reply.startswith("250 "), reply
    assert reports_about(running, queue_id) == before + 1


def test_the_listener_refuses_forged_reports(kit: tuple[RunningOperator, PeerOperator], relayed: tuple[str, str],
                                             ehpad: dict[str, Any]) -> None:
    running = kit[0]
    queue_id, header = relayed
    labo = peer(running.manifest, "labo")
    before = reports_about(running, queue_id)
    never_relayed = header.replace(queue_id, "0123456789abcdef")
    assert send_report(running, labo, postfix_report(never_relayed)).startswith("550 5.7.20 ")
    assert send_report(running, labo, postfix_report(header, to=SECRETARY), to=SECRETARY).startswith("550 5.7.20 ")
    ehpad_peer = {"cert": ehpad["cert"], "key": ehpad["key"]}
    reply = send_report(running, ehpad_peer, postfix_report(header, domain=ehpad["domain"]))
    assert reply.startswith("550 5.7.20 ") and f"not registered for domain {LAB}" in reply
    assert reports_about(running, queue_id) == before


def test_an_unsigned_null_sender_message_that_is_no_report_is_still_refused(
        kit: tuple[RunningOperator, PeerOperator]) -> None:
    running = kit[0]
    labo = peer(running.manifest, "labo")
    reply = send_report(running, labo, lab_report(labo["sender"], [DOCTOR]))
    assert reply.startswith("550 5.7.20 No DKIM signature: messages of the trust space must be DKIM-signed")
    assert send_report(running, labo, dkim_signed(running.home, labo, lab_report(labo["sender"], [DOCTOR]))) \
        .startswith("250 ")


def test_a_report_is_deferred_while_the_queue_cannot_be_read(kit: tuple[RunningOperator, PeerOperator],
                                                             relayed: tuple[str, str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(queue_ids: object) -> list[RelayedRecipient]:
        raise OSError("database unreachable")

    running = kit[0]
    monkeypatch.setattr(running.operator.mta_context, "relayed", unreachable)
    reply = send_report(running, peer(running.manifest, "labo"), postfix_report(relayed[1]))
    assert reply.startswith("451 4.3.0 "), reply
