"""The LMTP intake with a real client over mutual TLS: per-recipient replies, refusals, durability."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator

import pytest
from support.bridge_kit import (
    INS,
    LMTPS,
    RunningBridge,
    address,
    fresh_bridge,
    lmtp_transaction,
    message,
    tls_for,
)

from mssante_base.patients.ins import validate_ins

SENDER = "dr.martin@hopital.operator.test"


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBridge]:
    with fresh_bridge(tmp_path_factory) as running:
        yield running


@pytest.fixture
def client(bridge: RunningBridge) -> Iterator[LMTPS]:
    with LMTPS(bridge.lmtp_port, tls_for(bridge, "operator")) as lmtp:
        yield lmtp


def inbox(bridge: RunningBridge, name: str) -> list:
    return bridge.service.store.messages(validate_ins(INS[name]))


def test_lhlo_advertises_lmtp_extensions(client: LMTPS) -> None:
    code, _ = client.ehlo()  # smtplib.LMTP sends LHLO
    assert code == 250
    for keyword in ("PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SIZE"):
        assert client.has_extn(keyword), keyword
    assert not client.has_extn("STARTTLS")
    assert client.docmd("EHLO", "operator.test")[0] == 500
    assert client.docmd("HELO", "operator.test")[0] == 500


def test_help_lists_lhlo_and_data_but_not_ehlo(client: LMTPS) -> None:
    client.ehlo()
    code, listed = client.docmd("HELP")
    assert code == 250
    commands = set(listed.decode().split())
    assert {"LHLO", "MAIL", "RCPT", "DATA"} <= commands
    assert not {"EHLO", "HELO"} & commands  # refused by an LMTP server: not offered either
    code, syntax = client.docmd("HELP", "DATA")
    assert (code, syntax.decode().rpartition(" Syntax: ")[2]) == (250, "DATA")


def test_one_reply_per_recipient_in_rcpt_order(client: LMTPS, bridge: RunningBridge) -> None:
    recipients = [
        address("active"),
        "123@patient.mssante.fr",  # invalid INS
        address("opposed"),
        address("unknown"),
        address("closed"),
        address("not_activated"),
        "dr.other@hopital.operator.test",  # not a patient
        address("corsica").upper(),
    ]
    raw = message("<per-recipient@operator.test>")
    rcpt, data = lmtp_transaction(client, SENDER, recipients, raw)
    codes = [(code, text.decode()[:5]) for code, text in rcpt]
    assert codes == [(250, "2.1.5"), (550, "5.1.3"), (550, "5.1.1"), (550, "5.1.1"), (550, "5.1.1"),
                     (250, "2.1.5"), (550, "5.1.2"), (250, "2.1.5")]
    assert b"opposed" in rcpt[2][1]
    assert [code for code, _ in data] == [250, 250, 250]
    assert [text.decode() for _, text in data] == [
        f"2.1.5 <{recipients[0]}> delivered to the patient's space",
        f"2.1.5 <{recipients[5]}> delivered to the patient's space",
        f"2.1.5 <{recipients[7]}> delivered to the patient's space",
    ]
    for name in ("active", "not_activated", "corsica"):
        stored = [m for m in inbox(bridge, name) if m.message_id == "<per-recipient@operator.test>"]
        assert len(stored) == 1
        assert bridge.service.store.blobs.read(stored[0].blob_key) == raw  # durable before the 250
    blob_keys = {m.blob_key for name in ("active", "not_activated", "corsica") for m in inbox(bridge, name)
                 if m.message_id == "<per-recipient@operator.test>"}
    assert len(blob_keys) == 1  # one blob shared by the patients
    assert not inbox(bridge, "opposed")


def test_each_delivery_is_audited_with_the_client_dn(client: LMTPS, bridge: RunningBridge) -> None:
    lmtp_transaction(client, SENDER, [address("active")], message("<audited@operator.test>"))
    store = bridge.service.store
    (message_row,) = [m for m in store.messages(validate_ins(INS["active"]))
                      if m.message_id == "<audited@operator.test>"]
    rows = [row for row in store.audit(validate_ins(INS["active"])) if row.detail.get("message") == message_row.id]
    assert [row.action for row in rows] == ["receive"]
    assert rows[0].actor == bridge.kit["parties"]["operator"].dn


def test_duplicate_message_id_is_accepted_but_stored_once(client: LMTPS, bridge: RunningBridge) -> None:
    raw = message("<twice@operator.test>")
    for _ in range(2):
        client.rset()
        _, data = lmtp_transaction(client, SENDER, [address("active"), address("not_activated")], raw)
        assert [code for code, _ in data] == [250, 250]
    for name in ("active", "not_activated"):
        assert len([m for m in inbox(bridge, name) if m.message_id == "<twice@operator.test>"]) == 1


def test_a_new_patient_gets_a_message_the_others_already_have(client: LMTPS, bridge: RunningBridge) -> None:
    raw = message("<partial@operator.test>")
    lmtp_transaction(client, SENDER, [address("active")], raw)
    client.rset()
    _, data = lmtp_transaction(client, SENDER, [address("active"), address("corsica")], raw)
    assert [code for code, _ in data] == [250, 250]
    assert len([m for m in inbox(bridge, "corsica") if m.message_id == "<partial@operator.test>"]) == 1
    assert len([m for m in inbox(bridge, "active") if m.message_id == "<partial@operator.test>"]) == 1


def test_bare_lf_is_refused_for_every_recipient(client: LMTPS, bridge: RunningBridge) -> None:
    raw = message("<bare-lf@operator.test>", body="line one\nline two")
    _, data = lmtp_transaction(client, SENDER, [address("active"), address("corsica")], raw)
    assert [(code, text[:5]) for code, text in data] == [(550, b"5.6.0"), (550, b"5.6.0")]
    assert not [m for m in inbox(bridge, "active") if m.message_id == "<bare-lf@operator.test>"]
    client.rset()  # the session goes on
    _, data = lmtp_transaction(client, SENDER, [address("active")], message("<after-bare-lf@operator.test>"))
    assert data[0][0] == 250


def test_too_big_is_552_for_every_recipient(client: LMTPS, bridge: RunningBridge) -> None:
    raw = message("<too-big@operator.test>", body="x" * 900 + ("\r\n" + "y" * 900) * 100)
    _, data = lmtp_transaction(client, SENDER, [address("active"), address("corsica")], raw)
    assert [(code, text[:5]) for code, text in data] == [(552, b"5.3.4"), (552, b"5.3.4")]
    assert client.noop()[0] == 250


def test_mail_size_parameter_over_the_limit_is_refused(client: LMTPS) -> None:
    client.ehlo()
    code, text = client.docmd("MAIL", f"FROM:<{SENDER}> SIZE=10000000")
    assert code == 552
    assert text.startswith(b"5.3.4")


def test_dsn_parameters_are_taken(client: LMTPS, bridge: RunningBridge) -> None:
    client.ehlo()
    assert client.has_extn("DSN")
    assert client.docmd("MAIL", f"FROM:<{SENDER}> RET=HDRS ENVID=Q123+2Bx")[0] == 250
    code, _ = client.docmd("RCPT", f"TO:<{address('active')}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;{SENDER}")
    assert code == 250
    code, text = client.docmd("RCPT", f"TO:<{address('corsica')}> NOTIFY=NEVER,SUCCESS")
    assert (code, text[:5]) == (501, b"5.5.4")
    code, _ = client.docmd("DATA")
    assert code == 354
    client.send(message("<dsn@operator.test>") + b".\r\n")
    assert client.getreply()[0] == 250


def test_data_without_recipient_is_503(client: LMTPS) -> None:
    client.ehlo()
    assert client.mail(SENDER)[0] == 250
    assert client.rcpt(address("opposed"))[0] == 550
    code, _ = client.docmd("DATA")
    assert code == 503


def test_pipelined_transaction(bridge: RunningBridge) -> None:
    context = tls_for(bridge, "operator")
    import socket

    with socket.create_connection(("127.0.0.1", bridge.lmtp_port), timeout=30) as raw_sock, \
            context.wrap_socket(raw_sock, server_hostname="127.0.0.1") as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        sock.sendall(b"LHLO operator.test\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        sock.sendall(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{address('active')}>\r\nRCPT TO:<{address('closed')}>\r\n"
                     f"RCPT TO:<{address('corsica')}>\r\nDATA\r\n".encode())
        replies = [reader.readline() for _ in range(5)]
        assert [line[:3] for line in replies] == [b"250", b"250", b"550", b"250", b"354"]
        sock.sendall(message("<pipelined@operator.test>") + b".\r\nQUIT\r\n")
        replies = [reader.readline() for _ in range(3)]
        assert [line[:9] for line in replies] == [b"250 2.1.5", b"250 2.1.5", b"221 2.0.0"]


@pytest.mark.parametrize(("who", "why"), [("stranger", b"not a trusted operator"), ("revoked", b"revoked")])
def test_untrusted_or_revoked_operator_gets_554_and_is_closed(
    bridge: RunningBridge, who: str, why: bytes
) -> None:
    with pytest.raises(smtplib.SMTPConnectError) as caught:
        LMTPS(bridge.lmtp_port, tls_for(bridge, who))
    assert caught.value.smtp_code == 554
    assert caught.value.smtp_error.startswith(b"5.7.1 ")
    assert why in caught.value.smtp_error


@pytest.mark.parametrize("who", [None, "rogue"])
def test_no_certificate_or_another_ca_fails(bridge: RunningBridge, who: str | None) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected)), \
            LMTPS(bridge.lmtp_port, tls_for(bridge, who)) as lmtp:
        lmtp.noop()
