"""send-bulk's SMTP client against a small aiosmtpd submission server with real mutual TLS.

The server stands for the operator's submission port until tests run against the real one
(test_bulk_e2e.py): it requires the client certificate, accepts ``AUTH EXTERNAL =``, advertises
PIPELINING or not, answers scripted codes and records what arrives.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from mssante_base.smtp.aiosmtpd_adapter import AdaptedSMTP
from mssante_base.trust.tls import client_context, server_context
from mssante_operator.bulk.journal import Outcome
from mssante_operator.bulk.sender import Job, Server, SubmissionError, send_all
from mssante_operator.demo_kit import create_kit

APP = "labo-auto@hopital-demo.mssante.fr"
DOCTOR = "dr.martin@hopital-demo.mssante.fr"
CARDIO = "cardiologie@hopital-demo.mssante.fr"
FAST = {"retries": 2, "backoff": (0.01,)}


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    pipelined: bool   # MAIL arrived in the same read as DATA
    client_cn: str


@dataclass
class FakeSubmission:
    """A submission server on its own loop in a thread; ``script`` holds one-shot replies per command."""

    home: Path
    manifest: dict[str, Any]
    tls: str = "starttls"
    pipelining: bool = True
    auth_reply: str | None = None
    script: dict[str, deque[str]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    auth_args: list[list[str]] = field(default_factory=list)
    port: int = 0

    def answer(self, command: str, *replies: str) -> None:
        """Next ``command`` replies ("DROP" closes the connection instead)."""
        self.script.setdefault(command, deque()).extend(replies)

    def _next(self, command: str) -> str | None:
        queue = self.script.get(command)
        return queue.popleft() if queue else None

    def __enter__(self) -> FakeSubmission:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        context = server_context(self.home / self.manifest["operator_cert"], self.home / self.manifest["operator_key"],
                                 self.home / self.manifest["trust_ca"])
        context.verify_mode = ssl.CERT_REQUIRED
        handler = _Handler(self)

        def factory() -> AdaptedSMTP:
            if self.tls == "implicit":
                return AdaptedSMTP(handler, hostname="submission.test", auth_require_tls=False)
            return AdaptedSMTP(handler, hostname="submission.test", tls_context=context, require_starttls=True)

        async def listen() -> asyncio.Server:
            return await self._loop.create_server(factory, "127.0.0.1", 0,
                                                  ssl=context if self.tls == "implicit" else None)

        self._server = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            self._server.close()
            sessions = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in sessions:
                task.cancel()
            await asyncio.gather(*sessions, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class _Handler:
    def __init__(self, fake: FakeSubmission) -> None:
        self.fake = fake

    def _scripted(self, server: SMTP, command: str) -> str | None:
        reply = self.fake._next(command)
        if reply == "DROP":
            server.transport.close()  # type: ignore[union-attr]
            return "421 4.3.0 closing"
        return reply

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.fake.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def auth_EXTERNAL(self, server: SMTP, args: list[str]) -> AuthResult:
        self.fake.auth_args.append(args)
        if self.fake.auth_reply:
            return AuthResult(success=False, handled=False, message=self.fake.auth_reply)
        return AuthResult(success=True, auth_data=_client_cn(server))

    async def handle_MAIL(self, server: AdaptedSMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        session.pipelined = b"DATA\r\n" in server.unread_input()
        reply = self._scripted(server, "MAIL")
        if reply:
            return reply
        envelope.mail_from = address
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        reply = self.fake._next(f"RCPT {address}") or self.fake._next("RCPT")
        if reply:
            return reply
        if not address.endswith("@hopital-demo.mssante.fr"):
            return "550 5.7.1 Recipient outside the trust space"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self._scripted(server, "DATA")
        if reply:
            return reply
        self.fake.received.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos),
                                           envelope.original_content or b"", getattr(session, "pipelined", False),
                                           session.auth_data))
        return f"250 2.0.0 Message accepted, id Q{len(self.fake.received)}"


def _client_cn(server: SMTP) -> str:
    ssl_object = (server.session.ssl or {}).get("ssl_object") if server.session else None
    if ssl_object is None:
        ssl_object = server.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
    subject = dict(pair[0] for pair in ssl_object.getpeercert()["subject"])
    return subject["commonName"]


def new_kit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A demo kit: (home, manifest)."""
    home = tmp_path_factory.mktemp("bulk") / "home"
    return home, create_kit(home)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return new_kit(tmp_path_factory)


