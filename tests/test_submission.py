"""Submission listeners end to end: real TLS, real AUTH, the operator's store and a real peer operator.

One operator (demo kit) runs for the module, with the lab peer of the kit routed to a PeerOperator on
loopback, so that outbound recipients really leave over mutual TLS.
"""

from __future__ import annotations

import base64
import email
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from cryptography import x509
from support.harness import OPERATOR_DOMAIN, RunningOperator, configure, lab_report, make_kit, running_operator
from support.peer import PeerOperator

from mssante_operator.trust_space.dkim import StaticKeys, verify_message

DOCTOR = f"dr.martin@{OPERATOR_DOMAIN}"
SECRETARY = f"ines.secretaire@{OPERATOR_DOMAIN}"
CARDIO = f"cardiologie@{OPERATOR_DOMAIN}"
APP = f"labo-auto@{OPERATOR_DOMAIN}"
LAB_PEER = "labo-biolab.mssante.fr"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningOperator, PeerOperator]]:
    home = tmp_path_factory.mktemp("submission") / "home"
    manifest = make_kit(home)
    with PeerOperator(home, manifest, "labo") as peer:
        configure(home, outbound={"routes": {LAB_PEER: peer.route}})
        with running_operator(home, manifest) as operator:
            yield operator, peer


@pytest.fixture
def running(kit: tuple[RunningOperator, PeerOperator]) -> RunningOperator:
    return kit[0]


@pytest.fixture
def peer(kit: tuple[RunningOperator, PeerOperator]) -> PeerOperator:
    return kit[1]


def _context(running: RunningOperator, who: str | None = None) -> ssl.SSLContext:
    context = running.tls_context()
    if who is not None:
        mailbox = running.mailbox(who)
        context.load_cert_chain(running.home / mailbox["cert"], running.home / mailbox["key"])
    return context


def submit_client(running: RunningOperator, *, login: str | None = DOCTOR, implicit: bool = False,
                  cert_of: str | None = None) -> smtplib.SMTP:
    """A submission client after STARTTLS (or on the implicit-TLS port), logged in with a password."""
    context = _context(running, cert_of)
    if implicit:
        client: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", running.port("submissions"), context=context, timeout=30)
    else:
        client = smtplib.SMTP("127.0.0.1", running.port("submission"), timeout=30)
        client.starttls(context=context)
    client.ehlo("poste-12.hopital")
    if login is not None:
        client.login(login, running.mailbox(login)["password"])
    return client


