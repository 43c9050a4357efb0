"""The MTA listener over real sockets and real TLS handshakes: every refusal with its exact reply.

Most tests share one operator on SQLite (refusals store nothing, so they do not disturb each other);
tests that store mail run on both engines (``store_url``), and tests that need other limits or that
rewrite the liste blanche get a kit of their own.
"""

from __future__ import annotations

import email
import email.policy
import select
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import authres
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support.harness import (
    DOCTOR,
    RunningOperator,
    client_tls,
    connect,
    lab_report,
    make_kit,
    peer,
    running_operator,
    signed,
    unquoted,
)

from mssante_base.smtp import server
from mssante_base.trust.dn import parse_dn
from mssante_operator.demo_kit import TRUST_CA_KEY
from mssante_operator.trust_space import dev_pki
from mssante_operator.trust_space.dkim import KeyLookupError
from mssante_operator.trust_space.liste_blanche import parse_liste_blanche, render_liste_blanche

HOSPITAL = "hopital-demo.mssante.fr"
AUTHSERV_ID = f"mx.{HOSPITAL}"
SECRETARY = f"ines.secretaire@{HOSPITAL}"
CARDIOLOGY = f"cardiologie@{HOSPITAL}"
PHARMACY = f"pharmacie.centrale@{HOSPITAL}"
APP_MAILBOX = f"labo-auto@{HOSPITAL}"
UNKNOWN = f"personne@{HOSPITAL}"
MAX_SIZE = 64 * 1024
MAX_RCPTS = 3
# What a client sees when the server refuses its TLS handshake (with TLS 1.3 the refusal of the client
# certificate arrives after the client's side of the handshake is over, on its first read).
HANDSHAKE_REFUSED = (ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)


@dataclass
class Shared:
    """One operator for the refusal tests, and the kit's trust CA (to mint more certificates)."""

    running: RunningOperator
    ca: dev_pki.Authority

    @property
    def home(self) -> Path:
        return self.running.home

    @property
    def manifest(self) -> dict[str, Any]:
        return self.running.manifest


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    home = tmp_path_factory.mktemp("mta")
    manifest = make_kit(home, limits={"max_message_size": MAX_SIZE, "max_recipients": MAX_RCPTS})
    trust_ca = dev_pki.Authority(
        cert=x509.load_pem_x509_certificate((home / manifest["trust_ca"]).read_bytes()),
        key=serialization.load_pem_private_key((home / TRUST_CA_KEY).read_bytes(), password=None),  # type: ignore[arg-type]
    )
    with running_operator(home, manifest) as running:
        yield Shared(running, trust_ca)


@pytest.fixture(scope="module")
def running(shared: Shared) -> RunningOperator:
    return shared.running


@pytest.fixture(scope="module")
def labo(shared: Shared) -> dict[str, Any]:
    return peer(shared.manifest, "labo")


# --- helpers -----------------------------------------------------------------------------------------


def _reply(answer: tuple[int, bytes]) -> str:
    """An smtplib (code, text) answer as the reply line the server wrote."""
    code, text = answer
    return f"{code} {text.decode('utf-8', 'replace')}"


def _count(running: RunningOperator, address: str) -> int:
    return len(running.operator.store.list_messages(address))


def _issue_peer_certificate(shared: Shared, name: str, *, cn: str, sender: str, **kwargs: Any) -> dict[str, Any]:
    """A certificate of the kit's trust CA written into the kit, as a peer entry for ``connect``."""
    issued = dev_pki.issue(shared.ca, cn=cn, ou="38012345600017", org="LABORATOIRE BIOLAB", st="Rhône (69)",
                           dns_names=(cn,), **kwargs)
    cert, key = f"certs/extra/{name}.pem", f"certs/extra/{name}.key"
    dev_pki.write_chain(shared.home / cert, issued.chain)
    dev_pki.write_key(shared.home / key, issued.key)
    return {"cert": cert, "key": key, "dn": issued.dn, "sender": sender}


def _raw_data(client: smtplib.SMTP, payload: bytes) -> str:
    """Send DATA and ``payload`` byte for byte (no dot-stuffing, no line-ending repair), then the end."""
    client.putcmd("data")
    assert client.getreply()[0] == 354
    client.send(payload + b".\r\n")
    return _reply(client.getreply())


def _deliver(client: smtplib.SMTP, sender: str, recipients: list[str], data: bytes) -> tuple[list[str], str]:
    """One transaction: (the RCPT replies, the final reply)."""
    assert client.mail(sender)[0] == 250
    rcpt_replies = [_reply(client.rcpt(rcpt)) for rcpt in recipients]
    return rcpt_replies, _reply(client.data(data))


def _refused_at_handshake(running: RunningOperator, the_peer: dict[str, Any] | None, listener: str = "mta") -> None:
    with pytest.raises(HANDSHAKE_REFUSED):
        client = connect(running, the_peer, listener=listener)
        try:
            client.mail(the_peer["sender"] if the_peer else "x@example.org")
        finally:
            client.close()


