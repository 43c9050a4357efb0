"""Outbound delivery to peer operators: SMTP with mandatory STARTTLS and mutual TLS, pooled per domain.

Identity in MSSanté is not the host name. A peer's MX name is whatever its operator chose and
rarely appears in its IGC-Santé certificate; what the trust space vouches for is the certificate's
*DN*, listed in the ANS liste blanche for each domain it serves. So the TLS handshake checks the
chain against the trust CA (OpenSSL, no host-name check), and then, before any envelope is sent,
we check that the certificate is not revoked (our CRLs) and that its DN is listed for the domain
we deliver to. Mail is never sent in clear: a peer without STARTTLS is a temporary failure.

Every problem with the network, TLS or the peer becomes a per-recipient result with a sentence an
administrator can act on (``queue show`` prints it); :meth:`OutboundClient.send` does not raise.
Sessions are reused per domain (RSET between messages) to spare TLS handshakes, at most
``per_peer_connections`` at once, and closed after ``idle_timeout`` without use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import aiosmtplib
from cryptography import x509

from mssante_base.message.dsn import xtext_encode
from mssante_base.trust.revocation import RevocationLists
from mssante_base.trust.tls import PeerTls, peer_tls

from ..outcomes import Reply, ResultKind
from ..trust_space.liste_blanche import ListeBlanche, normalise_domain
from .aiosmtplib_adapter import read_reply, write_message
from .next_hop import NextHop, NextHopError, NextHops

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingRecipient:
    key: int                              # the caller's id for this recipient (the queue's row id)
    address: str
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None              # decoded, e.g. "rfc822;a@b.fr"


@dataclass(frozen=True)
class OutgoingMessage:
    sender: str                           # "" = null sender
    recipients: tuple[OutgoingRecipient, ...]
    raw: bytes                            # the message, CRLF line endings
    envid: str | None = None
    ret: str | None = None                # "FULL" | "HDRS"


@dataclass(frozen=True)
class RecipientResult:
    key: int
    reply: Reply                          # the peer's reply, or our reason
    remote_mta: str = ""                  # the host that answered ("" when none did)
    peer_dsn: bool = False                # the peer speaks DSN: it reports success itself (RFC 3461)
    final: bool = False                   # delivered to its final destination (LMTP), not relayed

    @property
    def kind(self) -> ResultKind:
        return self.reply.kind


class _Failure(Exception):
    """A problem that concerns every recipient not yet answered for (``answered`` keeps the others)."""

    def __init__(self, text: str, *, permanent: bool = False,
                 answered: dict[int, RecipientResult] | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.permanent = permanent
        self.answered = answered or {}


def describe_failure(exc: BaseException, hop: NextHop | str) -> str:
    """One sentence for a network or TLS failure."""
    cause = exc.__cause__ or exc
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused by {hop}"
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError | aiosmtplib.SMTPTimeoutError):
        return f"timed out talking to {hop}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate of {hop} not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: handshake with {hop} failed: {exc.reason or exc}"
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return f"connection to {hop} lost"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{hop} answered {Reply.from_smtp(exc.code, exc.message).line}"
    return f"cannot talk to {hop}: {cause}"


class _Session:
    """One SMTP session whose peer certificate was verified for the pool's domain."""

    def __init__(self, smtp: aiosmtplib.SMTP, hop: NextHop, peer: PeerTls) -> None:
        self.smtp = smtp
        self.hop = hop
        self.peer = peer
        self.used = False
        self.idle_since = 0.0

    @property
    def dsn(self) -> bool:
        return self.smtp.supports_extension("dsn")

    async def quit(self) -> None:
        await _quit(self.smtp)


class _Pool:
    """Idle sessions of one domain and the bound on sessions open at once."""

    def __init__(self, size: int) -> None:
        self.slots = asyncio.Semaphore(size)
        self.idle: list[_Session] = []
        self.reaper: asyncio.TimerHandle | None = None

    def take(self) -> _Session | None:
        while self.idle:
            session = self.idle.pop()
            if session.smtp.is_connected:
                return session
        return None