def mailbox(kit: tuple[Path, dict[str, Any]], address: str) -> dict[str, Any]:
    return next(m for m in kit[1]["mailboxes"] if m["address"] == address)


def target(kit: tuple[Path, dict[str, Any]], fake: FakeSubmission, *, ca: str | None = None) -> Server:
    home, manifest = kit
    app = mailbox(kit, APP)
    context = client_context(home / app["cert"], home / app["key"], home / (ca or manifest["trust_ca"]))
    return Server("127.0.0.1", fake.port, "implicit" if fake.tls == "implicit" else "starttls", context,
                  timeout=10)


def report(number: int, recipients: tuple[str, ...] = (DOCTOR,)) -> Job:
    content = (f"From: {APP}\r\nTo: {', '.join(recipients)}\r\nSubject: test\r\n"
               f"Message-ID: <m{number}@test>\r\n\r\nline\r\n.leading dot\r\n").encode()
    return Job(f"r{number}.eml", f"sha{number}", APP, recipients, lambda: content)


def run(server: Server, jobs: list[Job], **options: Any) -> dict[str, Outcome]:
    outcomes: list[Outcome] = []
    asyncio.run(send_all(server, jobs, outcomes.append, **{**FAST, **options}))
    assert len(outcomes) == len(jobs)
    return {o.key: o for o in outcomes}


@pytest.fixture
def fake(kit: tuple[Path, dict[str, Any]], request: pytest.FixtureRequest) -> Iterator[FakeSubmission]:
    options = getattr(request, "param", {})
    with FakeSubmission(kit[0], kit[1], **options) as server:
        yield server


@pytest.mark.parametrize("fake", [{"tls": "starttls"}, {"tls": "implicit"}], indirect=True)
def test_pipelined_submission_over_both_tls_styles(kit: Any, fake: FakeSubmission) -> None:
    outcomes = run(target(kit, fake), [report(n) for n in range(5)], connections=2)
    assert all(o.accepted == (DOCTOR,) and not o.refusals for o in outcomes.values())
    assert sorted(o.queue_id or "" for o in outcomes.values()) == [f"Q{n}" for n in range(1, 6)]
    assert len(fake.received) == 5
    first = fake.received[0]
    assert first.mail_from == APP and first.rcpt_tos == [DOCTOR]
    assert b"\r\n.leading dot\r\n" in first.content  # dot-stuffed on the wire, restored by the server
    assert all(r.pipelined for r in fake.received)
    assert all(args == ["EXTERNAL", "="] for args in fake.auth_args)
    assert len(fake.auth_args) == 2  # one session per connection, reused for several messages
    assert first.client_cn == APP  # the APP certificate was presented


@pytest.mark.parametrize("fake", [{"pipelining": False}], indirect=True)
def test_without_pipelining_commands_go_one_by_one(kit: Any, fake: FakeSubmission) -> None:
    outcomes = run(target(kit, fake), [report(1, (DOCTOR, "x@ailleurs.fr")), report(2, ("y@ailleurs.fr",))])
    assert outcomes["r1.eml"].accepted == (DOCTOR,)
    assert not fake.received[0].pipelined
    refused = outcomes["r2.eml"]
    assert refused.accepted == () and [r.recipient for r in refused.permanent] == ["y@ailleurs.fr"]
    assert len(fake.received) == 1


