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
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import Any

from aiosmtpd.smtp import Envelope, Session
from prometheus_client import Counter

from mssante_base.annuaire import Annuaire
from mssante_base.connection_limits import ConnectionLimiter
from mssante_base.errors import Refusal
from mssante_base.message import dsn
from mssante_base.message.headers import summarise
from mssante_base.patients.ins import Ins, is_patient_address, parse_patient_address
from mssante_base.patients.states import PatientState, check_patient_state
from mssante_base.settings import LimitsSettings
from mssante_base.smtp.aiosmtpd_adapter import keeps_syntax, syntax
from mssante_base.smtp.arguments import split_address
from mssante_base.smtp.guards import check_line_endings
from mssante_base.smtp.peer import peer_of
from mssante_base.smtp.server import GuardedSMTP
from mssante_base.trust.tls import peer_tls

from .analysis_pool import AnalysisPool
from .filing.mdn import build_mdn
from .filing.mime import MessageView, read_message
from .filing.plan import FilingLimits, plan_filing
from .store import BridgeStore, MessageMeta, NewAttachment, NewDocument, PatientRecord
from .trust import OperatorGate

log = logging.getLogger(__name__)

# Under the operator's supervisor these go to its multiprocess directory: the operator's /metrics shows them.
TAKEN = Counter("mssante_bridge_messages_taken", "Messages the LMTP intake stored in patients' spaces.")
REFUSED = Counter("mssante_bridge_refusals", "LMTP intake refusals, by stage and check.", ["stage", "check"])
FILED = Counter("mssante_bridge_documents_filed", "Documents filed in patients' spaces (one per space).")

STORE_FAILED = Refusal(451, "4.3.0", "The patient's space cannot store the message now; please try again later")
REGISTRY_FAILED = Refusal(451, "4.3.0", "The patient registry cannot answer now; please try again later")
TOO_MANY = Refusal(452, "4.5.3", "Too many recipients in this transaction; send the others in another one")


def not_a_patient(address: str) -> Refusal:
    return Refusal(550, "5.1.2", f"{address}: only patient addresses (<INS>@patient.mssante.fr) are delivered here")


def delivered_reply(address: str) -> str:
    return f"250 2.1.5 <{address}> delivered to the patient's space"


class BridgeLMTP(GuardedSMTP):
    """GuardedSMTP spoken as LMTP, behind the operator gate, with per-recipient DATA replies."""

    def __init__(self, handler: Any, *, gate: OperatorGate, **kwargs: Any) -> None:
        super().__init__(handler, ident="LMTP mes_bridge", **kwargs)
        self._gate = gate
        self._data_recipients = 0  # > 0 once the 354 is sent: the final reply is due once per recipient

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.after_starttls:
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

    @keeps_syntax("MAIL")
    async def smtp_MAIL(self, arg: str) -> None:
        await self._without_dsn(arg, "FROM:", dsn.split_mail_parameters, super().smtp_MAIL)

    @keeps_syntax("RCPT")
    async def smtp_RCPT(self, arg: str) -> None:
        await self._without_dsn(arg, "TO:", dsn.split_rcpt_parameters, super().smtp_RCPT)

    async def _without_dsn(self, arg: str, keyword: str, split: Callable[[str], tuple[object, str]],
                           command: Callable[[str], Awaitable[None]]) -> None:
        """Run aiosmtpd's ``command`` without the DSN parameters (RFC 3461), which it would refuse. The bridge
        is the final delivery: the operator turns our replies into the DSNs its senders asked for."""
        parts = split_address(arg or "", keyword)
        try:
            await command(arg if parts is None else parts[0] + split(parts[1])[1])
        except dsn.DsnSyntaxError as exc:
            await self.push(exc.refusal.reply)

    @syntax("LHLO hostname")
    async def smtp_LHLO(self, arg: str) -> None:
        """The LMTP greeting: what EHLO answers in SMTP (RFC 2033 4.1)."""
        await GuardedSMTP.smtp_EHLO(self, arg)

    async def smtp_EHLO(self, arg: str) -> None:
        await self.push('500 5.5.1 This is an LMTP server: say LHLO, not EHLO (RFC 2033)')

    async def smtp_HELO(self, arg: str) -> None:
        await self.push('500 5.5.1 This is an LMTP server: say LHLO, not HELO (RFC 2033)')

    @keeps_syntax("DATA")
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


@dataclass(frozen=True)
class Intake:
    """What the intake makes of one message before the store's transaction (pure, run in a thread)."""

    meta: MessageMeta
    attachments: tuple[NewAttachment, ...]
    documents: dict[str, tuple[NewDocument, ...]]
    reports: dict[str, tuple[str, bytes]]  # INS -> (to, integration-error MDN)
    problems: int