class OutboundClient:
    """Delivers messages to peer operators; one instance per process, used from one event loop."""

    def __init__(self, *, hostname: str, client_tls: ssl.SSLContext, liste_blanche: Callable[[], ListeBlanche],
                 revocations: Callable[[], RevocationLists], hops: NextHops, per_peer_connections: int = 4,
                 connect_timeout: float = 30, command_timeout: float = 120, idle_timeout: float = 30) -> None:
        # The peer is identified by its DN (see the module docstring), not by the name we dialled:
        # the context must not check host names, must verify the chain, and must not go below TLS 1.2.
        client_tls.check_hostname = False
        client_tls.verify_mode = ssl.CERT_REQUIRED
        if client_tls.minimum_version < ssl.TLSVersion.TLSv1_2:
            client_tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.hostname = hostname
        self.client_tls = client_tls
        self.liste_blanche = liste_blanche
        self.revocations = revocations
        self.hops = hops
        self.per_peer_connections = per_peer_connections
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.idle_timeout = idle_timeout
        self._pools: dict[str, _Pool] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def send(self, domain: str, message: OutgoingMessage) -> list[RecipientResult]:
        """Deliver ``message`` to its recipients (all in ``domain``); one result per recipient."""
        domain = normalise_domain(domain)
        pool = self._pools.setdefault(domain, _Pool(self.per_peer_connections))
        async with pool.slots:
            session = pool.take()
            if session is not None:
                try:
                    return await self._attempt(pool, domain, session, message)
                except _Failure as exc:  # a pooled connection gone stale: once more on a fresh one
                    log.info("outbound: reused session with %s failed (%s); opening a new one", session.hop, exc)
            session = None
            try:
                session = await self._open(domain)
                return await self._attempt(pool, domain, session, message)
            except _Failure as exc:
                return _for_all(message, exc, session)

    async def close(self) -> None:
        """QUIT every idle session; sessions still in use are closed when their message is done."""
        self._closed = True
        for pool in self._pools.values():
            if pool.reaper is not None:
                pool.reaper.cancel()
            idle, pool.idle = pool.idle, []
            for session in idle:
                self._quit_later(session)
        if self._closing:
            await asyncio.wait(self._closing, timeout=10)

    # -- sessions ---------------------------------------------------------------------------

    async def _open(self, domain: str) -> _Session:
        """Connect to the first hop that gives a verified session; _Failure names what went wrong."""
        try:
            hops = await self.hops.resolve(domain)
        except NextHopError as exc:
            raise _Failure(exc.text, permanent=not exc.temporary) from exc
        failures: list[str] = []
        for hop in hops:
            try:
                return await self._connect(domain, hop)
            except _Failure as exc:
                failures.append(exc.text)
        raise _Failure("; ".join(failures))

    async def _connect(self, domain: str, hop: NextHop) -> _Session:
        smtp = aiosmtplib.SMTP(hostname=hop.host, port=hop.port, local_hostname=self.hostname,
                               timeout=self.command_timeout, start_tls=False, tls_context=self.client_tls)
        try:
            await smtp.connect(timeout=self.connect_timeout)
            await smtp.ehlo()
            if not smtp.supports_extension("starttls"):
                raise _Failure(f"peer {hop} does not offer STARTTLS; mail is never sent in clear")
            await smtp.starttls(server_hostname=hop.host)
            session = _Session(smtp, hop, peer_tls(smtp.get_transport_info("ssl_object")))
            self._check_identity(domain, session)
            await smtp.ehlo()
        except _Failure:
            await _quit(smtp)  # the session works, the peer is refused: say goodbye
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:  # ssl.SSLError is an OSError
            _drop(smtp)
            raise _Failure(describe_failure(exc, hop)) from exc
        except BaseException:
            _drop(smtp)
            raise
        log.info("outbound: TLS session with %s for %s (%s, %s)", hop, domain, session.peer.version,
                 session.peer.dn_text)
        return session

    def _check_identity(self, domain: str, session: _Session) -> None:
        """Revocation and liste blanche, checked at every use so a reloaded list applies at once."""
        certificate: x509.Certificate | None = session.peer.certificate
        if certificate is None or session.peer.dn is None:
            raise _Failure(f"TLS: {session.hop} presented no certificate")
        if self.revocations().is_revoked(certificate):
            raise _Failure(f"TLS: certificate of {session.hop} ({session.peer.dn_text}) is revoked")
        if not self.liste_blanche().dn_allowed(domain, session.peer.dn):
            raise _Failure(f"TLS: certificate DN {session.peer.dn_text} is not listed for {domain} "
                           "in the liste blanche")

    async def _attempt(self, pool: _Pool, domain: str, session: _Session,
                       message: OutgoingMessage) -> list[RecipientResult]:
        """One transaction; the session goes back to the pool unless it failed (or we were cancelled)."""
        try:
            results = await self._transact(domain, session, message)
        except BaseException:
            _drop(session.smtp)
            raise
        if self._closed or not session.smtp.is_connected:
            self._quit_later(session)
            return results
        session.idle_since = asyncio.get_running_loop().time()
        pool.idle.append(session)
        if pool.reaper is None:
            self._arm_reaper(pool, self.idle_timeout)
        return results

    def _arm_reaper(self, pool: _Pool, delay: float) -> None:
        pool.reaper = asyncio.get_running_loop().call_later(delay, self._reap, pool)

    def _reap(self, pool: _Pool) -> None:
        """Close sessions idle for idle_timeout; re-arm for the next one to expire."""
        pool.reaper = None
        now = asyncio.get_running_loop().time()
        expired = [s for s in pool.idle if now - s.idle_since >= self.idle_timeout]
        pool.idle = [s for s in pool.idle if s not in expired]
        for session in expired:
            self._quit_later(session)
        if pool.idle:
            oldest = min(s.idle_since for s in pool.idle)
            self._arm_reaper(pool, max(0.0, oldest + self.idle_timeout - now))

    def _quit_later(self, session: _Session) -> None:
        task = asyncio.get_running_loop().create_task(session.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- one transaction --------------------------------------------------------------------

    async def _transact(self, domain: str, session: _Session, message: OutgoingMessage) -> list[RecipientResult]:
        """One message on one session; _Failure when the connection itself fails."""
        done: dict[int, RecipientResult] = {}
        try:
            if session.used:
                self._check_identity(domain, session)
                await session.smtp.rset()
            session.used = True
            await self._envelope_and_data(session, message, done)
        except _Failure as exc:
            exc.answered = done
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _Failure(describe_failure(exc, session.hop), answered=done) from exc
        return [done[recipient.key] for recipient in message.recipients]

    async def _envelope_and_data(self, session: _Session, message: OutgoingMessage,
                                 done: dict[int, RecipientResult]) -> None:
        """MAIL, RCPT per recipient, DATA for those accepted; every reply lands in ``done``."""
        smtp, dsn = session.smtp, session.dsn

        def answer(recipients: list[OutgoingRecipient] | tuple[OutgoingRecipient, ...], code: int, text: str) -> None:
            for r in recipients:
                done[r.key] = RecipientResult(r.key, Reply.from_smtp(code, text), session.hop.host, dsn)

        options, encoding = self._mail_options(session, message), "ascii"
        if not all(a.isascii() for a in (message.sender, *(r.address for r in message.recipients))):
            if not smtp.supports_extension("smtputf8"):
                answer(message.recipients, 553, "5.6.7 non-ASCII address; the peer does not offer SMTPUTF8")
                return
            options, encoding = [*options, "SMTPUTF8"], "utf-8"
        try:
            await smtp.mail(message.sender, options=options, encoding=encoding)
        except aiosmtplib.SMTPSenderRefused as exc:
            answer(message.recipients, exc.code, exc.message)
            return
        accepted: list[OutgoingRecipient] = []
        for recipient in message.recipients:
            try:
                await smtp.rcpt(recipient.address, options=_rcpt_options(recipient) if dsn else [], encoding=encoding)
                accepted.append(recipient)
            except aiosmtplib.SMTPRecipientRefused as exc:
                answer([recipient], exc.code, exc.message)
        if accepted:
            try:
                response = await _data(smtp, message.raw, self.command_timeout)
                answer(accepted, response.code, response.message)
            except aiosmtplib.SMTPDataError as exc:
                answer(accepted, exc.code, exc.message)

    @staticmethod
    def _mail_options(session: _Session, message: OutgoingMessage) -> list[str]:
        smtp, options = session.smtp, []
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(message.raw)}")
        if not message.raw.isascii() and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if session.dsn:
            if message.ret:
                options.append(f"RET={message.ret}")
            if message.envid:
                options.append(f"ENVID={xtext_encode(message.envid)}")
        return options