def test_refused_recipient_is_recorded_with_its_codes(kit: Any, fake: FakeSubmission) -> None:
    outcome = run(target(kit, fake), [report(1, (DOCTOR, "x@ailleurs.fr", CARDIO))])["r1.eml"]
    assert outcome.accepted == (DOCTOR, CARDIO)
    (refusal,) = outcome.refusals
    assert (refusal.recipient, refusal.code, refusal.enhanced, refusal.temporary) == \
        ("x@ailleurs.fr", 550, "5.7.1", False)
    assert refusal.text == "Recipient outside the trust space"
    assert fake.received[0].rcpt_tos == [DOCTOR, CARDIO]


def test_all_recipients_refused_sends_no_message(kit: Any, fake: FakeSubmission) -> None:
    outcomes = run(target(kit, fake), [report(1, ("x@ailleurs.fr",)), report(2)], connections=1)
    assert outcomes["r1.eml"].permanent and not outcomes["r1.eml"].accepted
    assert outcomes["r2.eml"].accepted == (DOCTOR,)  # the session went on after the failed transaction
    assert [r.rcpt_tos for r in fake.received] == [[DOCTOR]]


def test_temporary_refusals_at_mail_and_data_are_retried(kit: Any, fake: FakeSubmission) -> None:
    fake.answer("MAIL", "451 4.3.0 busy")
    fake.answer("DATA", "452 4.3.1 full")
    outcome = run(target(kit, fake), [report(1)], connections=1)["r1.eml"]
    assert outcome.accepted == (DOCTOR,) and not outcome.refusals
    assert len(fake.received) == 1


def test_temporary_refusal_that_persists_is_reported_temporary(kit: Any, fake: FakeSubmission) -> None:
    fake.answer("DATA", *["451 4.3.0 try later"] * 3)  # retries=2: three attempts
    outcome = run(target(kit, fake), [report(1)], connections=1)["r1.eml"]
    assert not outcome.accepted
    assert [(r.recipient, r.code, r.enhanced, r.temporary) for r in outcome.refusals] == \
        [(DOCTOR, 451, "4.3.0", True)]


def test_temporary_recipient_refusal_is_not_retried_in_the_run(kit: Any, fake: FakeSubmission) -> None:
    fake.answer(f"RCPT {CARDIO}", "450 4.2.1 mailbox busy")
    outcome = run(target(kit, fake), [report(1, (DOCTOR, CARDIO))])["r1.eml"]
    assert outcome.accepted == (DOCTOR,)
    assert [(r.recipient, r.temporary) for r in outcome.refusals] == [(CARDIO, True)]


def test_dropped_connection_is_reopened(kit: Any, fake: FakeSubmission) -> None:
    fake.answer("DATA", "DROP")
    outcomes = run(target(kit, fake), [report(1), report(2)], connections=1)
    assert all(o.accepted == (DOCTOR,) for o in outcomes.values())
    assert len(fake.auth_args) == 2


def test_unreachable_server_leaves_every_job_temporary(kit: Any, fake: FakeSubmission) -> None:
    server = target(kit, fake)
    fake.__exit__()  # nothing listens on the port any more
    outcomes = run(server, [report(n) for n in range(6)], connections=2)
    assert all(not o.accepted and o.temporary and not o.permanent for o in outcomes.values())
    assert any("not sent" in o.refusals[0].text for o in outcomes.values())
    fake.__enter__()  # the fixture stops it again


def test_untrusted_server_certificate_stops_the_run(kit: Any, fake: FakeSubmission) -> None:
    with pytest.raises(SubmissionError, match="not trusted"):
        run(target(kit, fake, ca="certs/rogue-ca.pem"), [report(1)])
    assert fake.received == []


def test_refused_authentication_stops_the_run(kit: Any, fake: FakeSubmission) -> None:
    fake.auth_reply = "535 5.7.8 certificate not mapped to a mailbox"
    with pytest.raises(SubmissionError, match=r"535 5\.7\.8"):
        run(target(kit, fake), [report(n) for n in range(3)])
    assert fake.received == []
