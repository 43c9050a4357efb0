"""The outbound queue end to end: submission -> queue -> a real peer operator over mutual TLS -> DSNs.

The operator runs with a fast retry schedule (1 s steps, 12 s lifetime, delay warnings after 2 s) so
that retries, delay warnings and expiry happen within a test.
"""

from __future__ import annotations

import email
import smtplib
import time
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest
from support.harness import OPERATOR_DOMAIN, RunningOperator, configure, make_kit, running_operator
from support.peer import PeerOperator
from test_submission import DOCTOR, letter, submit_client, wait_until

LAB = "labo-biolab.mssante.fr"
CLINIQUE = "clinique-ouest.mssante.fr"
LIFETIME = 12.0


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningOperator, PeerOperator]]:
    home = tmp_path_factory.mktemp("outbound") / "home"
    manifest = make_kit(home)
    with PeerOperator(home, manifest, "labo", dsn=False) as peer:
        # The clinic's domain is routed to the lab's server: its certificate DN is not listed for the clinic.
        configure(home, outbound={"routes": {LAB: peer.route, CLINIQUE: peer.route}, "retry_schedule": ["1s"],
                                  "retry_interval": "1s", "max_lifetime": f"{LIFETIME:g}s", "delay_warning": "2s",
                                  "lease": "5s"})
        with running_operator(home, manifest) as operator:
            yield operator, peer


@pytest.fixture
def running(kit: tuple[RunningOperator, PeerOperator]) -> RunningOperator:
    return kit[0]


@pytest.fixture
def peer(kit: tuple[RunningOperator, PeerOperator]) -> Iterator[PeerOperator]:
    yield kit[1]
    kit[1].start()  # a test that stopped it leaves it running for the next


def send(running: RunningOperator, to: str, subject: str, *, notify: str | None = None) -> str:
    """Submit a letter from the doctor; returns the queue id from the 250 reply."""
    with submit_client(running) as client:
        client.mail(DOCTOR)
        code, text = client.docmd("RCPT", f"TO:<{to}>" + (f" NOTIFY={notify}" if notify else ""))
        assert code == 250, text
        code, text = client.data(letter(DOCTOR, [to], subject=subject))
        assert code == 250, text
    return text.decode().rsplit(" ", 1)[1]


def entry(running: RunningOperator, queue_id: str) -> Any:
    return running.operator.store.queue.show(queue_id)


def reports(running: RunningOperator, subject: str) -> list[Message]:
    """DSNs in the doctor's INBOX about the letter ``subject``."""
    found = []
    store = running.operator.store
    for stored in store.list_messages(DOCTOR):
        if "MAILER-DAEMON" in stored.from_addr and subject in stored.subject:
            found.append(email.message_from_bytes(store.read_message(DOCTOR, stored.uid)))
    return found


def delivery_status(report: Message) -> str:
    assert report.get_content_type() == "multipart/report"
    return report.get_payload()[1].as_string()


def with_subject(peer: PeerOperator, subject: str) -> list[Any]:
    return [r for r in peer.received if f"Subject: {subject}".encode() in r.content]


def test_delivered_and_recorded(running: RunningOperator, peer: PeerOperator) -> None:
    queue_id = send(running, f"resultats@{LAB}", "Simple envoi")
    wait_until(lambda: with_subject(peer, "Simple envoi"))
    recipient = wait_until(lambda: entry(running, queue_id).recipients[0].status == "delivered"
                           and entry(running, queue_id).recipients[0])
    assert recipient.attempts == 1 and str(recipient.last_reply).startswith("250")


def test_peer_down_then_up(running: RunningOperator, peer: PeerOperator) -> None:
    peer.stop()
    queue_id = send(running, f"resultats@{LAB}", "Pendant la panne")
    deferred = wait_until(lambda: entry(running, queue_id).recipients[0].status == "deferred"
                          and entry(running, queue_id).recipients[0])
    assert "refused" in str(deferred.last_reply) or "connect" in str(deferred.last_reply)
    time.sleep(1.5)  # at least one more attempt while down
    peer.start()
    wait_until(lambda: with_subject(peer, "Pendant la panne"))
    assert len(with_subject(peer, "Pendant la panne")) == 1
    assert wait_until(lambda: entry(running, queue_id).recipients[0].status == "delivered")


def test_temporary_then_accepted(running: RunningOperator, peer: PeerOperator) -> None:
    to = f"tempo@{LAB}"
    peer.answer("RCPT", "451 4.3.0 try again later", address=to)
    queue_id = send(running, to, "Reessai")
    wait_until(lambda: with_subject(peer, "Reessai"))
    recipient = wait_until(lambda: entry(running, queue_id).recipients[0].status == "delivered"
                           and entry(running, queue_id).recipients[0])
    assert recipient.attempts == 2


