"""The operator against a stock Debian Postfix + OpenDKIM peer operator (tests/support/postfix_peer.py), both ways.

Our doctor writes to the peer's users through our submission listener and queue (mutual TLS to
Postfix, our DKIM signature checked by OpenDKIM); the peer's users write to ours (OpenDKIM signs,
Postfix presents its client certificate to our MTA); and a delivery receipt asked with NOTIFY=SUCCESS
comes back from Postfix, unsigned as Postfix sends its own reports, to the doctor's INBOX.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from collections.abc import Iterator
from email.message import EmailMessage, Message
from email.utils import formatdate, make_msgid

import pytest
from click.testing import CliRunner
from support.harness import OPERATOR_DOMAIN, RunningOperator, configure, make_kit, running_operator
from support.postfix_peer import PostfixPeer, require_postfix
from test_submission import DOCTOR, letter, submit_client, wait_until

from mssante_operator.cli import main
from mssante_operator.demo_kit import LOCALHOST

LAB = "labo-biolab.mssante.fr"
LAB_USER = f"resultats@{LAB}"
COLLEAGUE = f"ines.secretaire@{OPERATOR_DOMAIN}"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningOperator, PostfixPeer]]:
    require_postfix()  # before making a kit for nothing
    home = tmp_path_factory.mktemp("postfix") / "home"
    manifest = make_kit(home)
    mta = f"{LOCALHOST}:{manifest['listeners']['mta']['port']}"
    with PostfixPeer(home, manifest, "labo", operator_route=mta) as peer:
        configure(home, outbound={"routes": {LAB: peer.route}})
        with running_operator(home, manifest) as operator:
            yield operator, peer


@pytest.fixture
def running(kit: tuple[RunningOperator, PostfixPeer]) -> RunningOperator:
    return kit[0]


@pytest.fixture
def peer(kit: tuple[RunningOperator, PostfixPeer]) -> PostfixPeer:
    return kit[1]


def submit(running: RunningOperator, to: str, subject: str, *, notify: str | None = None) -> str:
    """The doctor submits a letter to ``to``; returns the id of the 250 reply."""
    with submit_client(running) as client:
        client.mail(DOCTOR)
        code, text = client.docmd("RCPT", f"TO:<{to}>" + (f" NOTIFY={notify}" if notify else ""))
        assert code == 250, text
        code, text = client.data(letter(DOCTOR, [to], subject=subject))
        assert code == 250, text
    return text.decode().rsplit(" ", 1)[1]


def parsed(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.default)


def with_subject(messages: list[bytes], subject: str) -> list[Message]:
    return [m for m in map(parsed, messages) if m["Subject"] == subject]


def inbox(running: RunningOperator, address: str) -> list[Message]:
    store = running.operator.store
    return [parsed(store.read_message(address, m.uid)) for m in store.list_messages(address)]


def test_our_doctor_writes_to_a_postfix_peer(running: RunningOperator, peer: PostfixPeer) -> None:
    submit(running, LAB_USER, "Vers Postfix")
    delivered = wait_until(lambda: with_subject(peer.mailbox("resultats"), "Vers Postfix"))[0]
    # OpenDKIM at the peer verified our signature; Postfix got our client certificate over TLS.
    results = " ".join(str(value) for value in delivered.get_all("Authentication-Results", []))
    assert re.search(rf"dkim=pass [^;]*header\.d={re.escape(OPERATOR_DOMAIN)}", results), results
    assert peer.wait_for_log("Trusted TLS connection established from localhost")


def test_a_postfix_peer_writes_to_our_doctor(running: RunningOperator, peer: PostfixPeer) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = LAB_USER, DOCTOR, "Depuis Postfix"
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain=LAB)
    msg.set_content("Bonjour,\nLe compte rendu est disponible.\n")
    peer.inject(msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")), LAB_USER, [DOCTOR])
    stored = wait_until(lambda: [m for m in inbox(running, DOCTOR) if m["Subject"] == "Depuis Postfix"])[0]
    signature = str(stored["DKIM-Signature"])
    assert f"d={LAB}" in signature.replace(" ", "")  # signed by OpenDKIM for the peer's domain
    ours = str(stored["Authentication-Results"])
    assert re.search(rf"dkim=pass [^;]*header\.d={re.escape(LAB)}", ours), ours
    assert peer.dn.split(",")[0] in ours  # the client certificate Postfix presented


def reports(running: RunningOperator, subject: str) -> list[Message]:
    """Delivery reports in the doctor's INBOX about the letter ``subject`` (its headers are returned)."""
    return [m for m in inbox(running, DOCTOR)
            if m.get_content_type() == "multipart/report" and f"Subject: {subject}" in m.as_string()]