# --- EHLO and STARTTLS ---------------------------------------------------------------------------------


def test_ehlo_before_tls_advertises_our_extensions_and_starttls_but_never_auth(running):
    with connect(running, None, starttls=False) as client:
        features = set(client.esmtp_features)
        assert client.esmtp_features["size"] == str(MAX_SIZE)
    assert {"size", "8bitmime", "pipelining", "enhancedstatuscodes", "smtputf8", "starttls"} <= features
    assert "auth" not in features
    assert "help" not in features


def test_ehlo_after_starttls_no_longer_offers_starttls(running, labo):
    with connect(running, labo) as client:
        features = set(client.esmtp_features)
    assert {"size", "8bitmime", "pipelining", "enhancedstatuscodes", "smtputf8"} <= features
    assert "starttls" not in features
    assert "auth" not in features


def test_help_lists_the_commands_we_override_and_gives_their_syntax(running, labo):
    """HELP names every command, DATA, MAIL, RCPT and EHLO too (our overrides keep aiosmtpd's @syntax)."""
    with connect(running, labo) as client:
        listed = _reply(client.docmd("HELP"))
        data = _reply(client.docmd("HELP", "DATA"))
        mail = _reply(client.docmd("HELP", "MAIL"))
    assert listed.startswith("250 ")
    assert {"DATA", "EHLO", "HELO", "MAIL", "NOOP", "QUIT", "RCPT", "RSET"} <= set(listed.split())
    assert data.startswith("250 ") and data.endswith("Syntax: DATA")
    assert mail.startswith("250 ") and "Syntax: MAIL FROM: <address>" in mail


def test_mail_before_starttls_is_refused_530(running, labo):
    with connect(running, labo, starttls=False) as client:
        reply = _reply(client.mail(labo["sender"]))
    assert reply.startswith("530 5.7.0 Must issue a STARTTLS command first")


def test_implicit_tls_port_takes_a_peer_delivery(running, labo):
    before = _count(running, PHARMACY)
    raw = signed(running.home, labo, lab_report(labo["sender"], [PHARMACY]))
    with connect(running, labo, listener="mtas") as client:
        assert "starttls" not in client.esmtp_features
        _, reply = _deliver(client, labo["sender"], [PHARMACY], raw)
    assert reply.startswith("250 2.0.0")
    assert _count(running, PHARMACY) == before + 1


# --- the peer certificate --------------------------------------------------------------------------------


@pytest.mark.parametrize("listener", ["mta", "mtas"])
def test_rogue_operator_certificate_fails_the_handshake(running, listener):
    _refused_at_handshake(running, running.manifest["rogue"], listener)


def test_expired_certificate_of_the_trust_ca_fails_the_handshake(shared, running, labo):
    expired = _issue_peer_certificate(
        shared, "expired", cn="smtp.labo-biolab.mssante.fr", sender=labo["sender"],
        not_after=dev_pki.now() - dev_pki.DEFAULT_VALIDITY / 365,
    )
    _refused_at_handshake(running, expired)


def _legacy_client_tls(running: RunningOperator, the_peer: dict[str, Any], newest: ssl.TLSVersion) -> ssl.SSLContext:
    """A client context willing to speak TLS 1.0 up to ``newest`` (so the server is the one refusing)."""
    context = client_tls(running.home, running.manifest, the_peer["cert"], the_peer["key"])
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = newest
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_1_client_is_refused(running, labo):
    with smtplib.SMTP("127.0.0.1", running.port("mta"), timeout=30) as client:
        client.ehlo("smtp.test")
        with pytest.raises(ssl.SSLError) as caught:
            client.starttls(context=_legacy_client_tls(running, labo, ssl.TLSVersion.TLSv1_1))
    assert "NO_PROTOCOLS_AVAILABLE" not in str(caught.value)  # the client did offer TLS 1.1
    with smtplib.SMTP("127.0.0.1", running.port("mta"), timeout=30) as client:  # the same client, TLS 1.2 allowed
        client.ehlo("smtp.test")
        client.starttls(context=_legacy_client_tls(running, labo, ssl.TLSVersion.TLSv1_2))
        assert client.sock.version() == "TLSv1.2"


def test_connection_without_client_certificate_is_refused_530_at_mail(running, labo):
    with connect(running, None) as client:
        reply = _reply(client.mail(labo["sender"]))
        assert _reply(client.noop()).startswith("250")
    assert reply.startswith("530 5.7.0 A client certificate of the MSSanté trust space")


def test_revoked_certificate_is_refused_550_at_mail(running):
    clinique = peer(running.manifest, "clinique")
    with connect(running, clinique) as client:
        reply = _reply(client.mail(clinique["sender"]))
    assert reply.startswith("550 5.7.1 Your client certificate has been revoked")


