"""The IMAP server over real sockets and TLS, driven by the standard library's imaplib."""

from __future__ import annotations

import base64
import imaplib
import logging
import socket
import ssl
import time
from typing import Any

import pytest
from support.harness import RunningOperator

DOMAIN = "hopital-demo.mssante.fr"


def mailbox(running: RunningOperator, local: str) -> dict[str, Any]:
    return running.mailbox(local)


def starttls_client(running: RunningOperator) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", running.manifest["listeners"]["imap"]["port"])
    client.starttls(ssl_context=running.tls_context(check_hostname=True))
    return client


def logged_in(running: RunningOperator, local: str = "dr.martin") -> imaplib.IMAP4:
    client = starttls_client(running)
    account = mailbox(running, local)
    client.login(account["address"], account["password"])
    return client


def test_login_is_disabled_until_starttls(running: RunningOperator) -> None:
    client = imaplib.IMAP4("127.0.0.1", running.manifest["listeners"]["imap"]["port"])
    try:
        assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities
        account = mailbox(running, "dr.martin")
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.login(account["address"], account["password"])
        client.starttls(ssl_context=running.tls_context(check_hostname=True))
        assert "AUTH=PLAIN" in client.capabilities and "LOGINDISABLED" not in client.capabilities
    finally:
        client.logout()


def test_implicit_tls_port_and_plain_authentication_with_initial_response(running: RunningOperator) -> None:
    client = imaplib.IMAP4_SSL("127.0.0.1", running.manifest["listeners"]["imaps"]["port"],
                               ssl_context=running.tls_context(check_hostname=True))
    account = mailbox(running, "dr.martin")
    try:
        typ, _data = client.authenticate("PLAIN", lambda _: f"\0{account['address']}\0{account['password']}".encode())
        assert typ == "OK"
    finally:
        client.logout()


def test_external_authentication_with_the_mailbox_certificate(running: RunningOperator) -> None:
    app = next(m for m in running.manifest["mailboxes"] if m["kind"] == "APP")
    context = running.tls_context(check_hostname=True)
    context.load_cert_chain(running.home / app["cert"], running.home / app["key"])
    client = imaplib.IMAP4_SSL("127.0.0.1", running.manifest["listeners"]["imaps"]["port"], ssl_context=context)
    try:
        assert "AUTH=EXTERNAL" in client.capabilities
        typ, data = client.authenticate("EXTERNAL", lambda _: b"")
        assert typ == "OK" and app["address"].encode() in data[0]
        assert client.select("INBOX")[0] == "OK"
    finally:
        client.logout()
    plain = imaplib.IMAP4_SSL("127.0.0.1", running.manifest["listeners"]["imaps"]["port"],
                              ssl_context=running.tls_context(check_hostname=True))
    try:  # without a client certificate EXTERNAL is neither offered nor accepted
        assert "AUTH=EXTERNAL" not in plain.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="CANNOT"):
            plain.authenticate("EXTERNAL", lambda _: b"")
    finally:
        plain.logout()


def test_a_wrong_password_is_refused_without_saying_why(running: RunningOperator) -> None:
    client = starttls_client(running)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(f"dr.martin@{DOMAIN}", "not the password")
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(f"nobody@{DOMAIN}", "whatever")
    finally:
        client.logout()


def test_an_org_mailbox_cannot_log_in_directly(running: RunningOperator) -> None:
    client = starttls_client(running)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            client.login(f"cardiologie@{DOMAIN}", "anything")
    finally:
        client.logout()


def test_list_shows_own_folders_with_special_use_and_delegated_org_mailboxes(running: RunningOperator) -> None:
    client = logged_in(running)
    try:
        _, lines = client.list()
        listed = {line.decode().rsplit(' "/" ', 1)[1].strip('"'): line.decode() for line in lines}
        assert "\\Sent" in listed["Sent"] and "\\Trash" in listed["Trash"]
        assert f"Shared/cardiologie@{DOMAIN}/INBOX" in listed
        assert "\\Sent" not in listed[f"Shared/cardiologie@{DOMAIN}/Sent"]
        assert "\\Noselect" in listed["Shared"]
        _, lines = client.list('""', "%")
        assert {line.decode().rsplit(" ", 1)[1].strip('"') for line in lines} == {
            "Archive", "Drafts", "INBOX", "Junk", "Sent", "Shared", "Trash"}
        _typ, data = client.namespace()
        assert data == [b'(("" "/")) NIL (("Shared/" "/"))']
    finally:
        client.logout()


def test_someone_who_is_not_a_delegate_does_not_see_the_org_mailbox(running: RunningOperator) -> None:
    client = logged_in(running, "paul.durand")
    try:
        typ, lines = client.list()
        assert not any(b"Shared" in line for line in lines)
        typ, data = client.select(f"Shared/cardiologie@{DOMAIN}/INBOX")
        assert typ == "NO"
        typ, data = client.namespace()
        assert data == [b'(("" "/")) NIL NIL']
    finally:
        client.logout()


