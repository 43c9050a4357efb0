"""Hostile sessions on the SMTP listeners: directory harvesting, idle-connection floods, weak TLS.

Each test runs an operator of its own with small limits (a handful of slots, a short error sleep),
and waits on what the server says (a reply line, a closed socket, a log line), never on a clock.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
)

from mssante_base.connection_limits import ConnectionLimiter, LimitReached
from mssante_base.trust.tls import client_context, server_context
from mssante_operator.demo_kit import TRUST_CA_KEY
from mssante_operator.trust_space import dev_pki

HOSPITAL = "hopital-demo.mssante.fr"
CBC_SUITES = "ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256"


def _reply(answer: tuple[int, bytes]) -> str:
    code, text = answer
    return f"{code} {text.decode('utf-8', 'replace')}"


def _read_line(sock: socket.socket, timeout: float = 30.0) -> bytes:
    """One reply line, or b"" when the server closed the connection."""
    sock.settimeout(timeout)
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            return line
        line += chunk
    return line


def _idle(running: RunningOperator, source: str) -> socket.socket:
    """A connection from ``source`` (a loopback address) that reads the greeting and then says nothing."""
    sock = socket.create_connection(("127.0.0.1", running.port("mta")), timeout=30, source_address=(source, 0))
    return sock


def _wait_for_record(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 30.0) -> logging.LogRecord:
    """The first captured log record whose message contains ``text`` (the server logs on its own thread)."""
    deadline = time.monotonic() + timeout
    while True:
        for record in list(caplog.records):
            if text in record.getMessage():
                return record
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line with {text!r}")
        time.sleep(0.02)


# --- directory harvesting (Postfix's smtpd_soft/hard_error_limit, smtpd_error_sleep_time) ------------------


@pytest.fixture
def harvest_kit(tmp_path: Path) -> Iterator[RunningOperator]:
    manifest = make_kit(tmp_path, limits={"soft_error_limit": 2, "hard_error_limit": 4, "error_sleep": "0.05s",
                                          "failed_recipients_per_certificate": 7})
    with running_operator(tmp_path, manifest) as running:
        yield running


def test_unknown_recipients_are_delayed_then_the_session_closes_421_4_7_0(harvest_kit, caplog):
    caplog.set_level(logging.INFO)
    labo = peer(harvest_kit.manifest, "labo")
    with connect(harvest_kit, labo) as client:
        client.mail(labo["sender"])
        replies = [_reply(client.rcpt(f"inconnu{n}@{HOSPITAL}")) for n in range(4)]
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    assert [reply[:9] for reply in replies] == ["550 5.1.1"] * 3 + ["421 4.7.0"]
    assert replies[3] == "421 4.7.0 Too many refused recipients in this session; closing"
    delayed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refusal delayed")]
    assert [line.split()[3] for line in delayed] == ["refused_recipients=3"]  # past the soft limit only


def test_accepted_recipients_do_not_count(harvest_kit):
    labo = peer(harvest_kit.manifest, "labo")
    with connect(harvest_kit, labo) as client:
        client.mail(labo["sender"])
        replies = [_reply(client.rcpt(address)) for address in [f"inconnu@{HOSPITAL}", DOCTOR] * 3]
    assert [reply[:3] for reply in replies] == ["550", "250"] * 3


def test_refused_recipients_are_counted_per_certificate_across_sessions(harvest_kit):
    labo = peer(harvest_kit.manifest, "labo")
    first: list[str] = []
    for _ in range(2):  # 3 + 3 refusals: under the session's hard limit each time
        with connect(harvest_kit, labo) as client:
            client.mail(labo["sender"])
            first += [_reply(client.rcpt(f"inconnu{n}@{HOSPITAL}")) for n in range(3)]
    with connect(harvest_kit, labo) as client:
        client.mail(labo["sender"])
        seventh = _reply(client.rcpt(f"inconnu7@{HOSPITAL}"))
    with connect(harvest_kit, labo) as client:
        client.mail(labo["sender"])
        known = _reply(client.rcpt(DOCTOR))  # not even looked up: the certificate has used its budget
    assert [reply[:9] for reply in first] == ["550 5.1.1"] * 6
    assert seventh.startswith("421 4.7.0 Too many refused recipients for your certificate")
    assert known.startswith("421 4.7.0 Too many refused recipients for your certificate")
    second_server = _second_labo_server(harvest_kit)
    with connect(harvest_kit, second_server) as client:  # another certificate of the same peer has its own
        client.mail(labo["sender"])
        assert _reply(client.rcpt(DOCTOR)).startswith("250 2.1.5")


def test_the_submission_listener_has_the_session_error_limits(harvest_kit):
    with smtplib.SMTP("127.0.0.1", harvest_kit.port("submission"), timeout=30) as client:
        client.starttls(context=harvest_kit.tls_context())
        client.login(DOCTOR, harvest_kit.mailbox(DOCTOR)["password"])
        client.mail(DOCTOR)
        replies = [_reply(client.rcpt(f"inconnu{n}@{HOSPITAL}")) for n in range(4)]
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    assert [reply[:9] for reply in replies] == ["550 5.1.1"] * 3 + ["421 4.7.0"]


def _second_labo_server(running: RunningOperator) -> dict[str, Any]:
    """A certificate of the kit's trust CA for the labo's second listed server (smtp2)."""
    home = running.home
    ca = dev_pki.Authority(
        cert=x509.load_pem_x509_certificate((home / running.manifest["trust_ca"]).read_bytes()),
        key=serialization.load_pem_private_key((home / TRUST_CA_KEY).read_bytes(), password=None),  # type: ignore[arg-type]
    )
    issued = dev_pki.issue(ca, cn="smtp2.labo-biolab.mssante.fr", ou="38012345600017", org="LABORATOIRE BIOLAB",
                           st="Rhône (69)", dns_names=("smtp2.labo-biolab.mssante.fr",))
    dev_pki.write_chain(home / "certs/extra/smtp2.pem", issued.chain)
    dev_pki.write_key(home / "certs/extra/smtp2.key", issued.key)
    return {"cert": "certs/extra/smtp2.pem", "key": "certs/extra/smtp2.key"}


# --- idle-connection floods (Postfix's stress mode) ----------------------------------------------------------


def test_idle_sessions_under_pressure_are_closed_at_the_stress_timeout(tmp_path):
    manifest = make_kit(tmp_path, limits={"max_connections": 4, "max_connections_per_ip": 1, "stress_threshold": 0.75,
                                          "stress_idle_timeout": "0.5s"})
    labo = peer(manifest, "labo")
    raw = signed(tmp_path, labo, lab_report(labo["sender"], [DOCTOR]))
    with running_operator(tmp_path, manifest) as running, connect(running, labo) as working:
        assert working.mail(labo["sender"])[0] == 250  # a transaction: never hurried
        idle = [_idle(running, f"127.0.0.{n}") for n in (2, 3)]  # 3 of 4 slots: under pressure
        try:
            greetings = [_read_line(sock) for sock in idle]
            closings = [_read_line(sock) for sock in idle]  # waited for: the normal idle timeout is 300 s
            ends = [_read_line(sock) for sock in idle]
        finally:
            for sock in idle:
                sock.close()
        assert working.rcpt(DOCTOR)[0] == 250
        final = _reply(working.data(raw))
    assert all(line.startswith(b"220 ") for line in greetings)
    assert all(line.startswith(b"421 4.4.2 Idle for too long") for line in closings), closings
    assert ends == [b"", b""]
    assert final.startswith("250 2.0.0")


def test_a_listed_peer_gets_in_while_idle_connections_flood(tmp_path):
    # A long stress timeout: here only eviction frees slots, whatever the load of the machine.
    manifest = make_kit(tmp_path, limits={"max_connections": 4, "max_connections_per_ip": 1,
                                          "stress_idle_timeout": "5m"})
    labo = peer(manifest, "labo")
    raw = signed(tmp_path, labo, lab_report(labo["sender"], [DOCTOR]))
    opened: list[socket.socket] = []
    with running_operator(tmp_path, manifest) as running:
        try:
            flood = [_idle(running, f"127.0.0.{n}") for n in range(2, 10)]  # 8 sources for 4 slots
            opened += flood
            greetings = [_read_line(sock) for sock in flood]
            evicted = [_read_line(sock) for sock in flood[:4]]  # the oldest idle ones gave their slots
            same_source = _idle(running, "127.0.0.9")  # the per-source limit holds under the flood
            opened.append(same_source)
            per_source = _read_line(same_source)
            with connect(running, labo) as client:  # every slot is taken by an idle connection
                assert client.mail(labo["sender"])[0] == 250
                later = _idle(running, "127.0.0.10")  # evicts an idle one, never the working peer
                opened.append(later)
                assert _read_line(later).startswith(b"220 ")
                assert client.rcpt(DOCTOR)[0] == 250
                final = _reply(client.data(raw))
            evicted_later = [_read_line(sock) for sock in flood[4:6]]
        finally:
            for sock in opened:
                sock.close()
    assert all(line.startswith(b"220 ") for line in greetings)
    assert all(line.startswith(b"421 4.3.2 ") for line in evicted), evicted
    assert per_source.startswith(b"421 4.7.0 Too many connections from your address")
    assert final.startswith("250 2.0.0")
    assert all(line.startswith(b"421 4.3.2 ") for line in evicted_later), evicted_later


# --- TLS: AEAD suites only, a failed handshake is one log line ------------------------------------------------


def test_our_contexts_offer_tls_1_2_only_aead_suites(tmp_path):
    manifest = make_kit(tmp_path)
    cert, key, ca = (tmp_path / manifest[name] for name in ("operator_cert", "operator_key", "trust_ca"))
    for context in (server_context(cert, key, ca), client_context(cert, key, ca)):
        suites = [suite for suite in context.get_ciphers() if suite["protocol"] == "TLSv1.2"]
        assert suites and all(suite["aead"] for suite in suites), [s["name"] for s in suites if not s["aead"]]


def test_our_contexts_trust_the_trust_space_only(tmp_path):
    """The system's public CAs never vouch for a peer: a context's trust store is the ca_bundle."""
    manifest = make_kit(tmp_path)
    cert, key, ca = (tmp_path / manifest[name] for name in ("operator_cert", "operator_key", "trust_ca"))
    bundle = ssl.create_default_context(cafile=str(ca))  # what the file alone holds
    expected = {item["serialNumber"] for item in bundle.get_ca_certs() if item["serialNumber"]} - {
        item["serialNumber"] for item in ssl.create_default_context().get_ca_certs()}
    for context in (server_context(cert, key, ca), client_context(cert, key, ca)):
        assert {item["serialNumber"] for item in context.get_ca_certs()} == expected
        assert context.cert_store_stats()["x509_ca"] == len(expected)
    assert client_context(cert, key, ca).check_hostname and client_context(cert, key, ca).verify_mode == \
        ssl.CERT_REQUIRED


def _cbc_only(running: RunningOperator) -> ssl.SSLContext:
    labo = peer(running.manifest, "labo")
    context = client_tls(running.home, running.manifest, labo["cert"], labo["key"])
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CBC_SUITES)
    return context


@pytest.mark.parametrize("listener", ["mta", "mtas", "submission"])
def test_cbc_suites_are_refused_and_the_failure_is_one_log_line(tmp_path, caplog, listener):
    caplog.set_level(logging.INFO)
    manifest = make_kit(tmp_path)
    with running_operator(tmp_path, manifest) as running:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            if listener == "mtas":
                with socket.create_connection(("127.0.0.1", running.port(listener)), timeout=30) as sock, \
                        _cbc_only(running).wrap_socket(sock) as tls:
                    tls.recv(1)
            else:
                with smtplib.SMTP("127.0.0.1", running.port(listener), timeout=30) as client:
                    client.ehlo("smtp.test")
                    client.starttls(context=_cbc_only(running))
        record = _wait_for_record(caplog, "TLS handshake failed")
        with connect(running, peer(manifest, "labo"), listener="mta") as client:  # the listener is fine
            assert client.noop()[0] == 250
            assert client.sock.cipher()[0] not in CBC_SUITES.split(":")
    assert record.getMessage() in {"TLS handshake failed peer=127.0.0.1 reason=NO_SHARED_CIPHER",
                                   "TLS handshake failed peer=127.0.0.1 reason=NO_CIPHERS_AVAILABLE"}
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# --- the limiter's bookkeeping -------------------------------------------------------------------------------


class _Session:
    def __init__(self, limiter: ConnectionLimiter, ip: str) -> None:
        self.limiter, self.ip = limiter, ip
        self.hurried = self.evicted = False

    def hurry(self) -> None:
        self.hurried = True

    def evict(self) -> None:
        self.evicted = True
        self.limiter.working(self)
        self.limiter.release(self.ip)


def test_limiter_hurries_waiting_sessions_under_pressure_and_evicts_the_oldest_when_full():
    limiter = ConnectionLimiter(maximum=3, per_ip=1, stress_threshold=1.0)
    sessions = []
    for n in range(3):
        assert limiter.acquire(f"10.0.0.{n}") is None
        sessions.append(_Session(limiter, f"10.0.0.{n}"))
        limiter.waiting(sessions[-1])
        if n == 0:
            limiter.working(sessions[0])  # started a transaction: never hurried, never evicted
    assert [s.hurried for s in sessions] == [False, True, False]  # told on entering stress (3 of 3)
    assert limiter.under_pressure
    assert limiter.acquire("10.0.0.1") is LimitReached.TOO_MANY_FROM_IP  # the per-source limit holds
    assert limiter.acquire("10.0.0.9") is None
    assert [s.evicted for s in sessions] == [False, True, False]
    limiter.working(sessions[2])
    assert limiter.acquire("10.0.0.8") is LimitReached.TOO_MANY_OVERALL  # nobody idle left to give a slot