def test_sender_domain_outside_the_liste_blanche_is_refused(running, labo):
    with connect(running, labo) as client:
        reply = _reply(client.mail("contact@operateur-pirate.fr"))
    assert reply == (
        "550 5.7.1 Sender domain operateur-pirate.fr is not in the MSSanté trust space (liste blanche)"
    )


def test_certificate_of_the_trust_ca_with_an_unlisted_dn_is_refused(shared, running, labo):
    stranger = _issue_peer_certificate(shared, "smtp3", cn="smtp3.labo-biolab.mssante.fr", sender=labo["sender"])
    with connect(running, stranger) as client:
        reply = _reply(client.mail(labo["sender"]))
    assert reply.startswith(f"550 5.7.1 Certificate DN {stranger['dn']} is not registered for domain ")
    assert "labo-biolab.mssante.fr" in reply


def test_listed_peer_may_not_send_for_another_listed_domain(running, labo):
    with connect(running, labo) as client:
        reply = _reply(client.mail("secretariat@ehpad-les-tilleuls.mssante.fr"))
    assert reply.startswith(f"550 5.7.1 Certificate DN {labo['dn']} is not registered for domain")
    assert "ehpad-les-tilleuls.mssante.fr" in reply


def test_second_server_listed_for_a_domain_is_accepted(shared, running, labo):
    second = _issue_peer_certificate(shared, "smtp2", cn="smtp2.labo-biolab.mssante.fr", sender=labo["sender"])
    raw = signed(running.home, labo, lab_report(labo["sender"], [SECRETARY]))
    with connect(running, second) as client:
        _, reply = _deliver(client, labo["sender"], [SECRETARY], raw)
    assert reply.startswith("250 2.0.0")


# --- recipients ------------------------------------------------------------------------------------------


def test_unknown_recipient_is_refused_550_5_1_1(running, labo):
    with connect(running, labo) as client:
        client.mail(labo["sender"])
        reply = _reply(client.rcpt(UNKNOWN))
    assert reply.startswith("550 5.1.1")


def test_applicative_mailbox_is_refused_550_5_7_1(running, labo):
    with connect(running, labo) as client:
        client.mail(labo["sender"])
        reply = _reply(client.rcpt(APP_MAILBOX))
    assert reply.startswith("550 5.7.1")
    assert "applicative mailbox cannot receive mail" in reply


def test_recipient_of_another_domain_is_relaying_denied(running, labo):
    with connect(running, labo) as client:
        client.mail(labo["sender"])
        reply = _reply(client.rcpt("dr.dupont@clinique-ouest.mssante.fr"))
    assert reply.startswith("550 5.7.1 Relaying denied")


def test_recipient_over_the_limit_is_refused_452_4_5_3(running, labo):
    with connect(running, labo) as client:
        client.mail(labo["sender"])
        replies = [_reply(client.rcpt(rcpt)) for rcpt in (DOCTOR, SECRETARY, CARDIOLOGY, PHARMACY)]
    assert [r[:3] for r in replies[:MAX_RCPTS]] == ["250"] * MAX_RCPTS
    assert replies[MAX_RCPTS].startswith("452 4.5.3")


# --- DKIM and the From header ------------------------------------------------------------------------------


def test_unsigned_message_is_refused_550_5_7_20(running, labo):
    before = _count(running, DOCTOR)
    with connect(running, labo) as client:
        _, reply = _deliver(client, labo["sender"], [DOCTOR], lab_report(labo["sender"], [DOCTOR]))
    assert reply.startswith("550 5.7.20 No DKIM signature")
    assert _count(running, DOCTOR) == before


def test_message_altered_after_signing_is_refused_550_5_7_20(running, labo):
    raw = signed(running.home, labo, lab_report(labo["sender"], [DOCTOR]))
    with connect(running, labo) as client:
        _, reply = _deliver(client, labo["sender"], [DOCTOR], raw.replace(b"Cordialement", b"Bien cordialement"))
    assert reply.startswith("550 5.7.20")


def test_signature_of_a_sibling_domain_is_refused_550_5_7_20(running, labo):
    clinique = peer(running.manifest, "clinique")
    raw = signed(running.home, clinique, lab_report(labo["sender"], [DOCTOR]))  # valid, but d=clinique-ouest
    with connect(running, labo) as client:
        _, reply = _deliver(client, labo["sender"], [DOCTOR], raw)
    assert reply.startswith("550 5.7.20 No DKIM signature for the From domain labo-biolab.mssante.fr")


def test_dkim_key_lookup_failure_is_answered_451_4_7_5(running, labo, monkeypatch):
    class TimingOut:
        def txt(self, name: str) -> bytes | None:
            raise KeyLookupError(f"DNS lookup of {name} failed: Timeout")

    monkeypatch.setattr(running.operator.mta_context, "dkim_keys", TimingOut())
    raw = signed(running.home, labo, lab_report(labo["sender"], [DOCTOR]))
    with connect(running, labo) as client:
        _, reply = _deliver(client, labo["sender"], [DOCTOR], raw)
    assert reply.startswith("451 4.7.5")