def test_permanent_refusal_bounces(running: RunningOperator, peer: PeerOperator) -> None:
    to = f"inconnu@{LAB}"
    peer.answer("RCPT", "550 5.1.1 no such mailbox here", address=to)
    queue_id = send(running, to, "Vers un inconnu")
    report = wait_until(lambda: reports(running, "Vers un inconnu"))[0]
    status = delivery_status(report)
    assert "Action: failed" in status and "Status: 5.1.1" in status and "no such mailbox here" in status
    assert f"Final-Recipient: rfc822;{to}" in status
    assert report["Auto-Submitted"] == "auto-replied"
    assert entry(running, queue_id).recipients[0].status == "failed"
    assert not with_subject(peer, "Vers un inconnu")


def test_expiry_warns_then_bounces(running: RunningOperator, peer: PeerOperator) -> None:
    to = f"lent@{LAB}"
    peer.answer("RCPT", *["452 4.2.2 mailbox full"] * 100, address=to)
    queue_id = send(running, to, "Jamais remis")
    warning = wait_until(lambda: reports(running, "Jamais remis"), timeout=LIFETIME)[0]
    assert "Action: delayed" in delivery_status(warning)
    bounce = wait_until(lambda: len(reports(running, "Jamais remis")) >= 2 and reports(running, "Jamais remis")[-1],
                        timeout=LIFETIME + 10)
    status = delivery_status(bounce)
    assert "Action: failed" in status and "Status: 5.4.7" in status
    final = entry(running, queue_id).recipients[0]
    assert final.status == "failed" and final.attempts > 3


def test_dn_not_listed_for_the_domain_is_never_delivered(running: RunningOperator, peer: PeerOperator) -> None:
    queue_id = send(running, f"secretariat@{CLINIQUE}", "Mauvais certificat")
    deferred = wait_until(lambda: entry(running, queue_id).recipients[0].status == "deferred"
                          and entry(running, queue_id).recipients[0])
    assert "not listed" in str(deferred.last_reply) and CLINIQUE in str(deferred.last_reply)
    time.sleep(1.5)
    assert not with_subject(peer, "Mauvais certificat")


def test_notify_success_to_a_peer_without_dsn_gives_a_relayed_receipt(running: RunningOperator,
                                                                       peer: PeerOperator) -> None:
    send(running, f"resultats@{LAB}", "Accuse relaye", notify="SUCCESS,FAILURE")
    report = wait_until(lambda: reports(running, "Accuse relaye"))[0]
    assert "Action: relayed" in delivery_status(report)
    assert with_subject(peer, "Accuse relaye")[0].rcpt_params == [{}]  # the peer does not do DSN


def test_local_and_remote_recipients_in_one_message(running: RunningOperator, peer: PeerOperator) -> None:
    colleague = f"ines.secretaire@{OPERATOR_DOMAIN}"
    with submit_client(running) as client:
        refused = client.sendmail(DOCTOR, [colleague, f"resultats@{LAB}"],
                                  letter(DOCTOR, [colleague, f"resultats@{LAB}"], subject="Mixte"))
    assert refused == {}
    wait_until(lambda: with_subject(peer, "Mixte"))
    assert any(m.subject == "Mixte" for m in running.operator.store.list_messages(colleague))
    sent = [m for m in running.operator.store.list_messages(DOCTOR, "Sent") if m.subject == "Mixte"]
    assert len(sent) == 1


def test_null_sender_is_refused_on_submission(running: RunningOperator) -> None:
    with submit_client(running) as client:
        code, _ = client.mail("<>")
        assert code == 550


def test_dsn_parameters_passed_to_a_dsn_peer(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("dsnpeer") / "home"
    manifest = make_kit(home)
    with PeerOperator(home, manifest, "labo", dsn=True) as peer:
        configure(home, outbound={"routes": {LAB: peer.route}})
        with running_operator(home, manifest) as running, submit_client(running) as client:
            client.docmd("MAIL", f"FROM:<{DOCTOR}> RET=HDRS ENVID=Lot+2B42")
            code, _ = client.docmd("RCPT", f"TO:<resultats@{LAB}> NOTIFY=SUCCESS ORCPT=rfc822;resultats@{LAB}")
            assert code == 250
            code, _ = client.data(letter(DOCTOR, [f"resultats@{LAB}"], subject="Avec DSN"))
            assert code == 250
            received = peer.wait_for(1)[0]
            assert received.mail_params == {"RET": "HDRS", "ENVID": "Lot+2B42"}
            assert received.rcpt_params == [{"NOTIFY": "SUCCESS", "ORCPT": f"rfc822;resultats@{LAB}"}]
            time.sleep(1)  # the peer reports success itself: no receipt from us
            assert not reports(running, "Avec DSN")


def test_refused_recipient_leaves_no_trace(running: RunningOperator) -> None:
    before = running.operator.store.queue.entries()
    with submit_client(running) as client, pytest.raises(smtplib.SMTPRecipientsRefused):
        client.sendmail(DOCTOR, ["x@example.org"], letter(DOCTOR, ["x@example.org"]))
    assert len(running.operator.store.queue.entries()) == len(before)
