"""Test fixtures of mes_bridge: a trust space, a HOME with a [bridge] table, the service on real sockets.

``make_bridge_home(home)`` writes certificates (trusted operator, untrusted one, revoked one, a rogue
CA's), patients.json with a patient in each state, and config.toml; ``running_bridge(home)`` runs the
service in a thread with its own event loop (ports chosen by the system); the clients below speak
HTTPS and LMTP over TLS with the blocking standard library, as a foreign operator would.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from stdnum.fr import nir

from mes_bridge.service import BridgeService
from mes_bridge.settings import BridgeSettings, load_bridge_settings
from mssante_base.passwords import password_hasher
from mssante_base.trust.tls import client_context
from mssante_operator.trust_space import dev_pki


def make_ins(first13: str) -> str:
    """A valid matricule INS from its 13 first characters (the key computed)."""
    return first13 + nir.calc_check_digits(first13)


INS = {
    "active": make_ins("1840675123456"),
    "not_activated": make_ins("2920133012345"),
    "opposed": make_ins("1750469123456"),
    "closed": make_ins("2011275456789"),
    "corsica": make_ins("18506" + "2A" + "123456"),  # active, Corsican department
    "unknown": make_ins("1990875111222"),  # valid, never seeded
}
PASSWORD = "patient-password-1"


def address(name: str) -> str:
    return f"{INS[name].lower()}@patient.mssante.fr"


@dataclass(frozen=True)
class Party:
    """A certificate and key on disk, and its subject DN."""

    cert: Path
    key: Path
    dn: str


def _write_party(folder: Path, name: str, issued: dev_pki.Issued) -> Party:
    dev_pki.write_chain(folder / f"{name}.pem", issued.chain)
    dev_pki.write_key(folder / f"{name}.key", issued.key)
    return Party(folder / f"{name}.pem", folder / f"{name}.key", issued.dn)


def make_bridge_home(home: Path, *, lmtp_port: int = 0, registry_port: int = 0, **bridge: Any) -> dict[str, Any]:
    """Write HOME (certs/, patients.json, config.toml); returns the parties and paths by name."""
    certs = home / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    ca = dev_pki.make_ca("AC IGC-SANTE TEST", "ASIP-SANTE")
    rogue_ca = dev_pki.make_ca("AC ROGUE", "Rogue")
    dev_pki.write_chain(certs / "trust-ca.pem", [ca.cert])
    key = dev_pki.make_key()  # one key for the leaves: tests need many certificates quickly

    def leaf(authority: dev_pki.Authority, cn: str, ou: str) -> dev_pki.Issued:
        return dev_pki.issue(authority, cn=cn, ou=ou, org="Test", st="Paris (75)", dns_names=[cn, "localhost"],
                             ip_addresses=["127.0.0.1"], key=key)

    parties = {
        "bridge": _write_party(certs, "bridge", leaf(ca, "mes-bridge.test", "BRIDGE")),
        "operator": _write_party(certs, "operator", leaf(ca, "smtp.operator.test", "318003502400041")),
        "stranger": _write_party(certs, "stranger", leaf(ca, "smtp.stranger.test", "999")),
        "rogue": _write_party(certs, "rogue", leaf(rogue_ca, "smtp.operator.test", "318003502400041")),
    }
    revoked = leaf(ca, "smtp.revoked.test", "777")
    parties["revoked"] = _write_party(certs, "revoked", revoked)
    dev_pki.write_crl(certs / "trust-ca.crl.pem", dev_pki.make_crl(ca, [revoked.cert.serial_number]))
    password_hash = password_hasher().hash(PASSWORD)
    patients = [
        {"ins": INS[name], "state": state, "given_name": "Jeanne", "family_name": name.title(),
         "password_hash": password_hash, "email": f"{name}@example.org"}
        for name, state in [("active", "active"), ("not_activated", "not_activated"), ("opposed", "opposed"),
                            ("closed", "closed"), ("corsica", "active")]
    ]
    (home / "patients.json").write_text(json.dumps({"patients": patients}), encoding="utf-8")
    table = {
        "database": "sqlite:///bridge.db",
        "blob_dir": "bridge-blobs",
        "cert": "certs/bridge.pem",
        "key": "certs/bridge.key",
        "ca_bundle": "certs/trust-ca.pem",
        "crl_files": ["certs/trust-ca.crl.pem"],
        "trusted_operators": [parties["operator"].dn, parties["revoked"].dn],
        "patients_file": "patients.json",
        "max_message_size": 64 * 1024,
        "listeners": {"lmtp": {"host": "127.0.0.1", "port": lmtp_port},
                      "registry": {"host": "127.0.0.1", "port": registry_port}},
        **bridge,
    }
    write_config(home, table)
    return {"home": home, "parties": parties, "table": table, "ca": ca, "revoked_serials": [revoked.cert.serial_number]}


def write_config(home: Path, table: dict[str, Any], **other: Any) -> None:
    (home / "config.toml").write_text(tomli_w.dumps({**other, "bridge": table}), encoding="utf-8")


@dataclass
class RunningBridge:
    settings: BridgeSettings
    service: BridgeService
    loop: asyncio.AbstractEventLoop
    kit: dict[str, Any] | None = None  # what make_bridge_home wrote, when fresh_bridge made it

    @property
    def lmtp_port(self) -> int:
        return self.service.ports["lmtp"]

    @property
    def registry_port(self) -> int:
        return self.service.ports["registry"]

    def call(self, coroutine: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the service's loop (e.g. send_patient_message) and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


@contextmanager
def running_bridge(home: Path) -> Iterator[RunningBridge]:
    """The service of HOME on its own event loop in a thread, listening until the block ends."""
    settings = load_bridge_settings(home)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bridge", daemon=True)
    thread.start()
    service: BridgeService | None = None
    try:
        service = asyncio.run_coroutine_threadsafe(_create(settings), loop).result(60)
        yield RunningBridge(settings, service, loop)
    finally:
        if service is not None:
            asyncio.run_coroutine_threadsafe(service.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@contextmanager
def fresh_bridge(tmp_path_factory: Any, **bridge: Any) -> Iterator[RunningBridge]:
    """A new HOME (``make_bridge_home``) and its running service, for a module-scoped fixture."""
    kit = make_bridge_home(tmp_path_factory.mktemp("bridge") / "home", **bridge)
    with running_bridge(kit["home"]) as running:
        running.kit = kit
        yield running


async def _create(settings: BridgeSettings) -> BridgeService:
    service = BridgeService(settings)
    await service.start()
    return service


def tls_for(kit: dict[str, Any] | RunningBridge, who: str | None) -> ssl.SSLContext:
    """A client context presenting ``who``'s certificate (None: no certificate), verifying the bridge."""
    if isinstance(kit, RunningBridge):
        assert kit.kit is not None
        kit = kit.kit
    party = kit["parties"][who] if who else None
    return client_context(party.cert if party else None, party.key if party else None,
                          kit["home"] / "certs" / "trust-ca.pem")