def test_from_header_of_a_domain_the_peer_does_not_serve_is_refused(running, labo):
    raw = signed(running.home, labo, lab_report("secretariat@ehpad-les-tilleuls.mssante.fr", [DOCTOR]))
    with connect(running, labo) as client:
        _, reply = _deliver(client, labo["sender"], [DOCTOR], raw)
    assert reply.startswith("550 5.7.1 From header: Certificate DN")


def test_message_whose_header_dkim_cannot_read_is_refused_permanently(running, labo):
    raw = signed(running.home, labo, lab_report(labo["sender"], [DOCTOR]))
    header, _, body = raw.partition(b"\r\n\r\n")
    garbled = header + b"\r\nthis header line has no colon\r\n\r\n" + body
    with connect(running, labo) as client:
        _, reply = _deliver(client, labo["sender"], [DOCTOR], garbled)
    assert reply.startswith("550 5.7.20")


# --- line endings and SMTP smuggling -------------------------------------------------------------------------


@pytest.mark.parametrize("junk", [b"\n", b"\r"], ids=["bare-lf", "bare-cr"])
def test_bare_line_ending_in_data_is_refused_550_5_6_0(running, labo, junk):
    raw = signed(running.home, labo, lab_report(labo["sender"], [DOCTOR]))
    with connect(running, labo) as client:
        client.mail(labo["sender"])
        client.rcpt(DOCTOR)
        reply = _raw_data(client, raw.replace(b"Cordialement\r\n", b"Cordialement" + junk + b"\r\n"))
    assert reply.startswith("550 5.6.0")


@pytest.mark.parametrize(
    "end", [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n"], ids=["lf-dot-lf", "cr-dot-cr", "crlf-dot-lf", "lf-dot-crlf"]
)
def test_smuggled_second_message_is_refused_and_nothing_is_stored(running, labo, end):
    before = (_count(running, DOCTOR), _count(running, SECRETARY))
    first = signed(running.home, labo, lab_report(labo["sender"], [DOCTOR]))
    smuggled = (
        b"MAIL FROM:<" + labo["sender"].encode() + b">\r\nRCPT TO:<" + SECRETARY.encode() + b">\r\nDATA\r\n"
        + signed(running.home, labo, lab_report(labo["sender"], [SECRETARY], subject="smuggled"))
    )
    with connect(running, labo) as client:
        client.mail(labo["sender"])
        client.rcpt(DOCTOR)
        reply = _raw_data(client, first + b"Fin" + end + smuggled)
        after = _reply(client.noop())
    assert reply.startswith("550 5.6.0")
    assert after == "250 2.0.0 OK"  # the next reply is NOOP's own: the server saw no second transaction
    assert (_count(running, DOCTOR), _count(running, SECRETARY)) == before


def test_command_line_ending_with_bare_lf_is_refused_500_5_5_2(running, labo):
    with connect(running, labo) as client:
        client.send(b"MAIL FROM:<" + labo["sender"].encode() + b">\n")
        reply = _reply(client.getreply())
        follow_up = _reply(client.mail(labo["sender"]))
    assert reply.startswith("500 5.5.2")
    assert follow_up.startswith("250")


# --- sizes and lengths ---------------------------------------------------------------------------------------


def test_declared_size_over_the_limit_is_refused_552_5_3_4(running, labo):
    with connect(running, labo) as client:
        reply = _reply(client.mail(labo["sender"], [f"SIZE={MAX_SIZE + 1}"]))
    assert reply.startswith("552 5.3.4")


def test_declared_size_within_the_limit_is_accepted(running, labo):
    with connect(running, labo) as client:
        assert _reply(client.mail(labo["sender"], [f"SIZE={MAX_SIZE}", "BODY=8BITMIME"])).startswith("250")


def test_message_bigger_than_the_limit_is_refused_552_5_3_4(running, labo):
    raw = signed(running.home, labo, lab_report(labo["sender"], [DOCTOR], size=2 * MAX_SIZE))
    with connect(running, labo) as client:
        _, reply = _deliver(client, labo["sender"], [DOCTOR], raw)
        assert _reply(client.noop()).startswith("250")  # the session goes on
    assert reply.startswith(f"552 5.3.4 Message too big: at most {MAX_SIZE} bytes")


def test_message_just_under_the_limit_is_accepted(running, labo):
    before = _count(running, PHARMACY)
    raw = signed(running.home, labo, lab_report(labo["sender"], [PHARMACY], size=MAX_SIZE - 4096))
    assert MAX_SIZE - 4096 < len(raw) < MAX_SIZE
    with connect(running, labo) as client:
        _, reply = _deliver(client, labo["sender"], [PHARMACY], raw)
    assert reply.startswith("250 2.0.0")
    assert _count(running, PHARMACY) == before + 1


def test_over_long_line_in_data_is_refused_500_5_5_2(running, labo):
    raw = signed(running.home, labo, lab_report(labo["sender"], [DOCTOR]))
    long_line = raw.replace(b"Cordialement", b"Cordialement " + b"x" * 1200)
    with connect(running, labo) as client:
        _, reply = _deliver(client, labo["sender"], [DOCTOR], long_line)
    assert reply.startswith("500 5.5.2 Line too long")


def test_a_large_payload_is_checked_off_the_event_loop(running, labo, monkeypatch):
    """Above ``INLINE_SCAN_BYTES`` the line scan and the dot removal run in a thread; the replies are the same."""
    threads: list[str] = []
    unstuffed = server.unstuffed

    def spy(stuffed: bytes, max_line_length: int) -> bytes | None:
        threads.append(threading.current_thread().name)
        return unstuffed(stuffed, max_line_length)

    monkeypatch.setattr(server, "unstuffed", spy)
    monkeypatch.setattr(server, "INLINE_SCAN_BYTES", 1000)  # every message of this test is "large"
    raw = signed(running.home, labo, lab_report(labo["sender"], [DOCTOR]))
    with connect(running, labo) as client:
        _, accepted = _deliver(client, labo["sender"], [DOCTOR], raw)
        _, refused = _deliver(client, labo["sender"], [DOCTOR],
                              raw.replace(b"Cordialement", b"Cordialement " + b"x" * 1200))
    assert accepted.startswith("250 2.0.0") and refused.startswith("500 5.5.2 Line too long")
    assert len(threads) == 2 and "operator-loop" not in threads


def test_over_long_command_line_is_refused_500_5_5_2_line_too_long(running, labo):
    with connect(running, labo) as client:
        reply = _reply(client.mail("a" * 2000 + "@labo-biolab.mssante.fr"))
        assert _reply(client.noop()).startswith("250")
    assert reply.startswith("500 5.5.2 Command line too long")


@pytest.mark.parametrize("size", [1001, 2000, 70_000])
def test_over_long_command_line_sent_in_pieces_is_line_too_long(running, labo, size):
    with connect(running, labo) as client:
        line = b"MAIL FROM:<" + b"a" * size + b"@labo-biolab.mssante.fr>\r\n"
        for start in range(0, len(line), 997):
            client.send(line[start : start + 997])
        reply = _reply(client.getreply())
        assert _reply(client.noop()).startswith("250")
    assert reply.startswith("500 5.5.2 Command line too long")


# --- envelope syntax: control characters, SMTPUTF8 (RFC 6531) ---------------------------------------------


def _command(client: smtplib.SMTP, line: bytes) -> str:
    """Send one command line byte for byte; its reply."""
    client.send(line + b"\r\n")
    return _reply(client.getreply())


def _printable(reply: str) -> bool:
    return not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xDC80 <= ord(c) <= 0xDCFF for c in reply)