def read_view(content: bytes) -> MessageView | None:
    """The message read once; None when the MIME reader cannot make sense of it (it is stored anyway)."""
    try:
        return read_message(content)
    except Exception:  # a reader bug must not lose mail; the message is kept as it came
        log.exception("message unreadable, stored without filing size=%d", len(content))
        return None


def prepare_intake(content: bytes, view: MessageView | None, patients: list[Ins], *, sender: str,
                   recipients: tuple[str, ...], author_name: str | None, limits: FilingLimits,
                   names: dict[str, str]) -> Intake:
    """Plan for each patient the documents filed from the message (and any integration-error receipt).

    An unreadable message (``view`` None) is kept without attachments or documents, to be read as it came.
    """
    if view is None:
        summary = summarise(content)
        return Intake(MessageMeta(message_id=summary.message_id, sender=sender, recipients=recipients,
                                  subject=summary.subject), (), {}, {}, 0)
    author = view.from_address or sender.lower()
    name = author_name or view.from_name
    meta = MessageMeta(message_id=view.message_id, sender=sender, recipients=recipients, subject=view.subject,
                       from_address=author, from_name=name, sent_at=view.date, in_reply_to=view.in_reply_to,
                       mdn_to=view.mdn_to, ends_exchange=view.ends_exchange, attachments=len(view.attachments))
    attachments = tuple(NewAttachment(part.index, part.filename, part.detected.mime_type, part.size)
                        for part in view.attachments)
    documents: dict[str, tuple[NewDocument, ...]] = {}
    reports: dict[str, tuple[str, bytes]] = {}
    problems = 0
    for ins in patients:
        plan = plan_filing(view, ins.value, limits, author_address=author, author_name=name)
        documents[ins.value] = plan.documents
        problems += len(plan.problems) + (plan.xdm_error is not None)
        if plan.xdm_error is not None and view.mdn_to:
            reports[ins.value] = (view.mdn_to, build_mdn(
                original_message_id=view.message_id, original_recipient=ins.address, to=view.mdn_to,
                from_address=ins.address, from_name=names.get(ins.value, ""), subject_of_original=view.subject,
                disposition="error", error=plan.xdm_error))
    return Intake(meta, attachments, documents, reports, problems)


def analyse(content: bytes, patients: list[Ins], *, sender: str, recipients: tuple[str, ...],
            author_name: str | None, limits: FilingLimits, names: dict[str, str]) -> Intake:
    """Read the message and plan its filing: the CPU-heavy half of the intake (run in a worker process)."""
    return prepare_intake(content, read_view(content), patients, sender=sender, recipients=recipients,
                          author_name=author_name, limits=limits, names=names)


def from_address(content: bytes) -> str | None:
    """The From header's first address (header block only: the annuaire is asked before the full read)."""
    addresses = [address for _, address in getaddresses(summarise(content).from_values) if "@" in address]
    return addresses[0].lower() if addresses else None


@dataclass
class IntakeRecipient:
    """A patient recipient as the RCPT checks learn it: the address, its INS, its registry record."""

    address: str
    ins: Ins | None = None
    record: PatientRecord | None = None


@dataclass
class IntakeTransaction:
    """The current LMTP transaction: the patients accepted so far (the names the dossier shows), kept on the
    envelope under one attribute, so it is reset with it."""

    names: dict[str, str] = field(default_factory=dict)  # INS -> the patient's name in the registry


def intake_transaction(envelope: Envelope) -> IntakeTransaction:
    found = getattr(envelope, "mes_bridge_intake", None)
    if found is None:
        found = IntakeTransaction()
        envelope.mes_bridge_intake = found  # type: ignore[attr-defined]
    return found