def test_create_rename_delete_status_and_utf7_names(running: RunningOperator) -> None:
    client = logged_in(running, "ines.secretaire")
    try:
        assert client.create('"Patients/H&AOk-l&AOg-ne Dupont"')[0] == "OK"  # imaplib sends names as given
        typ, lines = client.list('""', "Patients/*")
        assert lines == [b'(\\HasNoChildren) "/" "Patients/H&AOk-l&AOg-ne Dupont"']
        assert client.create("Patients")[0] == "NO"  # already there as a parent
        assert client.rename("Patients", "Dossiers")[0] == "OK"
        typ, data = client.status('"Dossiers/H&AOk-l&AOg-ne Dupont"', "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
        assert typ == "OK" and b"MESSAGES 0 UIDNEXT 1" in data[0]
        assert client.delete("INBOX")[0] == "NO"
        assert client.delete("Dossiers")[0] == "OK"
        typ, lines = client.list('""', "Dossiers*")  # the child stays, its parent shows as \Noselect
        assert any(b"\\Noselect" in line and line.endswith(b'"Dossiers"') for line in lines)
        assert client.status("Nowhere", "(MESSAGES)")[0] == "NO"
    finally:
        client.logout()


def test_subscriptions(running: RunningOperator) -> None:
    client = logged_in(running, "ines.secretaire")
    try:
        client.subscribe("Sent")
        client.subscribe("Ghost")
        _, lines = client.lsub()
        assert b'() "/" "Sent"' in lines and b'(\\Noselect) "/" "Ghost"' in lines
        client.unsubscribe("Ghost")
        _typ, lines = client.lsub()
        assert not any(b"Ghost" in line for line in lines)
    finally:
        client.logout()


def test_select_reports_the_folder_state(running: RunningOperator) -> None:
    client = logged_in(running)
    try:
        typ, _ = client.select("inbox")
        assert typ == "OK"
        codes = b" ".join(v for values in client.untagged_responses.values() for v in values if v)
        assert b"UIDVALIDITY" in codes and b"UIDNEXT" in codes and b"PERMANENTFLAGS" in codes
        typ, _data = client.select("Nowhere")
        assert typ == "NO" and client.state == "AUTH"  # a failed SELECT unselects
    finally:
        client.logout()


def raw_exchange(running: RunningOperator, lines: list[bytes]) -> bytes:
    """Send lines (the last one a LOGOUT) on the implicit-TLS port; everything the server said."""
    context = running.tls_context(check_hostname=False)
    address = ("127.0.0.1", running.manifest["listeners"]["imaps"]["port"])
    with socket.create_connection(address, timeout=10) as raw, context.wrap_socket(raw) as conn:
        received = conn.recv(4096)
        for line in lines:
            conn.sendall(line)
            received += conn.recv(65536)
        while chunk := conn.recv(65536):  # until the server closes after LOGOUT
            received += chunk
        return received


def test_protocol_errors_get_bad_and_the_connection_goes_on(running: RunningOperator) -> None:
    answer = raw_exchange(running, [b"a1 FROBNICATE\r\n", b"a2 LOGIN\r\n", b"a3 SELECT INBOX\r\n",
                                    b"a4 NOOP\r\n", b"a5 LOGOUT\r\n"])
    assert b"a1 BAD" in answer and b"a2 BAD" in answer
    assert b"a3 BAD SELECT is not allowed in the not authenticated state" in answer
    assert b"a4 OK" in answer and b"* BYE" in answer and b"a5 OK" in answer


def test_sasl_cancel_and_bad_base64(running: RunningOperator) -> None:
    answer = raw_exchange(running, [b"a1 AUTHENTICATE PLAIN\r\n", b"*\r\n", b"a2 LOGOUT\r\n"])
    assert b"+ " in answer and b"a1 BAD" in answer and b"a2 OK" in answer
    unknown = base64.b64encode(b"\0nobody@" + DOMAIN.encode() + b"\0secret")
    answer = raw_exchange(running, [b"a1 AUTHENTICATE PLAIN " + unknown + b"\r\n", b"a2 LOGOUT\r\n"])
    assert b"a1 NO [AUTHENTICATIONFAILED]" in answer


def deliver(running: RunningOperator, address: str, subject: str) -> None:
    from datetime import UTC, datetime

    from mssante_operator.store import NewMessage

    raw = (f"From: resultats@labo-biolab.mssante.fr\r\nTo: {address}\r\nSubject: {subject}\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\nGlycémie normale.\r\n").encode()
    running.operator.store.deliver(NewMessage(raw=raw, message_id=None, from_addr="resultats@labo", subject=subject,
                                              authentication_results="", received_at=datetime.now(UTC)), [address])


def test_a_mail_client_session_reads_files_flags_and_deletes(running: RunningOperator) -> None:
    address = f"ines.secretaire@{DOMAIN}"
    for n in range(3):
        deliver(running, address, f"Compte rendu {n}")
    client = logged_in(running, "ines.secretaire")
    try:
        typ, data = client.select("INBOX")
        assert typ == "OK" and int(data[0]) == 3
        typ, data = client.search(None, "UNSEEN", "SUBJECT", '"Compte rendu 1"')
        assert data == [b"2"]
        typ, data = client.fetch("2", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.SIZE)")
        assert b"Compte rendu 1" in data[0][1] and b"\\Seen" not in data[0][0]
        typ, data = client.fetch("2", "(BODY[TEXT])")
        assert "Glycémie".encode() in data[0][1]
        typ, data = client.fetch("2", "(FLAGS)")
        assert b"\\Seen" in data[0]
        typ, data = client.copy("1:*", "Archive")
        assert typ == "OK" and data[0].startswith(b"[COPYUID ")
        assert client.store("2", "+FLAGS", "(\\Deleted)")[0] == "OK"
        typ, data = client.expunge()
        assert typ == "OK" and data == [b"2"]
        typ, data = client.status("Archive", "(MESSAGES)")
        assert data[0] == b'"Archive" (MESSAGES 3)'
        message = b"From: ines.secretaire@hopital-demo.mssante.fr\r\nSubject: brouillon\r\n\r\nA relire\r\n"
        typ, data = client.append("Drafts", "(\\Draft)", None, message)
        assert typ == "OK" and data[0].startswith(b"[APPENDUID ")
    finally:
        client.logout()


def test_idle_wakes_on_a_new_delivery(running: RunningOperator) -> None:
    import threading

    address = f"dr.martin@{DOMAIN}"
    client = logged_in(running)
    try:
        client.select("INBOX")
        tag = client._new_tag().decode()
        client.send(f"{tag} IDLE\r\n".encode())
        assert client.readline().startswith(b"+")
        threading.Thread(target=deliver, args=(running, address, "Nouveau résultat")).start()
        line = client.readline()
        assert line.endswith(b"EXISTS\r\n")
        client.send(b"DONE\r\n")
        while not (line := client.readline()).startswith(tag.encode()):
            pass
        assert b"OK" in line
    finally:
        client.logout()


# --------------------------------------------------------------------------- TLS failures and closing


class BioTls:
    """A TLS client over a plain socket through memory BIOs: it sees the server's TCP close itself,
    and never sends a close_notify unless told to (as many real clients never do)."""

    def __init__(self, running: RunningOperator, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = running.tls_context().wrap_bio(self.incoming, self.outgoing)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._receive()
        self._flush()

    def _flush(self) -> None:
        if pending := self.outgoing.read():
            self.sock.sendall(pending)

    def _receive(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.incoming.write(data)
        return True

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def read_until(self, marker: bytes) -> bytes:
        received = b""
        while marker not in received:
            try:
                received += self.tls.read(65536)
            except ssl.SSLWantReadError:
                assert self._receive(), received
            except ssl.SSLZeroReturnError:
                break
        return received

    def closed_by_the_server(self) -> bool:
        """Read on without answering the server's close_notify: True once the server closes TCP."""
        self.sock.settimeout(15)  # asyncio's default wait for close_notify is 30 s; ours must be far shorter
        try:
            while self._receive():
                pass
        except TimeoutError:
            return False
        finally:
            self.sock.close()
        return True


def test_the_server_closes_a_tls_connection_after_logout_without_waiting_for_the_client(
        running: RunningOperator) -> None:
    """Many clients never send close_notify after LOGOUT: the socket must not linger on the server."""
    client = BioTls(running, running.port("imaps"))
    assert client.read_until(b"\r\n").startswith(b"* OK ")
    client.send(b"a LOGOUT\r\n")
    assert b"a OK" in client.read_until(b"a OK")
    assert client.closed_by_the_server()


def wait_for_record(caplog: pytest.LogCaptureFixture, text: str) -> logging.LogRecord:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [record for record in caplog.records if text in record.getMessage()]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no log line with {text!r}")


def test_tls_failures_are_logged_as_one_line_with_the_peer(running: RunningOperator,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A client that refuses our certificate, or sends a broken TLS record after the handshake: one log
    line naming the peer and the reason, no traceback, no "Unhandled exception"."""
    caplog.set_level(logging.INFO)
    untrusting = ssl.create_default_context()  # does not know the kit's CA: refuses the server certificate
    with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", running.port("imaps"))) as raw:
        untrusting.wrap_socket(raw, server_hostname="localhost")
    refused = wait_for_record(caplog, "TLS handshake failed peer=127.0.0.1")
    assert "UNKNOWN_CA" in refused.getMessage()

    client = BioTls(running, running.port("imaps"))
    assert client.read_until(b"\r\n").startswith(b"* OK ")
    client.sock.sendall(b"\x17\x03\x03\x00\x05hello")  # an application-data record that does not decrypt
    broken = wait_for_record(caplog, "imap TLS error peer=127.0.0.1")
    assert "BAD_RECORD_MAC" in broken.getMessage()
    assert client.closed_by_the_server()
    assert not [record for record in caplog.records if record.exc_info or "Unhandled" in record.getMessage()]
