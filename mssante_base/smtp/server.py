"""A hardened aiosmtpd session shared by our SMTP listeners.

aiosmtpd parses the protocol; this subclass adds what a public-facing MTA needs on top of it:
connection limits (total and per IP, with Postfix's stress mode for idle sessions), an idle timeout
and a whole-session deadline that answer ``421`` before closing, strict CRLF on command lines,
envelope addresses checked before any handler sees them (no control character, valid UTF-8,
non-ASCII only with SMTPUTF8), enhanced status codes on every reply and nothing unprintable in
one, limits on refused recipients against directory harvesting (per session and per peer
certificate), the ESMTP extensions we honour (PIPELINING, ENHANCEDSTATUSCODES), and the peer's TLS
identity read once after the handshake (STARTTLS or implicit TLS) and kept on the session.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from aiosmtpd.smtp import MISSING, TLSSetupException

from mssante_base.connection_limits import ConnectionLimiter, LimitReached
from mssante_base.listening import handshake_failure
from mssante_base.ratelimit import FailureLimiter, Limits
from mssante_base.settings import LimitsSettings
from mssante_base.smtp import guards
from mssante_base.smtp.aiosmtpd_adapter import AdaptedSMTP, BareLineEnding, LineTooLong, keeps_syntax
from mssante_base.smtp.peer import peer_of, set_peer
from mssante_base.smtp.replies import PrintableLog, printable, with_enhanced_code
from mssante_base.trust.tls import certificate_fingerprint, peer_tls

log = logging.getLogger(__name__)
log.addFilter(PrintableLog())
logging.getLogger("mail.log").addFilter(PrintableLog())  # aiosmtpd logs commands and addresses as received


_REFUSALS = {
    LimitReached.TOO_MANY_FROM_IP: "421 4.7.0 Too many connections from your address; try again later",
    LimitReached.TOO_MANY_OVERALL: "421 4.3.2 Too many connections; try again later",
}


# <local@domain> with a dot-atom local part and a host-name domain: nearly every MAIL and RCPT argument.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(rf"\s*<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)>\s*(.*)", re.S)


# Payloads up to this size are checked on the event loop (a thread hop would cost more); larger ones, up to
# the 50 MB of a big message, in a thread, so other sessions are not held up while they are scanned.
INLINE_SCAN_BYTES = 1 << 20


def unstuffed(stuffed: bytes, max_line_length: int) -> bytes | None:
    """The message of a dot-stuffed DATA payload, transparency dots dropped (RFC 5321 4.5.2); None when a
    line (between CRLFs) is longer than ``max_line_length`` plus a transparency dot.

    The lines are found with C-level searches, one after the other: no list of a 50 MB message's lines.
    """
    limit, start, find = max_line_length + 1, 0, stuffed.find
    while (end := find(b"\r\n", start)) >= 0:
        if end - start > limit:
            return None
        start = end + 2
    if len(stuffed) - start > limit:
        return None
    content = stuffed[1:] if stuffed.startswith(b".") else stuffed
    return content.replace(b"\r\n.", b"\r\n")


def recipient_failures(limits: LimitsSettings) -> FailureLimiter:
    """The ledger of refused recipients per peer certificate, shared by the MTA listeners of a process."""
    budget = Limits(free=limits.failed_recipients_per_certificate, lockout=limits.failed_recipients_per_certificate,
                    window=limits.failed_recipients_window)
    return FailureLimiter(account=budget, ip=budget)


class GuardedSMTP(AdaptedSMTP):
    """aiosmtpd's SMTP with limits, timeouts, strict line endings and enhanced status codes."""

    def __init__(
        self,
        handler: Any,
        *,
        limits: LimitsSettings,
        limiter: ConnectionLimiter,
        hostname: str,
        error_limits: bool = False,
        failures: FailureLimiter | None = None,
        ident: str = "ESMTP MSSanté operator",
        **kwargs: Any,
    ) -> None:
        """``error_limits``: the session's limits on refused recipients apply (listeners facing peers or
        users; not mes_bridge's LMTP, whose only client is the operator); ``failures``: the ledger of
        refused recipients per client certificate across sessions (the MTA listeners: peer operators);
        ``ident``: what the greeting says after the host name."""
        # Class attribute read by SMTP.__init__ for the stream limit: 998 + transparent dot + CRLF.
        self.line_length_limit = limits.max_line_length + 3
        super().__init__(
            handler,
            data_size_limit=limits.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident=ident,
            timeout=limits.idle_timeout,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            **kwargs,
        )
        self.limits = limits
        self._limiter = limiter
        self._client_ip: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._ehlo_lines: list[str] | None = None
        self._error_limits = error_limits
        self._failures = failures
        self._refused_recipients = 0
        self._closing = False  # a 421 was sent: nothing more is said

    # --- connection life cycle -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = not self.after_starttls
        if first:
            peer = transport.get_extra_info("peername")
            ip = peer[0] if peer else "?"
            refusal = self._limiter.acquire(ip)
            if refusal is not None:
                log.warning("connection refused peer=%s reason=%r", ip, refusal.value)
                transport.write(_REFUSALS[refusal].encode("ascii") + b"\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
            self._client_ip = ip
            self._limiter.waiting(self)
            self._deadline = asyncio.get_running_loop().call_later(
                self.limits.session_timeout, self._close_with, "421 4.4.2 Session too long; closing"
            )
        super().connection_made(transport)
        if first:
            self.use_strict_reader()
        assert self.session is not None
        ssl_object = transport.get_extra_info("ssl_object")
        identity = peer_tls(ssl_object) if ssl_object is not None else None
        set_peer(self.session, identity)
        if identity is not None:
            log.info("tls peer=%s version=%s dn=%r", self._client_ip, identity.version, identity.dn_text)

    def connection_lost(self, error: Exception | None) -> None:
        self._release()
        if self._deadline is not None:
            self._deadline.cancel()
        if self.session is None:  # refused in connection_made: aiosmtpd never started
            return
        super().connection_lost(error)

    def _release(self) -> None:
        """Give the connection slot back (once)."""
        self._limiter.working(self)
        if self._client_ip is not None:
            self._limiter.release(self._client_ip)
            self._client_ip = None

    def _close_with(self, reply: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            log.info("closing peer=%s reply=%r", self._client_ip, reply)
            self.transport.write(reply.encode("ascii") + b"\r\n")  # type: ignore[attr-defined]
            self.transport.close()

    @property
    def client_ip(self) -> str | None:
        """The peer's IP address while the session holds its connection slot."""
        return self._client_ip

    def on_idle_timeout(self) -> None:
        self._close_with("421 4.4.2 Idle for too long; closing")

    def idle_duration(self, duration: float | None) -> float | None:
        """The idle timeout, shortened under pressure for a session that has not started a transaction."""
        if duration is None and self._limiter.under_pressure and self._limiter.is_waiting(self):
            return self.limits.stress_idle_timeout
        return duration

    def hurry(self) -> None:
        """The listener is under pressure: this idle session gets the stress timeout, if that is sooner."""
        deadline = self.idle_deadline()
        if deadline is not None and deadline - self.loop.time() > self.limits.stress_idle_timeout:
            self.restart_idle_timer(self.limits.stress_idle_timeout)

    def evict(self) -> None:
        """Every slot is taken: this session, idle before any transaction, gives its slot to a newcomer."""
        ip = self._client_ip
        self._release()
        if self.transport is not None and not self.transport.is_closing():
            log.info("evicted peer=%s reply=%r", ip, guards.NO_IDLE_SLOT.reply)
            self.transport.write(guards.NO_IDLE_SLOT.reply.encode("ascii") + b"\r\n")  # type: ignore[attr-defined]
            self.transport.close()

    # --- replies -------------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        """Send a reply: enhanced code added, client text made printable; a 421 closes the session."""
        if isinstance(status, bytes):
            status = status.decode("utf-8", "surrogateescape")
        if self._ehlo_lines is not None:
            self._ehlo_lines.append(status)
            return
        if self._closing:
            return
        status = printable(status)
        await super().push(
            with_enhanced_code(status, max_line=self.limits.max_line_length, max_size=self.limits.max_message_size)
        )
        if status.startswith("421") and self.transport is not None:
            self._closing = True
            self.transport.close()

    @keeps_syntax("EHLO")
    async def smtp_EHLO(self, hostname: str) -> None:
        self._ehlo_lines = []
        try:
            await super().smtp_EHLO(hostname)
        finally:
            lines, self._ehlo_lines = self._ehlo_lines, None
        if len(lines) == 1:  # a syntax error, not a greeting
            await self.push(lines[0])
            return
        await self._push_ehlo([line[4:] for line in lines])

    async def _push_ehlo(self, keywords: list[str]) -> None:
        """Send the EHLO reply: our host name, then the extensions we honour."""
        kept = [k for k in keywords[1:] if not k.startswith(("AUTH", "HELP"))]
        keywords = [keywords[0], *kept, "PIPELINING", "ENHANCEDSTATUSCODES", *self.more_extensions()]
        for index, keyword in enumerate(keywords):
            separator = " " if index == len(keywords) - 1 else "-"
            await super().push(f"250{separator}{keyword}")

    def read_path(self, arg: str) -> tuple[str | None, str | None]:
        """The address of a MAIL/RCPT argument and the rest: a simple ``<local@domain>`` is read with one
        regular expression; anything else (quoted local parts, source routes, UTF-8) by aiosmtpd's
        RFC 5322 parser, which costs a tenth of a millisecond per command."""
        match = _SIMPLE_PATH.fullmatch(arg or "")
        if match is None or (self.local_part_limit and len(match.group(1).rpartition("@")[0]) > self.local_part_limit):
            return self.rfc5322_path(arg)
        return match.group(1), match.group(2)

    @keeps_syntax("MAIL")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if not await self._refused_text("MAIL", arg):
            await super().smtp_MAIL(arg)

    @keeps_syntax("RCPT")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self._refused_text("RCPT", arg):
            await super().smtp_RCPT(arg)

    async def _refused_text(self, command: str, arg: str | None) -> bool:
        """Refuse a MAIL or RCPT argument holding control characters or invalid UTF-8, before it is parsed."""
        refusal = guards.check_envelope_text(arg or "", recipient=command == "RCPT")
        if refusal is None:
            return False
        log.info("%s refused peer=%s reply=%r", command.lower(), self._client_ip, refusal.reply)
        await self.push(refusal.reply if command == "MAIL" else await self._recipient_refused(refusal.reply))
        return True

    async def call_handler_hook(self, command: str, *args: Any) -> Any:
        """Check MAIL and RCPT addresses before the handler sees them, and count refused recipients."""
        if command not in ("MAIL", "RCPT"):
            return await super().call_handler_hook(command, *args)
        assert self.envelope is not None
        recipient = command == "RCPT"
        refusal = guards.check_smtputf8(args[0], recipient=recipient, smtputf8=self.envelope.smtp_utf8)
        if refusal is None and recipient and self._certificate_over_budget():
            refusal = guards.CERTIFICATE_OVER_BUDGET
        if refusal is not None:
            log.info("%s refused peer=%s reply=%r", command.lower(), self._client_ip, refusal.reply)
            status: Any = refusal.reply
        else:
            status = await super().call_handler_hook(command, *args)
        if not recipient:
            if isinstance(status, str) and status.startswith("250"):
                self._limiter.working(self)  # a transaction: no longer an idle session to hurry or evict
            return status
        if isinstance(status, str) and status.startswith("5"):
            return await self._recipient_refused(status)
        return status

    def _certificate_key(self) -> str | None:
        """The client certificate's fingerprint: refused recipients are counted per certificate."""
        peer = peer_of(self.session) if self.session is not None else None
        if self._failures is None or peer is None or peer.certificate is None:
            return None
        return certificate_fingerprint(peer.certificate)

    def _certificate_over_budget(self) -> bool:
        key = self._certificate_key()
        return key is not None and self._failures is not None and self._failures.locked(key, "")

    async def _recipient_refused(self, status: str) -> str:
        """Postfix's soft and hard error limits for refused recipients, and the certificate's budget:
        past the soft limit each refusal waits ``error_sleep``; at the hard limit, or when the certificate
        has used its budget, the session ends with 421."""
        if not self._error_limits:
            return status
        self._refused_recipients += 1
        key = self._certificate_key()
        if key is not None and self._failures is not None:
            self._failures.failed(key, "")
        if self._refused_recipients >= self.limits.hard_error_limit or self._certificate_over_budget():
            closing = (guards.TOO_MANY_FAILED_RECIPIENTS if self._refused_recipients >= self.limits.hard_error_limit
                       else guards.CERTIFICATE_OVER_BUDGET)
            log.warning("harvesting stopped peer=%s refused_recipients=%d reply=%r",
                        self._client_ip, self._refused_recipients, closing.reply)
            return closing.reply
        if self._refused_recipients > self.limits.soft_error_limit:
            log.info("refusal delayed peer=%s refused_recipients=%d delay=%.2fs",
                     self._client_ip, self._refused_recipients, self.limits.error_sleep)
            await asyncio.sleep(self.limits.error_sleep)
        return status

    def more_extensions(self) -> list[str]:
        """EHLO keywords a subclass adds (the MTA listener has none: peers do not authenticate by SASL)."""
        return []

    @keeps_syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """DATA, read in one search instead of aiosmtpd's line-by-line loop (same checks, same hooks)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Need a valid RCPT command first")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        stuffed = await self.read_data(self.limits.max_message_size)
        if stuffed is None:
            self.end_transaction()
            await self.push("552 Error: Too much mail data")  # worded by replies.with_enhanced_code
            return
        if len(stuffed) <= INLINE_SCAN_BYTES:
            content = unstuffed(stuffed, self.limits.max_line_length)
        else:
            content = await asyncio.to_thread(unstuffed, stuffed, self.limits.max_line_length)
        if content is None:
            self.end_transaction()
            await self.push("500 Line too long")  # worded by replies.with_enhanced_code
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self.call_handler_hook("DATA")
        self.end_transaction()
        await self.push("250 OK" if status is MISSING else status)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, BareLineEnding):
            return "500 5.5.2 Command lines must end with CRLF; bare LF or CR refused"
        if isinstance(error, LineTooLong):
            return "500 Command line too long"  # worded by replies.with_enhanced_code
        if isinstance(error, TLSSetupException):  # aiosmtpd closes the connection; nothing is said
            log.info("TLS handshake failed peer=%s reason=%s", self._client_ip, handshake_failure(error))
            return ""
        log.exception("session error peer=%s", self._client_ip)
        return "451 4.3.0 Internal error; please try again later"