def _rcpt_options(recipient: OutgoingRecipient) -> list[str]:
    options = []
    if recipient.notify:
        options.append("NOTIFY=" + ",".join(recipient.notify))
    if recipient.orcpt:
        addr_type, _, address = recipient.orcpt.partition(";")
        options.append(f"ORCPT={addr_type};{xtext_encode(address)}")
    return options


async def _data(smtp: aiosmtplib.SMTP, raw: bytes, timeout: float) -> aiosmtplib.SMTPResponse:
    """DATA, then the payload, then the final reply (through the adapter: aiosmtplib's ``data()`` is slow)."""
    start = await smtp.execute_command(b"DATA", timeout=timeout)
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    write_message(smtp, raw)
    response = await read_reply(smtp, timeout)
    if response.code != 250:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


def _for_all(message: OutgoingMessage, failure: _Failure, session: _Session | None) -> list[RecipientResult]:
    reply = Reply(ResultKind.PERMANENT if failure.permanent else ResultKind.TEMPORARY, failure.text)
    remote = session.hop.host if session is not None else ""
    return [failure.answered.get(r.key) or RecipientResult(r.key, reply, remote)
            for r in message.recipients]


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    transport = smtp.transport
    if smtp.is_connected:
        with contextlib.suppress(Exception):
            await smtp.quit(timeout=5)
    _drop(smtp, transport)


def _drop(smtp: aiosmtplib.SMTP, transport: asyncio.BaseTransport | None = None) -> None:
    """Close at once: aiosmtplib's close() starts a TLS close_notify exchange that may never end."""
    transport = transport or smtp.transport
    smtp.close()
    if isinstance(transport, asyncio.Transport):
        transport.abort()