def https_get(port: int, path: str, context: ssl.SSLContext) -> tuple[int, Any]:
    """GET over HTTPS; the status and the decoded JSON body."""
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


class LMTPS(smtplib.LMTP):
    """smtplib's LMTP client over implicit TLS (smtplib has SMTP_SSL, not LMTP_SSL)."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__("127.0.0.1", port, local_hostname="operator.test", timeout=30)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return self.context.wrap_socket(super()._get_socket(host, port, timeout), server_hostname=host)


def lmtp_transaction(
    client: smtplib.LMTP, mail_from: str, recipients: list[str], payload: bytes
) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """MAIL, RCPT each, DATA with ``payload`` sent as is (bare LFs kept); RCPT replies and DATA replies.

    The DATA replies are read one per accepted recipient (RFC 2033), with smtplib's reply reader.
    """
    client.ehlo_or_helo_if_needed()
    code, text = client.mail(mail_from)
    assert code == 250, (code, text)
    rcpt_replies = [client.rcpt(recipient) for recipient in recipients]
    accepted = sum(1 for code, _ in rcpt_replies if code == 250)
    if not accepted:
        return rcpt_replies, []
    code, text = client.docmd("DATA")
    assert code == 354, (code, text)
    stuffed = payload.replace(b"\r\n.", b"\r\n..")
    client.send(stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n")
    return rcpt_replies, [client.getreply() for _ in range(accepted)]


def message(message_id: str = "<m1@operator.test>", *, subject: str = "Compte rendu", body: str = "Bonjour.",
            to: str = "patient") -> bytes:
    lines = [
        "From: Dr Martin <dr.martin@hopital.operator.test>",
        f"To: {to}",
        f"Subject: {subject}",
        f"Message-ID: {message_id}",
        "Date: Mon, 01 Jan 2024 10:00:00 +0100",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        body,
        "",
    ]
    return "\r\n".join(lines).encode()


# -- a stand-in for the operator's submission listener (implicit TLS, AUTH EXTERNAL) -----------------


@dataclass
class Submitted:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    authenticated_dn: str


class _SubmissionHandler:
    def __init__(self, refuse: dict[str, str]) -> None:
        self.refuse = refuse
        self.received: list[Submitted] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(Submitted(envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                                       session.external_dn))
        return "250 2.0.0 Queued"


def _submission_class() -> type:
    from aiosmtpd.smtp import SMTP

    from mssante_base.trust.tls import peer_tls

    class Submission(SMTP):
        """aiosmtpd answering AUTH EXTERNAL for the expected certificate DN only, MAIL only after it."""

        expected_dn = ""

        async def smtp_AUTH(self, arg: str) -> None:
            assert self.session is not None and self.transport is not None
            dn = peer_tls(self.transport.get_extra_info("ssl_object")).dn_text
            if arg.split()[:2] == ["EXTERNAL", "="] and dn == self.expected_dn:
                self.session.external_dn = dn
                await self.push("235 2.7.0 Authentication successful")
            else:
                await self.push("535 5.7.8 Authentication credentials invalid")

        async def smtp_MAIL(self, arg: str) -> None:
            if not getattr(self.session, "external_dn", None):
                await self.push("530 5.7.0 Authentication required")
                return
            await super().smtp_MAIL(arg)

    return Submission


@dataclass
class FakeSubmission:
    port: int
    handler: _SubmissionHandler

    @property
    def received(self) -> list[Submitted]:
        return self.handler.received


@contextmanager
def fake_submission(kit: dict[str, Any], refuse: dict[str, str] | None = None,
                    expected: str = "bridge") -> Iterator[FakeSubmission]:
    """The operator's submission listener as the bridge sees it, on its own loop in a thread."""
    from mssante_base.trust.tls import server_context

    operator = kit["parties"]["operator"]
    context = server_context(operator.cert, operator.key, kit["home"] / "certs" / "trust-ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    handler = _SubmissionHandler(refuse or {})
    submission = _submission_class()
    submission.expected_dn = kit["parties"][expected].dn
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="submission", daemon=True)
    thread.start()

    async def start() -> asyncio.AbstractServer:
        return await loop.create_server(lambda: submission(handler, hostname="operator.test"), "127.0.0.1", 0,
                                        ssl=context)

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield FakeSubmission(server.sockets[0].getsockname()[1], handler)
    finally:
        server.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