def letter(sender: str, to: list[str], *, subject: str = "Avis de cardiologie", bcc: list[str] | None = None,
           message_id: bool = True, date: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    if bcc:
        msg["Bcc"] = ", ".join(bcc)
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = email.utils.make_msgid(domain=OPERATOR_DOMAIN)
    if date:
        msg["Date"] = email.utils.formatdate()
    msg.set_content("Chère consœur,\nVoici mon avis.\n")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def inbox(running: RunningOperator, address: str, folder: str = "INBOX") -> list[Any]:
    return running.operator.store.list_messages(address, folder)


def wait_until(condition: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def raw_session(running: RunningOperator, *, who: str | None = None) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", running.port("submissions")), timeout=30)
    return _context(running, who).wrap_socket(sock)


def read_replies(sock: ssl.SSLSocket, count: int) -> list[str]:
    """``count`` complete replies (multi-line ones joined)."""
    buffer = b""
    replies: list[str] = []
    while len(replies) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {replies}"
        buffer += chunk
        while b"\r\n" in buffer and len(replies) < count:
            line, buffer = buffer.split(b"\r\n", 1)
            text = line.decode()
            if text[3:4] == " ":
                replies.append(text)
    return replies


# -- listeners and authentication --------------------------------------------------------------


def test_before_starttls_no_auth_is_offered_and_mail_is_refused(running: RunningOperator) -> None:
    with smtplib.SMTP("127.0.0.1", running.port("submission"), timeout=30) as client:
        code, text = client.ehlo("poste")
        assert code == 250 and b"STARTTLS" in text and b"AUTH" not in text
        code, text = client.docmd("AUTH", "PLAIN AGRyLm1hcnRpbkB4AHNlY3JldA==")
        assert code == 530 and text.startswith(b"5.7.0")
        code, text = client.mail(DOCTOR)
        assert code == 530 and text.startswith(b"5.7.0")


def test_extensions_after_tls(running: RunningOperator) -> None:
    with submit_client(running, login=None, cert_of=APP) as client:
        features = client.esmtp_features
        assert {"pipelining", "dsn", "enhancedstatuscodes", "auth", "size", "8bitmime"} <= set(features)
        assert {"PLAIN", "EXTERNAL"} <= set(features["auth"].split())
    with submit_client(running, login=None) as client:  # no client certificate: no EXTERNAL
        assert "EXTERNAL" not in client.esmtp_features["auth"].split()


def test_mail_needs_authentication(running: RunningOperator) -> None:
    with submit_client(running, login=None) as client:
        code, text = client.mail(DOCTOR)
        assert code == 530 and b"5.7.0" in text


def test_wrong_password_is_535(running: RunningOperator) -> None:
    with submit_client(running, login=None) as client, pytest.raises(smtplib.SMTPAuthenticationError) as raised:
        client.login(DOCTOR, "not-the-password")
    assert raised.value.smtp_code == 535 and raised.value.smtp_error.startswith(b"5.7.8")


def test_org_mailbox_cannot_log_in(running: RunningOperator) -> None:
    with submit_client(running, login=None) as client, pytest.raises(smtplib.SMTPAuthenticationError):
        client.login(CARDIO, running.mailbox(CARDIO)["password"])


def test_external_with_the_app_certificate_on_the_implicit_port(running: RunningOperator) -> None:
    with submit_client(running, login=None, implicit=True, cert_of=APP) as client:
        code, text = client.docmd("AUTH", "EXTERNAL =")
        assert (code, text[:5]) == (235, b"2.7.0")
        client.sendmail(APP, [SECRETARY], lab_report(APP, [SECRETARY], subject="CR biologie"))
    assert any(m.subject == "CR biologie" for m in inbox(running, SECRETARY))


def test_external_refused_when_the_certificate_names_another_mailbox(running: RunningOperator) -> None:
    with submit_client(running, login=None, implicit=True, cert_of=APP) as client:
        code, text = client.docmd("AUTH", "EXTERNAL " + base64.b64encode(DOCTOR.encode()).decode())
        assert code == 535 and text.startswith(b"5.7.8")


# -- sender rules ------------------------------------------------------------------------------


def test_envelope_sender_must_be_the_principals(running: RunningOperator) -> None:
    with submit_client(running) as client:
        code, text = client.mail(SECRETARY)
        assert code == 550 and text.startswith(b"5.7.1")
        code, text = client.mail("")
        assert code == 550 and text.startswith(b"5.7.1")


def test_from_header_must_be_the_principals(running: RunningOperator) -> None:
    before = len(inbox(running, SECRETARY))
    with submit_client(running) as client, pytest.raises(smtplib.SMTPDataError) as raised:
        client.sendmail(DOCTOR, [SECRETARY], letter(SECRETARY, [SECRETARY]))
    assert raised.value.smtp_code == 550 and raised.value.smtp_error.startswith(b"5.7.1")
    assert len(inbox(running, SECRETARY)) == before  # refused: no trace


def test_a_delegate_sends_as_the_org_mailbox(running: RunningOperator) -> None:
    with submit_client(running) as client:
        client.sendmail(CARDIO, [SECRETARY], letter(CARDIO, [SECRETARY], subject="Depuis le service"))
    assert any(m.subject == "Depuis le service" for m in inbox(running, SECRETARY))
    assert any(m.subject == "Depuis le service" for m in inbox(running, CARDIO, "Sent"))


# -- routing -----------------------------------------------------------------------------------


def test_recipient_outside_the_trust_space(running: RunningOperator) -> None:
    with submit_client(running) as client:
        client.mail(DOCTOR)
        code, text = client.rcpt("someone@gmail.com")
        assert code == 550 and text.startswith(b"5.7.1 recipient domain outside the MSSant")


def test_patient_recipient_with_a_wrong_ins_key_is_refused(running: RunningOperator) -> None:
    # The address of ANS material: its key is not 97 - (2880912345678 mod 97), so it is no INS.
    with submit_client(running) as client:
        client.mail(DOCTOR)
        code, text = client.rcpt("288091234567823@patient.mssante.fr")
        assert code == 550 and text.startswith(b"5.1.3 invalid INS in patient address")


def test_unknown_and_app_local_recipients(running: RunningOperator) -> None:
    with submit_client(running) as client:
        client.mail(DOCTOR)
        code, text = client.rcpt(f"nobody@{OPERATOR_DOMAIN}")
        assert code == 550 and text.startswith(b"5.1.1")
        code, text = client.rcpt(APP)
        assert code == 550 and text.startswith(b"5.7.1")


def test_envelope_syntax_is_checked_before_routing(running: RunningOperator) -> None:
    with submit_client(running) as client:
        def command(line: bytes) -> tuple[int, bytes]:
            client.send(line + b"\r\n")
            return client.getreply()

        control_sender = command(b"MAIL FROM:<dr.martin\x00@" + OPERATOR_DOMAIN.encode() + b">")
        utf8_sender = command("MAIL FROM:<hélène@hopital-demo.mssante.fr>".encode())
        assert client.mail(DOCTOR)[0] == 250
        control_rcpt = command(b"RCPT TO:<x\x1b[2J@" + OPERATOR_DOMAIN.encode() + b">")
        utf8_rcpt = command(f"RCPT TO:<hélène@{OPERATOR_DOMAIN}>".encode())
        broken_rcpt = command(b"RCPT TO:<h\xe9l\xe8ne@" + OPERATOR_DOMAIN.encode() + b">")
    assert control_sender[0] == 501 and control_sender[1].startswith(b"5.1.7 ")
    assert utf8_sender[0] == 553 and utf8_sender[1].startswith(b"5.6.7 ")
    assert control_rcpt[0] == 553 and control_rcpt[1].startswith(b"5.1.3 ")
    assert utf8_rcpt[0] == 553 and utf8_rcpt[1].startswith(b"5.6.7 ")
    assert broken_rcpt[0] == 553 and broken_rcpt[1].startswith(b"5.1.3 ")
    assert not any(byte < 0x20 or byte >= 0x7F for reply in (control_sender, control_rcpt, broken_rcpt)
                   for byte in reply[1])


def test_local_delivery_sent_copy_and_prepared_headers(running: RunningOperator) -> None:
    raw = letter(DOCTOR, [SECRETARY], subject="Préparé", bcc=[CARDIO], message_id=False, date=False)
    with submit_client(running) as client:
        refused = client.sendmail(DOCTOR, [SECRETARY, CARDIO], raw)
    assert refused == {}
    stored = wait_until(lambda: [m for m in inbox(running, SECRETARY) if m.subject == "Préparé"])[0]
    data = running.operator.store.read_message(SECRETARY, stored.uid)
    parsed = email.message_from_bytes(data)
    assert parsed["Bcc"] is None and CARDIO.encode() not in data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b"")
    assert parsed["Message-ID"] and parsed["Date"] and parsed["Received"].startswith("from poste-12.hopital")
    assert any(m.subject == "Préparé" for m in inbox(running, CARDIO))  # the Bcc recipient got it
    sent = [m for m in inbox(running, DOCTOR, "Sent") if m.subject == "Préparé"]
    assert len(sent) == 1 and "\\Seen" in sent[0].flags
    keys = StaticKeys(running.operator.settings.dkim.static_keys)
    assert [r.result for r in verify_message(data, keys)] == ["pass"]


def test_outbound_recipient_is_delivered_to_the_peer_signed(running: RunningOperator, peer: PeerOperator) -> None:
    before = len(peer.received)
    with submit_client(running) as client:
        client.sendmail(DOCTOR, [f"resultats@{LAB_PEER}"], letter(DOCTOR, [f"resultats@{LAB_PEER}"]))
    received = peer.wait_for(before + 1)[-1]
    assert received.rcpt_tos == [f"resultats@{LAB_PEER}"] and received.mail_from == DOCTOR
    operator_cert = x509.load_pem_x509_certificate((running.home / running.manifest["operator_cert"]).read_bytes())
    assert received.client_dn == operator_cert.subject.rfc4514_string()
    keys = StaticKeys(running.operator.settings.dkim.static_keys)
    assert [r.result for r in verify_message(received.content, keys)] == ["pass"]


def test_pipelined_transaction(running: RunningOperator) -> None:
    mailbox = running.mailbox(DOCTOR)
    token = base64.b64encode(f"\0{DOCTOR}\0{mailbox['password']}".encode()).decode()
    sock = raw_session(running)
    try:
        read_replies(sock, 1)
        sock.sendall(b"EHLO poste\r\n")
        read_replies(sock, 1)
        sock.sendall(f"AUTH PLAIN {token}\r\n".encode())
        assert read_replies(sock, 1)[0].startswith("235")
        body = letter(DOCTOR, [SECRETARY], subject="En rafale")
        sock.sendall(f"MAIL FROM:<{DOCTOR}>\r\nRCPT TO:<{SECRETARY}>\r\nRCPT TO:<x@gmail.com>\r\nDATA\r\n".encode())
        replies = read_replies(sock, 4)
        assert [r[:3] for r in replies] == ["250", "250", "550", "354"]
        sock.sendall(body + b".\r\nQUIT\r\n")
        replies = read_replies(sock, 2)
        assert replies[0].startswith("250 2.0.0") and replies[1].startswith("221")
    finally:
        sock.close()
    assert any(m.subject == "En rafale" for m in inbox(running, SECRETARY))


def test_malformed_dsn_parameters(running: RunningOperator) -> None:
    with submit_client(running) as client:
        code, text = client.docmd("MAIL", f"FROM:<{DOCTOR}> RET=MAYBE")
        assert code == 501 and text.startswith(b"5.5.4")
        code, _ = client.docmd("MAIL", f"FROM:<{DOCTOR}> RET=HDRS ENVID=Abc+2Bdef")
        assert code == 250
        code, text = client.docmd("RCPT", f"TO:<{SECRETARY}> NOTIFY=NEVER,SUCCESS")
        assert code == 501 and text.startswith(b"5.5.4")


def test_local_notify_success_gives_a_delivery_receipt(running: RunningOperator) -> None:
    with submit_client(running) as client:
        client.docmd("MAIL", f"FROM:<{DOCTOR}> ENVID=Env-42")
        code, _ = client.docmd("RCPT", f"TO:<{SECRETARY}> NOTIFY=SUCCESS ORCPT=rfc822;{SECRETARY}")
        assert code == 250
        code, _ = client.data(letter(DOCTOR, [SECRETARY], subject="Avec accusé"))
        assert code == 250
    receipt = wait_until(lambda: [m for m in inbox(running, DOCTOR) if "MAILER-DAEMON" in m.from_addr])[-1]
    data = running.operator.store.read_message(DOCTOR, receipt.uid)
    report = email.message_from_bytes(data)
    assert report.get_content_type() == "multipart/report"
    status = report.get_payload()[1].as_string()
    assert "Action: delivered" in status and "Original-Envelope-Id: Env-42" in status


def test_message_refused_for_bare_lf(running: RunningOperator) -> None:
    sock = raw_session(running, who=APP)
    try:
        read_replies(sock, 1)
        sock.sendall(b"EHLO poste\r\nAUTH EXTERNAL =\r\n")
        assert read_replies(sock, 2)[1].startswith("235")
        sock.sendall(f"MAIL FROM:<{APP}>\r\nRCPT TO:<{SECRETARY}>\r\nDATA\r\n".encode())
        assert [r[:3] for r in read_replies(sock, 3)] == ["250", "250", "354"]
        sock.sendall(f"From: {APP}\r\nSubject: x\r\n\r\nline\nsmuggled\r\n.\r\n".encode())
        reply = read_replies(sock, 1)[0]
        assert reply.startswith("550 5.6.0")
    finally:
        sock.close()
