"""A peer operator for tests: a real aiosmtpd server with mutual TLS, recording what it receives.

It stands for another MSSanté operator's MTA: STARTTLS with a demo-kit peer certificate, a client
certificate required and verified against the kit's trust CA, and an envelope recorder. Tests script
its answers (``answer("RCPT", "451 4.3.0 try later")`` is used once, then 250 again), choose whether it
advertises DSN, or give it another certificate (the revoked peer's, the rogue's) to check refusals.

Usage::

    with PeerOperator(home, manifest, "labo") as peer:     # listening when the block starts
        routes = {peer.domain: peer.route}                  # "127.0.0.1:PORT"
        ...
        message = peer.wait_for(1)[0]                       # Received(mail_from, rcpt_tos, ...)
        peer.stop(); peer.start()                           # same port, records kept

The server runs on its own event loop in a thread, so both synchronous tests and an operator
running on another loop can talk to it. DSN parameters (NOTIFY, ORCPT, RET, ENVID) are recorded
exactly as sent: aiosmtpd would upper-case them and refuse them with 555, so they are taken off
the command line before aiosmtpd parses it.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mssante_base.smtp.aiosmtpd_adapter import AdaptedSMTP
from mssante_base.trust.tls import peer_tls, server_context
from mssante_operator.demo_kit import LOCALHOST, free_ports

_MAIL_DSN = frozenset({"RET", "ENVID"})
_RCPT_DSN = frozenset({"NOTIFY", "ORCPT"})


@dataclass(frozen=True)
class Received:
    """One message the peer accepted (250 after DATA)."""

    mail_from: str                      # "<>" for the null sender
    rcpt_tos: list[str]
    mail_params: dict[str, str]         # DSN parameters of MAIL, name upper-cased, value as sent
    rcpt_params: list[dict[str, str]]   # DSN parameters of each accepted RCPT, in rcpt_tos order
    content: bytes                      # the message as received (dot-stuffing undone, CRLF kept)
    client_dn: str                      # RFC 4514 subject of the client certificate
    connection: int                     # serial number of the connection that carried it (1, 2, ...)


class _PeerEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.mail_params: dict[str, str] = {}
        self.rcpt_params: list[dict[str, str]] = []


def _take_params(arg: str, names: frozenset[str]) -> tuple[str, dict[str, str]]:
    """Split ``<address> P1=V1 P2`` into the line without ``names`` parameters and those, kept raw."""
    head, _, params = arg.partition(">")
    kept: dict[str, str] = {}
    rest: list[str] = []
    for param in params.split():
        name, _, value = param.partition("=")
        if name.upper() in names:
            kept[name.upper()] = value
        else:
            rest.append(param)
    return " ".join([head + ">", *rest]) if _ else arg, kept


class _PeerSmtp(AdaptedSMTP):
    """aiosmtpd with DSN parameters recorded raw, and connections counted by the owning peer."""

    def __init__(self, peer: PeerOperator, **kwargs: Any) -> None:
        super().__init__(_Handler(peer), **kwargs)
        self.peer = peer
        self.serial = 0

    def create_envelope(self) -> Envelope:
        return _PeerEnvelope()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.after_starttls:  # a new connection, not the STARTTLS upgrade
            self.serial = self.peer._connected(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.peer._disconnected(self)
        super().connection_lost(error)

    async def smtp_MAIL(self, arg: str | None) -> None:
        line, kept = _take_params(arg or "", _MAIL_DSN)
        await super().smtp_MAIL(None if arg is None else line)
        envelope = self.envelope
        if isinstance(envelope, _PeerEnvelope) and envelope.mail_from is not None:
            envelope.mail_params = kept

    async def smtp_RCPT(self, arg: str | None) -> None:
        line, kept = _take_params(arg or "", _RCPT_DSN)
        envelope = self.envelope
        before = len(envelope.rcpt_tos) if envelope else 0
        await super().smtp_RCPT(None if arg is None else line)
        if isinstance(envelope, _PeerEnvelope) and len(envelope.rcpt_tos) > before:
            envelope.rcpt_params.append(kept)


class _Handler:
    """aiosmtpd hooks: EHLO extensions, scripted RCPT/DATA answers, recording."""

    def __init__(self, peer: PeerOperator) -> None:
        self.peer = peer

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        kept = [line for line in responses[:-1] if not line.startswith("250-AUTH")]  # no AUTH between MTAs
        extra = ["250-ENHANCEDSTATUSCODES"] + (["250-DSN"] if self.peer.dsn else [])
        return [*kept, *extra, responses[-1]]

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        """A client without a certificate gets 554 to every command (the chain was checked by OpenSSL)."""
        ssl_object = server.transport.get_extra_info("ssl_object") if server.transport else None
        return ssl_object is not None and ssl_object.getpeercert(binary_form=True) is not None

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        reply = self.peer._next_reply("MAIL", address) or "250 2.1.0 OK"
        if reply.startswith("2"):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self.peer._next_reply("RSET", None) or "250 2.0.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self.peer._next_reply("RCPT", address) or "250 2.1.5 OK"
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self.peer._next_reply("DATA", None) or "250 2.0.0 OK"
        if reply.startswith("2"):
            assert isinstance(server, _PeerSmtp) and isinstance(envelope, _PeerEnvelope)
            ssl_object = server.transport.get_extra_info("ssl_object") if server.transport else None
            self.peer._record(Received(
                mail_from=envelope.mail_from or "", rcpt_tos=list(envelope.rcpt_tos),
                mail_params=dict(envelope.mail_params), rcpt_params=list(envelope.rcpt_params),
                content=bytes(envelope.original_content or b""),
                client_dn=peer_tls(ssl_object).dn_text if ssl_object else "", connection=server.serial,
            ))
        stall = self.peer._take_stall()
        if stall:  # committed, but the answer is slow: a client that dies now never learns it
            await asyncio.sleep(stall)
        return reply


@dataclass
class _State:
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    active: int = 0
    peak: int = 0
    replies: dict[tuple[str, str | None], deque[str]] = field(default_factory=dict)


class PeerOperator:
    """A peer operator's MTA on 127.0.0.1; see the module docstring.

    ``name`` picks a kit peer ("labo", "clinique"); its domain and DN are :attr:`domain` and
    :attr:`dn`. ``cert``/``key`` (paths relative to HOME) replace the certificate presented,
    e.g. the rogue's. ``starttls=False`` makes a peer that offers no TLS at all.
    """

    def __init__(self, home: Path, manifest: dict[str, Any], name: str = "labo", *, cert: str | None = None,
                 key: str | None = None, dsn: bool = True, starttls: bool = True, port: int | None = None) -> None:
        entry = next(p for p in manifest["peers"] if p["name"] == name)
        self.domain: str = entry["domain"]
        self.dn: str = entry["dn"]
        self.dsn = dsn
        self.host = LOCALHOST
        self.port = port or free_ports(1)[0]
        self._tls: ssl.SSLContext | None = None
        if starttls:
            self._tls = server_context(home / (cert or entry["cert"]), home / (key or entry["key"]),
                                       home / manifest["trust_ca"])
        self._lock = threading.Lock()
        self._stall = 0.0
        self._state = _State()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._sessions: set[_PeerSmtp] = set()

    @property
    def route(self) -> str:
        """The ``host:port`` to give the operator as a static route for :attr:`domain`."""
        return f"{self.host}:{self.port}"

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> PeerOperator:
        """Listen (returns once the socket accepts connections); records survive a restart."""
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"peer-{self.port}", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread

        async def listen() -> asyncio.Server:
            return await loop.create_server(self._factory, self.host, self.port, reuse_address=True)

        try:
            self._server = asyncio.run_coroutine_threadsafe(listen(), loop).result(10)
        except BaseException:
            self._halt_loop()
            raise
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection (clients see the peer go away)."""
        if self._loop is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            handlers = [s._handler_coroutine for s in self._sessions if s._handler_coroutine is not None]
            for session in list(self._sessions):
                if session.transport is not None:
                    session.transport.abort()
            if handlers:
                await asyncio.wait(handlers, timeout=5)
            if self._server is not None:
                await self._server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        finally:
            self._server = None
            self._halt_loop()

    def __enter__(self) -> PeerOperator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting and observation ------------------------------------------------------------

    def answer(self, command: str, *replies: str, address: str | None = None) -> None:
        """Queue replies to MAIL, RCPT, RSET or DATA (its end), each used once, then 250 again.

        ``address`` limits MAIL or RCPT replies to that sender or recipient. A refused DATA
        records nothing; ``"421 ..."`` is answered but the connection stays open.
        """
        command = command.upper()
        if command not in {"MAIL", "RCPT", "RSET", "DATA"}:
            raise ValueError(f"cannot script {command}")
        with self._lock:
            self._state.replies.setdefault((command, address), deque()).extend(replies)

    def stall_data(self, seconds: float) -> None:
        """Make the next DATA wait ``seconds`` after it is recorded, before it is answered (a slow peer)."""
        with self._lock:
            self._stall = seconds

    def _take_stall(self) -> float:
        with self._lock:
            stall, self._stall = self._stall, 0.0
        return stall

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._state.received)

    @property
    def connections(self) -> int:
        """Connections accepted since this object was made (across restarts)."""
        with self._lock:
            return self._state.connections

    @property
    def open_connections(self) -> int:
        """Connections open now."""
        with self._lock:
            return self._state.active

    @property
    def peak_connections(self) -> int:
        """The most connections that were open at the same time."""
        with self._lock:
            return self._state.peak

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        """The received messages once there are at least ``count``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(received := self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"peer received {len(received)} messages, expected {count}")
            time.sleep(0.02)
        return received

    # -- called from the server's loop ---------------------------------------------------------

    def _factory(self) -> _PeerSmtp:
        return _PeerSmtp(self, hostname=f"smtp.{self.domain}", tls_context=self._tls,
                         require_starttls=self._tls is not None, timeout=60)

    def _connected(self, session: _PeerSmtp) -> int:
        self._sessions.add(session)
        with self._lock:
            state = self._state
            state.connections += 1
            state.active += 1
            state.peak = max(state.peak, state.active)
            return state.connections

    def _disconnected(self, session: _PeerSmtp) -> None:
        if session in self._sessions:
            self._sessions.discard(session)
            with self._lock:
                self._state.active -= 1

    def _next_reply(self, command: str, address: str | None) -> str | None:
        with self._lock:
            for key in ((command, address), (command, None)):
                queue = self._state.replies.get(key)
                if queue:
                    return queue.popleft()
        return None

    def _record(self, received: Received) -> None:
        with self._lock:
            self._state.received.append(received)

    def _halt_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