@pytest.mark.parametrize("junk", [b"\x00", b"\x01", b"\x1b[31m", b"\x7f", b"\x0b"])
def test_control_character_in_mail_from_is_refused_501_5_1_7(running, labo, junk, caplog):
    caplog.set_level("DEBUG")
    sender = labo["sender"].encode()
    with connect(running, labo) as client:
        reply = _command(client, b"MAIL FROM:<x" + junk + sender + b">")
        accepted = _command(client, b"MAIL FROM:<" + sender + b">")
    assert reply.startswith("501 5.1.7 ")
    assert accepted.startswith("250 2.1.0")
    assert all(_printable(record.getMessage()) for record in caplog.records)


@pytest.mark.parametrize("junk", [b"\x00", b"\x08", b"\x1b]0;owned\x07", b"\xc2\x85"])
def test_control_character_in_rcpt_to_is_refused_553_5_1_3(running, labo, junk, caplog):
    caplog.set_level("DEBUG")
    with connect(running, labo) as client:
        client.mail(labo["sender"], ["SMTPUTF8"])
        reply = _command(client, b"RCPT TO:<dr.martin" + junk + b"@" + HOSPITAL.encode() + b">")
        accepted = _reply(client.rcpt(DOCTOR))
    assert reply.startswith("553 5.1.3 ")
    assert _printable(reply)
    assert accepted.startswith("250 2.1.5")
    assert all(_printable(record.getMessage()) for record in caplog.records)


def test_non_ascii_address_without_smtputf8_is_refused_553_5_6_7(running, labo):
    with connect(running, labo) as client:
        mail = _command(client, "MAIL FROM:<hélène@labo-biolab.mssante.fr>".encode())
        assert _command(client, f"MAIL FROM:<{labo['sender']}>".encode()).startswith("250")
        rcpt = _command(client, f"RCPT TO:<hélène@{HOSPITAL}>".encode())
    assert mail.startswith("553 5.6.7 ")
    assert rcpt.startswith("553 5.6.7 ")