class IntakeHandler:
    """aiosmtpd hooks: patients checked at RCPT (``rcpt_checks``, in that order); at DATA the message, its
    attachments and the documents filed from it are stored for each of them in one transaction."""

    def __init__(self, store: BridgeStore, *, max_recipients: int = 100, annuaire: Annuaire | None = None,
                 limits: FilingLimits | None = None, pool: AnalysisPool | None = None) -> None:
        self.store = store
        self.pool = pool or AnalysisPool(0)
        self.max_recipients = max_recipients
        self.annuaire = annuaire
        self.limits = limits or FilingLimits()
        # The RCPT checks (name, check), in the order they run: each raises the Refusal that answers the RCPT.
        self.rcpt_checks: list[tuple[str, Callable[[Envelope, IntakeRecipient], Awaitable[None]]]] = [
            ("patient_address", self._patient_address), ("recipient_count", self._recipient_count),
            ("patient_ins", self._patient_ins), ("patient_registry", self._patient_registry),
            ("patient_state", self._patient_state),
        ]

    async def handle_RCPT(
        self, server: BridgeLMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        rcpt = IntakeRecipient(address)
        for name, check in self.rcpt_checks:
            try:
                await check(envelope, rcpt)
            except Refusal as refusal:
                REFUSED.labels("rcpt", name).inc()
                log.info("rcpt refused check=%s code=%d", name, refusal.code)  # no client text in the log
                return refusal.reply
        assert rcpt.ins is not None
        envelope.rcpt_tos.append(address)
        if rcpt.record is not None:
            intake_transaction(envelope).names[rcpt.ins.value] = rcpt.record.display_name
        return "250 2.1.5 Patient space found"

    async def _patient_address(self, envelope: Envelope, rcpt: IntakeRecipient) -> None:
        if not is_patient_address(rcpt.address):
            raise not_a_patient(rcpt.address)

    async def _recipient_count(self, envelope: Envelope, rcpt: IntakeRecipient) -> None:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            raise TOO_MANY

    async def _patient_ins(self, envelope: Envelope, rcpt: IntakeRecipient) -> None:
        rcpt.ins = parse_patient_address(rcpt.address)

    async def _patient_registry(self, envelope: Envelope, rcpt: IntakeRecipient) -> None:
        assert rcpt.ins is not None
        try:
            rcpt.record = await asyncio.to_thread(self.store.patient, rcpt.ins)
        except Exception:
            log.exception("registry lookup failed ins=%s", rcpt.ins)
            raise REGISTRY_FAILED from None

    async def _patient_state(self, envelope: Envelope, rcpt: IntakeRecipient) -> None:
        assert rcpt.ins is not None
        state = rcpt.record.state if rcpt.record is not None else PatientState.UNKNOWN
        if (refusal := check_patient_state(rcpt.ins, state)) is not None:
            raise refusal

    async def _author_name(self, address: str) -> str | None:
        """The sender's name in the annuaire (the dossier shows who deposited); None when unknown or down."""
        if self.annuaire is None or not address:
            return None
        try:
            entry = await self.annuaire.lookup(address)
        except Exception:  # the annuaire being down must not delay the patient's mail: the From name serves
            log.warning("annuaire lookup failed during intake; the From name is used")
            return None
        return entry.display_name or None if entry is not None else None

    async def handle_DATA(self, server: BridgeLMTP, session: Session, envelope: Envelope) -> str:
        content: bytes = envelope.content  # type: ignore[assignment]
        addresses = list(envelope.rcpt_tos)
        refusal = check_line_endings(content)
        if refusal is not None:
            REFUSED.labels("data", "line_endings").inc()
            return "\r\n".join([refusal.reply] * len(addresses))
        patients: list[Ins] = [parse_patient_address(address) for address in addresses]
        sender = envelope.mail_from or ""
        author_name = await self._author_name(from_address(content) or sender)
        intake = await self.pool.run(
            len(content), analyse, content, patients, sender=sender, recipients=tuple(addresses),
            author_name=author_name, limits=self.limits, names=intake_transaction(envelope).names)
        peer = peer_of(session)
        actor = peer.dn_text if peer is not None else "?"
        try:
            stored = await asyncio.to_thread(
                self.store.deliver, content, patients, intake.meta, actor=actor, attachments=intake.attachments,
                documents=intake.documents, reports=intake.reports)
        except Exception:
            REFUSED.labels("data", "store").inc()
            log.exception("delivery failed message_id=%s size=%d", intake.meta.message_id, len(content))
            return "\r\n".join([STORE_FAILED.reply] * len(addresses))
        TAKEN.inc()
        FILED.inc(sum(len(docs) for docs in intake.documents.values()))
        log.info("delivered message_id=%s size=%d recipients=%d new=%d attachments=%d documents=%d problems=%d",
                 intake.meta.message_id, len(content), len(addresses), sum(stored.values()), len(intake.attachments),
                 sum(len(docs) for docs in intake.documents.values()), intake.problems)
        return "\r\n".join(delivered_reply(address) for address in addresses)


def lmtp_factory(
    store: BridgeStore, gate: OperatorGate, *, hostname: str, max_message_size: int, limiter: ConnectionLimiter,
    annuaire: Annuaire | None = None, filing: FilingLimits | None = None, pool: AnalysisPool | None = None,
) -> Any:
    """A protocol factory for :class:`~mssante_base.listening.Acceptor`."""
    limits = LimitsSettings(max_message_size=max_message_size)
    handler = IntakeHandler(store, max_recipients=limits.max_recipients, annuaire=annuaire, limits=filing, pool=pool)

    def factory() -> BridgeLMTP:
        return BridgeLMTP(handler, gate=gate, limits=limits, limiter=limiter, hostname=hostname)

    return factory
