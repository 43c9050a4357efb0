"""The LMTP intake (RFC 2033): the operator delivers mail for patients here, over mutual TLS.

The session is the operator's hardened aiosmtpd session (:class:`GuardedSMTP`: limits, timeouts,
strict CRLF, one-search DATA reading, enhanced status codes) spoken as LMTP: LHLO instead of EHLO,
and after DATA one reply per accepted recipient, in RCPT order, so the operator knows the fate of
each patient separately. A reply aiosmtpd gives for the whole message (too big, line too long) is
repeated for each recipient, as RFC 2033 4.2 asks.

The peer must present a certificate chaining to the trust CA (the TLS handshake requires one), whose
subject is a trusted operator and which no CRL revokes; otherwise the greeting is ``554 5.7.1`` and
the connection closes. Log lines carry ids and sizes, never subjects or attachment names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import Envelope, Session

from mssante_operator.config import LimitsSettings
from mssante_operator.connection_limits import ConnectionLimiter
from mssante_operator.errors import Refusal
from mssante_operator.patients.ins import Ins, is_patient_address, parse_patient_address
from mssante_operator.patients.states import PatientState, check_patient_state
from mssante_operator.smtp import dsn
from mssante_operator.smtp.headers import summarise
from mssante_operator.smtp.policy import check_line_endings
from mssante_operator.smtp.server import GuardedSMTP
from mssante_operator.smtp.submission import _split_address
from mssante_operator.trust_space.tls import peer_tls

from .store import BridgeStore, MessageMeta
from .trust import OperatorGate

log = logging.getLogger(__name__)

NOT_A_PATIENT = "550 5.1.2 {address}: only patient addresses (<INS>@patient.mssante.fr) are delivered here"
STORE_FAILED = Refusal(451, "4.3.0", "The patient's space cannot store the message now; please try again later")
REGISTRY_FAILED = Refusal(451, "4.3.0", "The patient registry cannot answer now; please try again later")
TOO_MANY = "452 4.5.3 Too many recipients in this transaction; send the others in another one"


def delivered_reply(address: str) -> str:
    return f"250 2.1.5 <{address}> delivered to the patient's space"


class BridgeLMTP(GuardedSMTP):
    """GuardedSMTP spoken as LMTP, behind the operator gate, with per-recipient DATA replies."""

    def __init__(self, handler: Any, *, gate: OperatorGate, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.__ident__ = "LMTP mes_bridge"
        self._gate = gate
        self._data_recipients = 0  # > 0 once the 354 is sent: the final reply is due once per recipient

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:
            ssl_object = transport.get_extra_info("ssl_object")
            certificate = peer_tls(ssl_object).certificate if ssl_object is not None else None
            refusal = self._gate.refusal(certificate)
            if refusal is not None:
                peer = transport.get_extra_info("peername")
                log.warning("lmtp refused peer=%s reason=%r", peer[0] if peer else "?", refusal)
                transport.write(f"554 5.7.1 {refusal[0].upper()}{refusal[1:]}; closing\r\n".encode())  # type: ignore[attr-defined]
                transport.close()
                return
        super().connection_made(transport)

    def more_extensions(self) -> list[str]:
        return ["DSN"]  # the operator passes its senders' NOTIFY/ORCPT on; it writes the DSNs itself

    async def smtp_MAIL(self, arg: str) -> None:
        await self._without_dsn(arg, "FROM:", dsn.split_mail_parameters, super().smtp_MAIL)

    async def smtp_RCPT(self, arg: str) -> None:
        await self._without_dsn(arg, "TO:", dsn.split_rcpt_parameters, super().smtp_RCPT)

    async def _without_dsn(self, arg: str, keyword: str, split: Callable[[str], tuple[object, str]],
                           command: Callable[[str], Awaitable[None]]) -> None:
        """Run aiosmtpd's ``command`` without the DSN parameters (RFC 3461), which it would refuse. The bridge
        is the final delivery: the operator turns our replies into the DSNs its senders asked for."""
        parts = _split_address(arg or "", keyword)
        try:
            await command(arg if parts is None else parts[0] + split(parts[1])[1])
        except dsn.DsnSyntaxError as exc:
            await self.push(exc.refusal.reply)

    async def smtp_LHLO(self, arg: str) -> None:
        """The LMTP greeting: what EHLO answers in SMTP (RFC 2033 4.1)."""
        await GuardedSMTP.smtp_EHLO(self, arg)

    async def smtp_EHLO(self, arg: str) -> None:
        await self.push('500 5.5.1 This is an LMTP server: say LHLO, not EHLO (RFC 2033)')

    async def smtp_HELO(self, arg: str) -> None:
        await self.push('500 5.5.1 This is an LMTP server: say LHLO, not HELO (RFC 2033)')

    async def smtp_DATA(self, arg: str) -> None:
        recipients = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        self._data_recipients = -recipients  # armed by the 354 (see push)
        try:
            await super().smtp_DATA(arg)
        finally:
            self._data_recipients = 0

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, bytes):
            status = status.decode("utf-8")
        if self._data_recipients < 0 and status.startswith("354"):
            self._data_recipients = -self._data_recipients
        elif self._data_recipients > 0:
            lines = status.split("\r\n")
            if len(lines) == 1:
                lines *= self._data_recipients
            self._data_recipients = 0
            for line in lines:
                await super().push(line)
            return
        await super().push(status)


class IntakeHandler:
    """aiosmtpd hooks: patients checked at RCPT, the message stored at DATA for each of them."""

    def __init__(self, store: BridgeStore, *, max_recipients: int = 100) -> None:
        self.store = store
        self.max_recipients = max_recipients

    async def handle_RCPT(
        self, server: BridgeLMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not is_patient_address(address):
            return NOT_A_PATIENT.format(address=address)
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return TOO_MANY
        try:
            ins = parse_patient_address(address)
        except Refusal as refusal:
            return refusal.reply
        try:
            record = await asyncio.to_thread(self.store.patient, ins)
        except Exception:
            log.exception("registry lookup failed ins=%s", ins)
            return REGISTRY_FAILED.reply
        refusal = check_patient_state(ins, record.state if record is not None else PatientState.UNKNOWN)
        if refusal is not None:
            return refusal.reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Patient space found"

    async def handle_DATA(self, server: BridgeLMTP, session: Session, envelope: Envelope) -> str:
        content: bytes = envelope.content  # type: ignore[assignment]
        addresses = list(envelope.rcpt_tos)
        refusal = check_line_endings(content)
        if refusal is not None:
            return "\r\n".join([refusal.reply] * len(addresses))
        patients: list[Ins] = [parse_patient_address(address) for address in addresses]
        summary = summarise(content)
        meta = MessageMeta(message_id=summary.message_id, sender=envelope.mail_from or "",
                           recipients=tuple(addresses), subject=summary.subject)
        peer = getattr(session, "peer_tls", None)
        actor = peer.dn_text if peer is not None else "?"
        try:
            stored = await asyncio.to_thread(self.store.deliver, content, patients, meta, actor=actor)
        except Exception:
            log.exception("delivery failed message_id=%s size=%d", summary.message_id, len(content))
            return "\r\n".join([STORE_FAILED.reply] * len(addresses))
        log.info("delivered message_id=%s size=%d recipients=%d new=%d", summary.message_id, len(content),
                 len(addresses), sum(stored.values()))
        return "\r\n".join(delivered_reply(address) for address in addresses)


def lmtp_factory(
    store: BridgeStore, gate: OperatorGate, *, hostname: str, max_message_size: int, limiter: ConnectionLimiter
) -> Any:
    """A protocol factory for :class:`~mssante_operator.listening.Acceptor`."""
    limits = LimitsSettings(max_message_size=max_message_size)
    handler = IntakeHandler(store, max_recipients=limits.max_recipients)

    def factory() -> BridgeLMTP:
        return BridgeLMTP(handler, gate=gate, limits=limits, limiter=limiter, hostname=hostname)

    return factory