def test_non_ascii_address_with_smtputf8_is_looked_up(running, labo):
    with connect(running, labo) as client:
        assert _command(client, f"MAIL FROM:<{labo['sender']}> SMTPUTF8".encode()).startswith("250")
        rcpt = _command(client, f"RCPT TO:<hélène@{HOSPITAL}>".encode())
    assert rcpt.startswith("550 5.1.1 ")
    assert "hélène" in rcpt


@pytest.mark.parametrize("smtputf8", [b"", b" SMTPUTF8"])
def test_invalid_utf8_address_is_refused_with_or_without_smtputf8(running, labo, smtputf8, caplog):
    caplog.set_level("DEBUG")
    with connect(running, labo) as client:
        mail = _command(client, b"MAIL FROM:<r\xe9sultats@labo-biolab.mssante.fr>" + smtputf8)
        assert _command(client, f"MAIL FROM:<{labo['sender']}>".encode() + smtputf8).startswith("250")
        rcpt = _command(client, b"RCPT TO:<h\xc3l\xe8ne@" + HOSPITAL.encode() + b">")
    assert mail.startswith("501 5.1.7 ")
    assert rcpt.startswith("553 5.1.3 ")
    assert _printable(mail) and _printable(rcpt)
    assert all(_printable(record.getMessage()) for record in caplog.records)


def test_unknown_command_with_control_characters_is_not_echoed_raw(running, labo):
    with connect(running, labo) as client:
        reply = _command(client, b"\x1b[2JFOO bar")
    assert reply.startswith("500 5.5.")
    assert _printable(reply)


# --- PIPELINING, SMTPUTF8 ----------------------------------------------------------------------------------------


def test_pipelined_commands_are_answered_in_order(running, labo):
    before = _count(running, CARDIOLOGY)
    raw = signed(running.home, labo, lab_report(labo["sender"], [CARDIOLOGY]))
    with connect(running, labo) as client:
        client.send(
            f"MAIL FROM:<{labo['sender']}>\r\nRCPT TO:<{UNKNOWN}>\r\nRCPT TO:<{CARDIOLOGY}>\r\nDATA\r\n".encode()
        )
        replies = [_reply(client.getreply()) for _ in range(4)]
        client.send(raw + b".\r\n")
        final = _reply(client.getreply())
    assert [r[:9] for r in replies] == ["250 2.1.0", "550 5.1.1", "250 2.1.5", "354 End d"]
    assert final.startswith("250 2.0.0")
    assert _count(running, CARDIOLOGY) == before + 1


def test_utf8_message_with_smtputf8_is_stored_with_its_subject(running, labo):
    subject = "Résultat — hémoglobine glyquée"
    raw = signed(running.home, labo, (
        f"From: Laboratoire Hélène <{labo['sender']}>\r\nTo: {SECRETARY}\r\nSubject: {subject}\r\n"
        f"Message-ID: {make_msgid(domain=labo['domain'])}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Hémoglobine glyquée : 6,1 %\r\n"
    ).encode())
    with connect(running, labo) as client:
        assert client.mail(labo["sender"], ["SMTPUTF8", "BODY=8BITMIME"])[0] == 250
        assert client.rcpt(SECRETARY)[0] == 250
        reply = _reply(client.data(raw))
    assert reply.startswith("250 2.0.0")
    last = running.operator.store.list_messages(SECRETARY)[-1]
    assert last.subject == subject
    assert last.from_addr == f"Laboratoire Hélène <{labo['sender']}>"


# --- storing: both engines ------------------------------------------------------------------------------------


@pytest.fixture
def stored_kit(tmp_path: Path, store_url: str) -> Iterator[RunningOperator]:
    manifest = make_kit(tmp_path, store_url=store_url)
    with running_operator(tmp_path, manifest) as running:
        yield running


def test_multi_recipient_message_is_accepted_for_the_good_recipients_only(stored_kit):
    running, labo = stored_kit, peer(stored_kit.manifest, "labo")
    raw = signed(running.home, labo, lab_report(labo["sender"], [DOCTOR, UNKNOWN, APP_MAILBOX]))
    with connect(running, labo) as client:
        rcpt_replies, reply = _deliver(client, labo["sender"], [DOCTOR, UNKNOWN, APP_MAILBOX], raw)
    assert [r[:9] for r in rcpt_replies] == ["250 2.1.5", "550 5.1.1", "550 5.7.1"]
    assert reply.startswith("250 2.0.0")
    assert _count(running, DOCTOR) == 1
    assert _count(running, UNKNOWN) == 0
    assert _count(running, APP_MAILBOX) == 0


