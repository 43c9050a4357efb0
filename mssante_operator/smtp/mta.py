"""The MTA listener's handler: mail from peer operators of the trust space.

The dialogue reads top to bottom: MAIL checks the peer certificate and the sender domain against
the liste blanche, RCPT checks each recipient in the annuaire, DATA checks line endings, the From
domain and DKIM (a peer's unsigned delivery report about mail we relayed to it is let through by
``policy.check_unsigned_report``), then adds trace headers and commits the message before answering 250.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from ..annuaire import Annuaire, AnnuaireUnavailable
from ..errors import Refusal
from ..patients.conversations import ConversationEvent
from ..patients.ins import PATIENT_DOMAIN, Ins
from ..store.facade import DeliveryOutcome, NewMessage
from ..store.queue import OutboundEnvelope, QueuedRecipient, RelayedRecipient, new_queue_id
from ..store.submission import Submission, SubmissionResult
from ..trust_space.dkim import KeySource, verify_message
from ..trust_space.liste_blanche import ListeBlanche
from ..trust_space.revocation import RevocationLists
from ..trust_space.tls import PeerTls
from . import dsn, headers, policy
from .local_delivery import LocalDelivery
from .patient_path import PatientPath, check_content, conversation_events
from .replies import PrintableLog

log = logging.getLogger(__name__)
log.addFilter(PrintableLog())  # client text (domains, replies) in log lines


@dataclass
class MtaContext:
    """What the MTA handler consults; the callables return the lists currently in force."""

    hostname: str
    local_domains: list[str]
    max_recipients: int
    annuaire: Annuaire
    liste_blanche: Callable[[], ListeBlanche]
    revocations: Callable[[], RevocationLists]
    dkim_keys: KeySource
    delivery: LocalDelivery
    cpu_executor: Executor | None = None
    # Patient recipients (a peer's professional writing to a patient): checked by ``patients``, then
    # committed with ``commit`` (local copies, the queue rows to mes_bridge and the conversation events).
    patients: PatientPath | None = None
    commit: Callable[[Submission], Awaitable[SubmissionResult]] | None = None
    max_lifetime: float = 5 * 86400.0
    on_queued: Callable[[], None] = lambda: None
    # The recipients of queued messages by queue id (store.queue.recipients_of): what a peer's unsigned
    # delivery report may refer to. None: every report must be DKIM-signed.
    relayed: Callable[[Sequence[str]], list[RelayedRecipient]] | None = None


def _peer(session: Session) -> PeerTls | None:
    return getattr(session, "peer_tls", None)


class MtaHandler:
    """aiosmtpd handler hooks for the trust-space MTA listener."""

    def __init__(self, context: MtaContext) -> None:
        self.ctx = context

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        peer = _peer(session)
        revoked = peer is not None and peer.certificate is not None and self.ctx.revocations().is_revoked(
            peer.certificate
        )
        refusal = policy.check_peer_certificate(peer, revoked)
        if refusal is None and address != "<>":
            assert peer is not None
            refusal = policy.check_sender_domain(policy.address_domain(address), peer, self.ctx.liste_blanche())
        if refusal is not None:
            log.info("mail refused peer_dn=%r sender_domain=%s reply=%r",
                     peer.dn_text if peer else "", policy.address_domain(address), refusal.reply)
            return refusal.reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender accepted"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        address = address.lower()
        refusal = policy.check_recipient_count(len(envelope.rcpt_tos), self.ctx.max_recipients)
        domain = policy.address_domain(address)
        if refusal is None and self.ctx.patients is not None and domain == PATIENT_DOMAIN:
            try:
                ins = await self.ctx.patients.recipient(address)
                if envelope.mail_from != "<>":  # a delivery report to a patient carries no writer
                    await self.ctx.patients.writer(envelope.mail_from)
            except Refusal as patient_refusal:
                refusal = patient_refusal
            else:
                _patients(envelope)[address] = ins
        elif refusal is None:
            refusal = policy.check_recipient_domain(domain, self.ctx.local_domains)
            if refusal is None:
                try:
                    entry = await self.ctx.annuaire.lookup(address)
                except AnnuaireUnavailable as exc:
                    log.warning("annuaire unavailable for rcpt: %s", exc)
                    return policy.ANNUAIRE_DOWN.reply
                refusal = policy.check_recipient_entry(address, entry)
        if refusal is not None:
            log.info("rcpt refused rcpt_domain=%s reply=%r", domain, refusal.reply)
            return refusal.reply
        if address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return "250 2.1.5 Recipient accepted"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        queue_id = new_queue_id()
        try:
            message = await self._checked_message(server, session, envelope, queue_id)
        except Refusal as refusal:
            log.info("data refused id=%s reply=%r", queue_id, refusal.reply)
            return refusal.reply
        try:
            if _patients(envelope):
                outcomes = await self._commit_with_patients(message, envelope, queue_id)
            else:
                outcomes = await self.ctx.delivery.deliver(message, list(envelope.rcpt_tos))
        except Refusal as refusal:
            log.info("data refused id=%s reply=%r", queue_id, refusal.reply)
            return refusal.reply
        except Exception:
            log.exception("delivery failed id=%s", queue_id)
            return policy.STORE_FAILED.reply
        stored = sum(1 for o in outcomes.values() if o is DeliveryOutcome.STORED)
        peer = _peer(session)
        log.info(
            "accepted id=%s peer_dn=%r rcpts=%d stored=%d duplicates=%d size=%d",
            queue_id, peer.dn_text if peer else "", len(outcomes), stored,
            len(outcomes) - stored, len(message.raw),
        )
        return f"250 2.0.0 Message accepted, id {queue_id}"

    async def _commit_with_patients(self, message: NewMessage, envelope: Envelope,
                                    queue_id: str) -> dict[str, DeliveryOutcome]:
        """Local copies, the patients' queue rows and the conversation events, in one transaction."""
        assert self.ctx.patients is not None and self.ctx.commit is not None
        patients = _patients(envelope)
        if (refusal := await check_content(message.raw, list(patients.values()), self.ctx.cpu_executor)) is not None:
            raise refusal
        mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from
        events: list[ConversationEvent] = []
        if mail_from:
            from_values = headers.summarise(message.raw).from_values
            from_address = (getaddresses(from_values)[0][1] if from_values else mail_from).lower()
            writer = await self.ctx.patients.writer(from_address)
            events = conversation_events(message.raw, mailbox=from_address, kind=writer.kind,
                                         patients=list(patients.values()), message_id=message.message_id,
                                         actor=mail_from, at=message.received_at)
        queued = tuple(QueuedRecipient(a) for a in envelope.rcpt_tos if a in patients)
        submission = Submission(
            message=message,
            local_recipients=tuple(a for a in envelope.rcpt_tos if a not in patients),
            outbound=OutboundEnvelope(sender=mail_from, recipients=queued, message_id=message.message_id,
                                      submitted_by=f"mta:{mail_from or '<>'}"),
            expires_at=message.received_at + timedelta(seconds=self.ctx.max_lifetime),
            conversations=tuple(events),
            queue_id=queue_id,
        )
        result = await self.ctx.commit(submission)
        self.ctx.on_queued()
        return {**result.local, **dict.fromkeys(patients, DeliveryOutcome.STORED)}

    async def _checked_message(
        self, server: SMTP, session: Session, envelope: Envelope, queue_id: str
    ) -> NewMessage:
        """Run the DATA checks; raise the Refusal, or return the message ready to store."""
        data: bytes = envelope.original_content or b""
        peer = _peer(session)
        if peer is None:  # MAIL already refused such sessions; defence in depth
            raise policy.TLS_REQUIRED
        if (refusal := policy.check_line_endings(data)) is not None:
            raise refusal
        summary = headers.summarise(data)
        from_domains = policy.from_domains(summary.from_values)
        if (refusal := policy.check_from_header(from_domains, peer, self.ctx.liste_blanche())) is not None:
            raise refusal
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self.ctx.cpu_executor, verify_message, data, self.ctx.dkim_keys)
        refusal = policy.check_dkim(results, from_domains[0])
        if refusal is not None and refusal.code >= 500 and envelope.mail_from == "<>":
            refusal = await self._unsigned_report(data, envelope, peer, refusal)
        if refusal is not None:
            raise refusal
        now = datetime.now(UTC)
        mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from
        auth_results = headers.authentication_results_value(
            self.ctx.hostname,
            [headers.dkim_result_text(r.result, r.domain, r.selector, r.b_prefix, r.reason) for r in results]
            + [headers.tls_result_text(peer.dn_text, policy.address_domain(mail_from))],
        )
        trace = headers.received_header(
            helo=session.host_name or "unknown", client_ip=_client_ip(session), hostname=self.ctx.hostname,
            protocol="ESMTPS", tls=f"{peer.version} {peer.cipher}", queue_id=queue_id,
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None, when=now,
        )
        stored = (
            trace
            + b"Authentication-Results: " + auth_results.encode("utf-8") + b"\r\n"
            + headers.remove_authentication_results(data, self.ctx.hostname)
        )
        return NewMessage(
            raw=stored,
            message_id=summary.message_id,
            from_addr=summary.from_text,
            subject=summary.subject,
            authentication_results=auth_results.replace("\r\n\t", " "),
            received_at=now,
        )

    async def _unsigned_report(self, data: bytes, envelope: Envelope, peer: PeerTls,
                               refusal: Refusal) -> Refusal | None:
        """A peer's delivery report without DKIM: None to accept it (policy.check_unsigned_report), else why not;
        ``refusal`` (the DKIM one) when the message is no delivery report at all."""
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(self.ctx.cpu_executor, dsn.parse_report, data, self.ctx.hostname)
        if report is None or self.ctx.relayed is None:
            return refusal
        try:
            relayed = await asyncio.to_thread(self.ctx.relayed, report.queue_ids)
        except Exception:  # the database is away: the peer tries again later
            log.exception("queue lookup for a delivery report failed")
            return policy.STORE_FAILED
        found = policy.check_unsigned_report(report, list(envelope.rcpt_tos), peer, self.ctx.liste_blanche(), relayed)
        if found is None:
            log.info("unsigned delivery report accepted peer_dn=%r refers_to=%s actions=%s", peer.dn_text,
                     ",".join(sorted({r.queue_id for r in relayed})),
                     ",".join(sorted({o.action for o in report.recipients})))
        return found


def _client_ip(session: Any) -> str:
    peer = getattr(session, "peer", None)
    return str(peer[0]) if peer else "unknown"


def _patients(envelope: Envelope) -> dict[str, Ins]:
    """The patient recipients of this transaction and their INS (kept on the envelope, reset with it)."""
    found = getattr(envelope, "patient_recipients", None)
    if found is None:
        found = {}
        envelope.patient_recipients = found  # type: ignore[attr-defined]
    return found
