"""The MTA listener's handler: mail from peer operators of the trust space.

The dialogue reads top to bottom: MAIL checks the peer certificate and the sender domain against
the liste blanche, RCPT checks each recipient in the annuaire, DATA checks line endings, the From
domain and DKIM, then adds trace headers and commits the message before answering 250.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from ..annuaire import Annuaire, AnnuaireUnavailable
from ..errors import Refusal
from ..store.facade import DeliveryOutcome, NewMessage
from ..trust_space.dkim import KeySource, verify_message
from ..trust_space.liste_blanche import ListeBlanche
from ..trust_space.revocation import RevocationLists
from ..trust_space.tls import PeerTls
from . import headers, policy
from .local_delivery import LocalDelivery

log = logging.getLogger(__name__)


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
        refusal = refusal or policy.check_recipient_domain(policy.address_domain(address), self.ctx.local_domains)
        if refusal is None:
            try:
                entry = await self.ctx.annuaire.lookup(address)
            except AnnuaireUnavailable as exc:
                log.warning("annuaire unavailable for rcpt: %s", exc)
                return policy.ANNUAIRE_DOWN.reply
            refusal = policy.check_recipient_entry(address, entry)
        if refusal is not None:
            log.info("rcpt refused rcpt=%s reply=%r", address, refusal.reply)
            return refusal.reply
        if address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return "250 2.1.5 Recipient accepted"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        queue_id = uuid.uuid4().hex[:16]
        try:
            message = await self._checked_message(server, session, envelope, queue_id)
        except Refusal as refusal:
            log.info("data refused id=%s reply=%r", queue_id, refusal.reply)
            return refusal.reply
        try:
            outcomes = await self.ctx.delivery.deliver(message, list(envelope.rcpt_tos))
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
        if (refusal := policy.check_dkim(results, from_domains[0])) is not None:
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


def _client_ip(session: Any) -> str:
    peer = getattr(session, "peer", None)
    return str(peer[0]) if peer else "unknown"