def test_repeated_message_id_is_stored_once_per_mailbox(stored_kit):
    running, labo = stored_kit, peer(stored_kit.manifest, "labo")
    raw = signed(running.home, labo, lab_report(labo["sender"], [DOCTOR], message_id=make_msgid(domain="labo")))
    with connect(running, labo) as client:
        _, first = _deliver(client, labo["sender"], [DOCTOR], raw)
        _, retry = _deliver(client, labo["sender"], [DOCTOR, CARDIOLOGY], raw)
    assert first.startswith("250 2.0.0")
    assert retry.startswith("250 2.0.0")
    assert _count(running, DOCTOR) == 1
    assert _count(running, CARDIOLOGY) == 1


def test_malformed_mime_is_stored_exactly_as_received(stored_kit):
    running, labo = stored_kit, peer(stored_kit.manifest, "labo")
    raw = (
        f"From: {labo['sender']}\r\nTo: {DOCTOR}\r\n".encode()
        + b"Subject: =?utf-8?b?!!!pas-du-base64?= R\xe9sultats \xff\xfe\r\n"
        + b"Message-ID: <malforme-1@labo-biolab.mssante.fr>\r\n"
        + b"MIME-Version: 1.0\r\n"
        + b'Content-Type: multipart/mixed; boundary="jamais-utilise"\r\n'
        + b"X-Garbage: \x00\x01\x02\x7f\x80\xff\r\n"
        + b"Content-Transfer-Encoding: base64-ish\r\n"
        + b"\r\n"
        + b"--autre-frontiere\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour \xc3\xa9 \xff\xfe\x00\r\n"
        + b"--jamais-utilise\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b"%%% pas du base64 %%%\r\n"  # and no closing boundary
    )
    raw = signed(running.home, labo, raw)
    with connect(running, labo) as client:
        _, reply = _deliver(client, labo["sender"], [DOCTOR], raw)
    assert reply.startswith("250 2.0.0")
    [message] = running.operator.store.list_messages(DOCTOR)
    assert message.message_id == "<malforme-1@labo-biolab.mssante.fr>"
    assert running.operator.store.read_message(DOCTOR, message.uid).endswith(raw)


def test_authentication_results_come_first_and_a_forged_one_is_removed(stored_kit):
    running, labo = stored_kit, peer(stored_kit.manifest, "labo")
    forged = (
        f"Authentication-Results: {AUTHSERV_ID}; dkim=pass header.d=labo-biolab.mssante.fr\r\n"
        f"Authentication-Results:\r\n {AUTHSERV_ID.upper()} 1;\r\n x-mssante-tls=pass\r\n"
        "Authentication-Results: mx.labo-biolab.mssante.fr; dkim=pass header.d=labo-biolab.mssante.fr\r\n"
    ).encode()
    raw = signed(running.home, labo, forged + lab_report(labo["sender"], [DOCTOR]))
    with connect(running, labo) as client:
        _, reply = _deliver(client, labo["sender"], [DOCTOR], raw)
    assert reply.startswith("250 2.0.0")
    [message] = running.operator.store.list_messages(DOCTOR)
    stored = running.operator.store.read_message(DOCTOR, message.uid)
    header = stored.partition(b"\r\n\r\n")[0]
    fields = [line for line in header.split(b"\r\n") if line[:1] not in (b" ", b"\t")]
    assert fields[0].startswith(b"Received: ")
    assert fields[1].startswith(f"Authentication-Results: {AUTHSERV_ID};".encode())
    assert header.lower().count(AUTHSERV_ID.encode()) == 2  # ours, and our name in the Received line
    assert b"Authentication-Results: mx.labo-biolab.mssante.fr; dkim=pass" in header
    assert "dkim=pass" in message.authentication_results
    first = email.message_from_bytes(stored, policy=email.policy.SMTPUTF8).get_all("Authentication-Results")[0]
    ours = authres.AuthenticationResultsHeader.parse_value(str(first))  # an RFC 8601 parser reads ours back
    assert ours.authserv_id == AUTHSERV_ID
    assert [(result.method, result.result) for result in ours.results] == [("dkim", "pass"), ("x-mssante-tls", "pass")]
    peer_dn = next(p.value for p in ours.results[1].properties if (p.type, p.name) == ("policy", "peer-dn"))
    assert parse_dn(unquoted(peer_dn)) == parse_dn(labo["dn"])


# --- timeouts and connection limits (kits of their own) ------------------------------------------------------


def _read_line(sock: socket.socket, timeout: float) -> bytes:
    """One reply line, or b"" when the server closed the connection."""
    sock.settimeout(timeout)
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            return line
        line += chunk
    return line


def test_idle_connection_is_closed_with_421_4_4_2(tmp_path):
    manifest = make_kit(tmp_path, limits={"idle_timeout": "1s"})
    with running_operator(tmp_path, manifest) as running, \
            socket.create_connection(("127.0.0.1", running.port("mta")), timeout=10) as sock:
        assert _read_line(sock, 30).startswith(b"220 ")
        line = _read_line(sock, 30)
        closed = _read_line(sock, 30) == b""
    assert line.startswith(b"421 4.4.2 Idle")
    assert closed


