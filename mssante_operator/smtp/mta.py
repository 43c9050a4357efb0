"""The MTA listener's handler: mail from peer operators of the trust space.

The handler is its lists of checks (``MAIL_CHECKS``, ``RCPT_CHECKS``, ``DATA_CHECKS``, from checks.py) and a
little glue: MAIL checks the peer certificate and the sender domain against the liste blanche; RCPT routes
each recipient (our domains, or the patient path) and checks it in the annuaire or the patients' registry;
DATA checks line endings, the From domain and DKIM (a peer's unsigned delivery report about mail we relayed
to it is let through by ``policy.check_unsigned_report``) and, for patients, the X-MSS content and the
author, then adds trace headers and commits the message before answering 250. The transaction is a
:class:`~.transaction.Transaction` on the envelope.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mssante_base.annuaire import Annuaire
from mssante_base.errors import Refusal
from mssante_base.message import headers
from mssante_base.patients.conversations import ConversationEvent
from mssante_base.smtp.peer import peer_of
from mssante_base.smtp.replies import PrintableLog
from mssante_base.trust.revocation import RevocationLists
from mssante_operator.smtp import checks, policy

from .. import metrics
from ..store.facade import DeliveryOutcome, NewMessage
from ..store.queue import OutboundEnvelope, QueuedRecipient, RelayedRecipient, new_queue_id
from ..store.submission import Submission, SubmissionResult
from ..trust_space.dkim import KeySource
from ..trust_space.liste_blanche import ListeBlanche
from .checks import author_address, run_checks
from .local_delivery import LocalDelivery
from .patient_path import PatientPath, conversation_events
from .transaction import Recipient, Transaction, begin, current

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


# The MTA's checks, stage by stage, in the order they run (see checks.py).
MAIL_CHECKS = (checks.peer_certificate, checks.sender_domain)
RCPT_CHECKS = (checks.recipient_count, checks.route_from_peer, checks.patient_recipient, checks.patient_writer,
               checks.local_mailbox)
DATA_CHECKS = (checks.tls_required, checks.line_endings, checks.from_header, checks.dkim, checks.patient_content,
               checks.patient_author)


class MtaHandler:
    """aiosmtpd handler hooks for the trust-space MTA listener: its checks and a little glue."""

    def __init__(self, context: MtaContext, *, listener: str = "mta") -> None:
        self.ctx = context
        self.listener = listener  # its name in config.toml, the metrics' label

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        tx = Transaction(peer=peer_of(session), principal=None, mail_from=address, mail_options=options)
        try:
            await run_checks(MAIL_CHECKS, self.ctx, tx)
        except Refusal as refusal:
            metrics.refused(self.listener, "mail", refusal.check)
            log.info("mail refused peer_dn=%r sender_domain=%s check=%s reply=%r",
                     tx.peer.dn_text if tx.peer else "", policy.address_domain(address), refusal.check, refusal.reply)
            return refusal.reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        begin(envelope, tx)
        return "250 2.1.0 Sender accepted"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        tx, rcpt = current(envelope), Recipient(address.lower())
        try:
            await run_checks(RCPT_CHECKS, self.ctx, tx, rcpt)
        except Refusal as refusal:
            metrics.refused(self.listener, "rcpt", refusal.check)
            log.info("rcpt refused rcpt_domain=%s check=%s reply=%r", policy.address_domain(rcpt.address),
                     refusal.check, refusal.reply)
            return refusal.reply
        if rcpt.address not in tx.recipients:
            tx.recipients[rcpt.address] = rcpt
            envelope.rcpt_tos.append(rcpt.address)
            envelope.rcpt_options.extend(options)
        return "250 2.1.5 Recipient accepted"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        tx = current(envelope)
        tx.queue_id, tx.data = new_queue_id(), envelope.original_content or b""
        try:
            await run_checks(DATA_CHECKS, self.ctx, tx)
        except Refusal as refusal:
            metrics.refused(self.listener, "data", refusal.check)
            log.info("data refused id=%s check=%s reply=%r", tx.queue_id, refusal.check, refusal.reply)
            return refusal.reply
        message = self._message(session, tx)
        try:
            if tx.patients:
                outcomes = await self._commit_with_patients(message, tx)
            else:
                outcomes = await self.ctx.delivery.deliver(message, list(tx.recipients))
        except Refusal as refusal:
            metrics.refused(self.listener, "data", refusal.check)
            log.info("data refused id=%s check=%s reply=%r", tx.queue_id, refusal.check, refusal.reply)
            return refusal.reply
        except Exception:
            metrics.refused(self.listener, "data", None)
            log.exception("delivery failed id=%s", tx.queue_id)
            return policy.STORE_FAILED.reply
        stored = sum(1 for o in outcomes.values() if o is DeliveryOutcome.STORED)
        log.info(
            "accepted id=%s peer_dn=%r rcpts=%d stored=%d duplicates=%d size=%d",
            tx.queue_id, tx.peer.dn_text if tx.peer else "", len(outcomes), stored,
            len(outcomes) - stored, len(message.raw),
        )
        metrics.SMTP_ACCEPTED.labels(self.listener).inc()
        return f"250 2.0.0 Message accepted, id {tx.queue_id}"

    async def _commit_with_patients(self, message: NewMessage, tx: Transaction) -> dict[str, DeliveryOutcome]:
        """Local copies, the patients' queue rows and the conversation events, in one transaction."""
        assert self.ctx.commit is not None
        patients = tx.patients
        mail_from = "" if tx.mail_from == "<>" else tx.mail_from
        events: list[ConversationEvent] = []
        if tx.author is not None:  # checks.patient_author: the From's mailbox
            events = conversation_events(tx.summary, mailbox=author_address(tx), kind=tx.author.kind,
                                         patients=list(patients.values()), message_id=message.message_id,
                                         actor=mail_from, at=message.received_at)
        queued = tuple(QueuedRecipient(a) for a in tx.recipients if a in patients)
        submission = Submission(
            message=message,
            local_recipients=tuple(a for a in tx.recipients if a not in patients),
            outbound=OutboundEnvelope(sender=mail_from, recipients=queued, message_id=message.message_id,
                                      submitted_by=f"mta:{mail_from or '<>'}"),
            expires_at=message.received_at + timedelta(seconds=self.ctx.max_lifetime),
            conversations=tuple(events),
            queue_id=tx.queue_id,
        )
        result = await self.ctx.commit(submission)
        self.ctx.on_queued()
        return {**result.local, **dict.fromkeys(patients, DeliveryOutcome.STORED)}

    def _message(self, session: Session, tx: Transaction) -> NewMessage:
        """The checked message with our trace headers, ready to store."""
        assert tx.peer is not None  # checks.tls_required
        peer, summary, now = tx.peer, tx.summary, datetime.now(UTC)
        mail_from = "" if tx.mail_from == "<>" else tx.mail_from
        auth_results = headers.authentication_results_value(
            self.ctx.hostname,
            [headers.dkim_result_text(r.result, r.domain, r.selector, r.b_prefix, r.reason) for r in tx.dkim]
            + [headers.tls_result_text(peer.dn_text, policy.address_domain(mail_from))],
        )
        recipients = list(tx.recipients)
        trace = headers.received_header(
            helo=session.host_name or "unknown", client_ip=_client_ip(session), hostname=self.ctx.hostname,
            protocol="ESMTPS", tls=f"{peer.version} {peer.cipher}", queue_id=tx.queue_id,
            recipient=recipients[0] if len(recipients) == 1 else None, when=now,
        )
        stored = (
            trace
            + b"Authentication-Results: " + auth_results.encode("utf-8") + b"\r\n"
            + headers.remove_authentication_results(tx.data, self.ctx.hostname)
        )
        return NewMessage(
            raw=stored,
            message_id=summary.message_id,
            from_addr=summary.from_text,
            subject=summary.subject,
            authentication_results=auth_results.replace("\r\n\t", " "),
            received_at=now,
        )


def _client_ip(session: Any) -> str:
    peer = getattr(session, "peer", None)
    return str(peer[0]) if peer else "unknown"