def test_notify_success_receipt_from_postfix_reaches_the_doctor(running: RunningOperator,
                                                                peer: PostfixPeer) -> None:
    submit(running, LAB_USER, "Accuse Postfix", notify="SUCCESS")
    delivered = wait_until(lambda: with_subject(peer.mailbox("resultats"), "Accuse Postfix"))[0]
    queue_id = peer.queue_id(str(delivered["Received"]))
    notice = peer.wait_for_log(f"{queue_id}: sender delivery status notification: ").rsplit(" ", 1)[1]
    # Postfix's report leaves unsigned (its own mail skips the milter) and our MTA accepts it.
    outcome = peer.wait_for_log(rf"{notice}: to=<{re.escape(DOCTOR)}>.* status=(sent|bounced)")
    assert "status=sent" in outcome, peer.log_text()
    report = wait_until(lambda: reports(running, "Accuse Postfix"))[0]
    assert "DKIM-Signature" not in report
    status = report.get_payload()[1].as_string()
    assert "Action: delivered" in status and f"Final-Recipient: rfc822; {LAB_USER}" in status
    assert f"MAILER-DAEMON@{LAB}" in str(report["From"])


def our_ids(message: Message, hostname: str) -> list[str]:
    """The ids in the ``Received`` fields our operator (``hostname``) wrote into ``message``."""
    ours = re.compile(rf"\bby {re.escape(hostname)} with .*?\bid ([0-9A-Za-z]+)")
    return [match.group(1) for value in message.get_all("Received", [])
            if (match := ours.search(" ".join(str(value).split())))]


def test_one_submission_id_in_reply_received_queue_and_logs(running: RunningOperator, peer: PostfixPeer,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    hostname = running.operator.settings.operator.hostname
    caplog.set_level(logging.INFO)
    with submit_client(running) as client:
        client.mail(DOCTOR)
        for to in (COLLEAGUE, LAB_USER):
            assert client.rcpt(to)[0] == 250
        code, text = client.data(letter(DOCTOR, [COLLEAGUE, LAB_USER], subject="Un seul identifiant"))
    assert code == 250, text
    reply_id = text.decode().rsplit(" ", 1)[1]
    local = next(m for m in inbox(running, COLLEAGUE) if m["Subject"] == "Un seul identifiant")
    assert our_ids(local, hostname) == [reply_id]
    relayed = wait_until(lambda: with_subject(peer.mailbox("resultats"), "Un seul identifiant"))[0]
    assert our_ids(relayed, hostname) == [reply_id]
    assert running.operator.store.queue.show(reply_id) is not None
    shown = CliRunner().invoke(main, ["queue", "show", reply_id, "--home", str(running.home)])
    assert shown.exit_code == 0 and reply_id in shown.output, shown.output
    submitted = [r.getMessage() for r in caplog.records if r.getMessage().startswith("submitted ")]
    assert submitted and all(re.findall(r"\b[0-9a-f]{16}\b", line) == [reply_id] for line in submitted), submitted


def test_local_only_submission_id_in_reply_and_received(running: RunningOperator) -> None:
    with submit_client(running) as client:
        client.mail(DOCTOR)
        assert client.rcpt(COLLEAGUE)[0] == 250
        code, text = client.data(letter(DOCTOR, [COLLEAGUE], subject="Local seulement"))
    assert code == 250, text
    local = next(m for m in inbox(running, COLLEAGUE) if m["Subject"] == "Local seulement")
    assert our_ids(local, running.operator.settings.operator.hostname) == [text.decode().rsplit(" ", 1)[1]]