def test_a_slow_but_steady_data_transfer_is_not_cut_by_the_idle_timer(tmp_path):
    manifest = make_kit(tmp_path, limits={"idle_timeout": "3s"})
    labo = peer(manifest, "labo")
    raw = signed(tmp_path, labo, lab_report(labo["sender"], [DOCTOR], size=6000))
    with running_operator(tmp_path, manifest) as running, connect(running, labo) as client:
        client.mail(labo["sender"])
        client.rcpt(DOCTOR)
        assert client.putcmd("data") is None and client.getreply()[0] == 354
        step = len(raw) // 10 + 1
        for start in range(0, len(raw), step):  # 6 s in all, twice the idle timeout; 2.4 s to spare at each pause
            client.send(raw[start : start + step])
            time.sleep(0.6)  # the slow client itself, not a wait for the server
        client.send(b"\r\n.\r\n" if not raw.endswith(b"\r\n") else b".\r\n")
        code, reply = client.getreply()
    assert code == 250, reply


def test_connections_over_the_per_ip_limit_are_refused_421_4_7_0(tmp_path):
    manifest = make_kit(tmp_path, limits={"max_connections_per_ip": 2})
    address = ("127.0.0.1", int(manifest["listeners"]["mta"]["port"]))
    with running_operator(tmp_path, manifest):
        first, second = socket.create_connection(address), socket.create_connection(address)
        try:
            assert _read_line(first, 5).startswith(b"220 ")
            assert _read_line(second, 5).startswith(b"220 ")
            with socket.create_connection(address) as third:
                assert _read_line(third, 5).startswith(b"421 4.7.0")
                assert _read_line(third, 5) == b""
        finally:
            first.close()
        deadline = time.monotonic() + 5
        while True:  # the freed slot is given to the next connection
            with socket.create_connection(address) as fourth:
                greeting = _read_line(fourth, 5)
            if greeting.startswith(b"220 ") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        second.close()
    assert greeting.startswith(b"220 ")


def test_slow_client_is_cut_at_the_session_deadline(tmp_path):
    manifest = make_kit(tmp_path, limits={"session_timeout": "2s", "idle_timeout": "30s"})
    with running_operator(tmp_path, manifest) as running:
        labo = peer(manifest, "labo")
        start = time.monotonic()
        with connect(running, labo) as client:
            client.mail(labo["sender"])
            client.rcpt(DOCTOR)
            client.putcmd("data")
            assert client.getreply()[0] == 354
            cut = False
            while not cut and time.monotonic() - start < 120:  # one header line every 200 ms, never the end
                try:
                    client.send(b"X-Slow: 1\r\n")
                except (OSError, smtplib.SMTPServerDisconnected):
                    break
                cut = bool(select.select([client.sock], [], [], 0.2)[0])
            reply = _reply(client.getreply())
        assert _count(running, DOCTOR) == 0
    assert reply.startswith("421 4.4.2 Session too long")  # the session deadline, not the 30 s idle timer


# --- reloading the liste blanche (SIGHUP) ---------------------------------------------------------------------


def _reload(running: RunningOperator) -> None:
    """What SIGHUP does: reload the trust space on the operator's event loop."""

    async def reload() -> None:
        running.operator.reload()

    running.call(reload())


def test_reload_applies_to_the_next_mail_and_keeps_connections_open(tmp_path):
    manifest = make_kit(tmp_path)
    with running_operator(tmp_path, manifest) as running:
        labo = peer(manifest, "labo")
        path = tmp_path / "listeblanche.xml"
        liste = parse_liste_blanche(path.read_bytes())
        with connect(running, labo) as opened_before:
            assert opened_before.mail(labo["sender"])[0] == 250
            assert opened_before.rset()[0] == 250
            kept = [entry for entry in liste.entries if entry.name != labo["domain"]]
            path.write_bytes(render_liste_blanche(kept, dev_pki.now()))
            _reload(running)
            refused = _reply(opened_before.mail(labo["sender"]))
            still_open = _reply(opened_before.noop())
        with connect(running, labo) as opened_after:
            refused_after = _reply(opened_after.mail(labo["sender"]))
    assert refused.startswith("550 5.7.1 Sender domain labo-biolab.mssante.fr is not in the MSSanté trust space")
    assert still_open.startswith("250")
    assert refused_after.startswith("550 5.7.1")


def test_malformed_liste_blanche_on_reload_keeps_the_old_list(tmp_path):
    manifest = make_kit(tmp_path)
    with running_operator(tmp_path, manifest) as running:
        labo = peer(manifest, "labo")
        (tmp_path / "listeblanche.xml").write_bytes(b"<ListeBlancheMSSante><ListeDomaines><Domaine>")
        _reload(running)
        raw = signed(running.home, labo, lab_report(labo["sender"], [DOCTOR]))
        with connect(running, labo) as client:
            _, reply = _deliver(client, labo["sender"], [DOCTOR], raw)
    assert reply.startswith("250 2.0.0")
