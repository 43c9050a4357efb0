"""Hand-off of patients' mail to mes_bridge over LMTP (RFC 2033), with mutual TLS.

The queue runner calls :meth:`LmtpClient.send` for recipients in ``patient.mssante.fr``, as it calls the
outbound client for peer operators: the patient target is durable and retried like the outbound queue, so
the bridge being down means delay, never loss. LMTP answers DATA once *per recipient*, so one patient's
space refusing a message does not hold up the others. The bridge is identified by its certificate
subject (``[patients] bridge_dn``), not by host name; the session is TLS from the first byte, and we
present the operator's certificate, which the bridge checks in turn.

aiosmtplib carries the dialogue (LHLO is sent as a plain command, and the per-recipient replies after the
payload are read through :mod:`.aiosmtplib_adapter`). Sessions are reused (RSET between messages) and closed when idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

import aiosmtplib
from cryptography import x509

from mssante_base.message.dsn import xtext_encode
from mssante_base.trust.dn import NormalDn, name_to_dn

from ..outcomes import Reply, ResultKind
from .aiosmtplib_adapter import read_reply, write_message
from .outbound import OutgoingMessage, RecipientResult, describe_failure

log = logging.getLogger(__name__)


def _reply(response: aiosmtplib.SMTPResponse) -> Reply:
    return Reply.from_smtp(response.code, response.message)


class _Refused(Exception):
    """The whole transaction failed; ``temporary`` says whether to retry."""

    def __init__(self, text: str, *, temporary: bool = True) -> None:
        super().__init__(text)
        self.text = text
        self.temporary = temporary


class LmtpClient:
    """Delivers messages to the bridge's LMTP intake; one instance per process."""

    def __init__(self, *, host: str, port: int, hostname: str, client_tls: ssl.SSLContext, bridge_dn: NormalDn,
                 connections: int = 4, timeout: float = 60.0, idle_timeout: float = 30.0) -> None:
        client_tls.check_hostname = False  # identity is the DN, checked after the handshake
        client_tls.verify_mode = ssl.CERT_REQUIRED
        client_tls.minimum_version = max(client_tls.minimum_version, ssl.TLSVersion.TLSv1_2)
        self.host, self.port, self.hostname = host, port, hostname
        self._tls = client_tls
        self._bridge_dn = bridge_dn
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._timeout = timeout
        self._idle_timeout = idle_timeout

    @property
    def where(self) -> str:
        return f"mes_bridge LMTP {self.host}:{self.port}"

    async def send(self, message: OutgoingMessage) -> list[RecipientResult]:
        """Deliver ``message`` to its patient recipients; one result per recipient, never raises."""
        async with self._slots:
            smtp = self._take()
            try:
                if smtp is None:
                    smtp = await self._open()
                results = await self._transaction(smtp, message)
            except (_Refused, aiosmtplib.SMTPException, OSError) as exc:
                await self._discard(smtp)
                text = exc.text if isinstance(exc, _Refused) else describe_failure(exc, self.where)
                temporary = not isinstance(exc, _Refused) or exc.temporary
                reply = Reply(ResultKind.TEMPORARY if temporary else ResultKind.PERMANENT, text)
                return [RecipientResult(r.key, reply, self.host) for r in message.recipients]
            self._idle.append((smtp, asyncio.get_running_loop().time()))
            return results

    async def _open(self) -> aiosmtplib.SMTP:
        smtp = aiosmtplib.SMTP(hostname=self.host, port=self.port, use_tls=True, tls_context=self._tls,
                               local_hostname=self.hostname, timeout=self._timeout)
        await smtp.connect()
        self._check_bridge(smtp)
        response = await smtp.execute_command(b"LHLO", self.hostname.encode("ascii"))
        if response.code != 250:
            raise _Refused(f"{self.where} refused LHLO: {_reply(response).line}")
        return smtp

    def _check_bridge(self, smtp: aiosmtplib.SMTP) -> None:
        ssl_object = smtp.get_transport_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        subject = x509.load_der_x509_certificate(der).subject if der else None
        if subject is None or name_to_dn(subject) != self._bridge_dn:
            shown = subject.rfc4514_string() if subject is not None else "no certificate"
            raise _Refused(f"{self.where} presented {shown}, not the configured bridge certificate")

    async def _transaction(self, smtp: aiosmtplib.SMTP, message: OutgoingMessage) -> list[RecipientResult]:
        sender = f"<{message.sender}>" if message.sender else "<>"
        mail = await smtp.execute_command(b"MAIL", f"FROM:{sender}".encode())
        if mail.code != 250:
            raise _Refused(f"{self.where} refused the sender: {_reply(mail).line}", temporary=mail.code < 500)
        results: dict[int, RecipientResult] = {}
        accepted = []
        for recipient in message.recipients:
            arguments = f"TO:<{recipient.address}>"
            if recipient.orcpt:
                kind, _, value = recipient.orcpt.partition(";")
                arguments += f" ORCPT={kind};{xtext_encode(value)}"
            reply = await smtp.execute_command(b"RCPT", arguments.encode())
            if reply.code == 250:
                accepted.append(recipient)
            else:
                results[recipient.key] = RecipientResult(recipient.key, _reply(reply), self.host)
        if accepted:
            start = await smtp.execute_command(b"DATA")
            if start.code != 354:
                raise _Refused(f"{self.where} refused DATA: {_reply(start).line}", temporary=start.code < 500)
            write_message(smtp, message.raw)
            for recipient in accepted:  # RFC 2033 4.2: one reply per accepted recipient, in RCPT order
                reply = await read_reply(smtp, self._timeout)
                results[recipient.key] = RecipientResult(recipient.key, _reply(reply), self.host,
                                                         final=reply.code < 400)
        else:
            await smtp.execute_command(b"RSET")
        return [results[r.key] for r in message.recipients]

    def _take(self) -> aiosmtplib.SMTP | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            smtp, since = self._idle.pop()
            if smtp.is_connected and now - since < self._idle_timeout:
                return smtp
            self._close_later(smtp)
        return None

    def _close_later(self, smtp: aiosmtplib.SMTP) -> None:
        task = asyncio.get_running_loop().create_task(self._discard(smtp))
        task.add_done_callback(lambda t: t.exception())

    async def _discard(self, smtp: aiosmtplib.SMTP | None) -> None:
        if smtp is None:
            return
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            if smtp.is_connected:
                await smtp.quit(timeout=5)
        smtp.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._discard(smtp) for smtp, _ in idle), return_exceptions=True)

