"""Inbound policy of the MTA listener, as pure functions over data.

Each check returns ``None`` (accept) or the :class:`Refusal` that the listener sends. Checks run in
the order of the SMTP dialogue: connection (TLS, certificate) -> MAIL -> RCPT -> DATA. Keeping them
free of I/O makes every refusal testable on its own and keeps the listener a thin adapter.
"""

from __future__ import annotations

from collections.abc import Iterable
from email.utils import getaddresses

from mssante_base.annuaire import MailboxEntry
from mssante_base.errors import Refusal
from mssante_base.message.dsn import DeliveryReport, report_address
from mssante_base.trust.tls import PeerTls

from ..store.queue import RecipientStatus, RelayedRecipient
from ..trust_space.dkim import DkimResult
from ..trust_space.liste_blanche import ListeBlanche, normalise_domain

TLS_REQUIRED = Refusal(530, "5.7.0", "Must issue a STARTTLS command first: this MSSanté MTA accepts mail only over TLS")
CERTIFICATE_REQUIRED = Refusal(
    530, "5.7.0",
    "A client certificate of the MSSanté trust space (IGC-Santé) is required; none was presented",
)
CERTIFICATE_REVOKED = Refusal(550, "5.7.1", "Your client certificate has been revoked by its certification authority")
ANNUAIRE_DOWN = Refusal(451, "4.4.3", "The annuaire cannot be reached now; please try again later")
STORE_FAILED = Refusal(451, "4.3.0", "The message could not be stored now; please try again later")



def address_domain(address: str) -> str:
    """The domain of ``local@domain`` (lower-cased), or "" when there is none."""
    _, at, domain = address.rpartition("@")
    return normalise_domain(domain) if at else ""


def check_peer_certificate(peer: PeerTls | None, revoked: bool) -> Refusal | None:
    """The connection must be TLS with a (chain-verified) client certificate that is not revoked."""
    if peer is None:
        return TLS_REQUIRED
    if peer.certificate is None:
        return CERTIFICATE_REQUIRED
    if revoked:
        return CERTIFICATE_REVOKED
    return None


def check_sender_domain(domain: str, peer: PeerTls, liste: ListeBlanche) -> Refusal | None:
    """The sender domain must be listed, and listed with the DN of the certificate presented."""
    if not domain:
        return Refusal(553, "5.1.7", "The sender address has no domain")
    if not liste.is_listed(domain):
        return Refusal(550, "5.7.1", f"Sender domain {domain} is not in the MSSanté trust space (liste blanche)")
    if peer.dn is None or not liste.dn_allowed(domain, peer.dn):
        return Refusal(
            550, "5.7.1",
            f"Certificate DN {peer.dn_text} is not registered for domain {domain} in the liste blanche",
        )
    return None


def check_recipient_domain(domain: str, local_domains: Iterable[str]) -> Refusal | None:
    """We accept mail only for the domains we host: this MTA is never a relay."""
    if domain not in {normalise_domain(d) for d in local_domains}:
        return Refusal(550, "5.7.1", f"Relaying denied: {domain or 'that domain'} is not hosted by this operator")
    return None


def check_recipient_entry(address: str, entry: MailboxEntry | None) -> Refusal | None:
    """The recipient must be an annuaire mailbox that can receive (APP mailboxes only send)."""
    if entry is None:
        return Refusal(550, "5.1.1", f"Mailbox {address} does not exist in the annuaire")
    if not entry.can_receive:
        return Refusal(
            550, "5.7.1", f"Mailbox {address}: applicative mailbox cannot receive mail (APP mailboxes only send)"
        )
    return None


def check_recipient_count(already: int, maximum: int) -> Refusal | None:
    if already >= maximum:
        return Refusal(452, "4.5.3", f"Too many recipients: at most {maximum} per message, send the rest again")
    return None


def from_domains(from_header_values: list[str]) -> list[str]:
    """Domains of the addresses in the From header(s)."""
    return [address_domain(addr) for _, addr in getaddresses(from_header_values) if addr]


def check_from_header(domains: list[str], peer: PeerTls, liste: ListeBlanche) -> Refusal | None:
    """Exactly one From address, whose domain this peer may send for (no sender spoofing)."""
    if len(domains) != 1 or not domains[0]:
        return Refusal(550, "5.6.0", "The message must have exactly one From address with a domain (RFC 5322)")
    refusal = check_sender_domain(domains[0], peer, liste)
    if refusal is not None:
        return Refusal(refusal.code, refusal.enhanced, "From header: " + refusal.text)
    return None


def dkim_aligned(signing_domain: str, from_domain: str) -> bool:
    """``d=`` is the From domain or one of its parents (relaxed alignment)."""
    signing_domain, from_domain = normalise_domain(signing_domain), normalise_domain(from_domain)
    return bool(signing_domain) and (
        from_domain == signing_domain or from_domain.endswith("." + signing_domain)
    )


def check_dkim(results: list[DkimResult], from_domain: str) -> Refusal | None:
    """At least one valid signature aligned with the From domain; a key we could not fetch is 4xx."""
    aligned = [r for r in results if dkim_aligned(r.domain, from_domain)]
    if any(r.result == "pass" for r in aligned):
        return None
    if any(r.result == "temperror" for r in aligned):
        return Refusal(451, "4.7.5", f"The DKIM key of {from_domain} could not be fetched now; please try again later")
    if not results:
        return Refusal(550, "5.7.20", "No DKIM signature: messages of the trust space must be DKIM-signed")
    if not aligned:
        return Refusal(550, "5.7.20", f"No DKIM signature for the From domain {from_domain} or a parent domain")
    reasons = "; ".join(sorted({r.reason for r in aligned if r.reason}))
    return Refusal(550, "5.7.20", f"No valid DKIM signature for {from_domain}" + (f" ({reasons})" if reasons else ""))


def _unsigned_report_refused(why: str) -> Refusal:
    return Refusal(550, "5.7.20", f"No DKIM signature, and not a delivery report we accept unsigned: {why}")


def check_unsigned_report(report: DeliveryReport, addressed_to: list[str], peer: PeerTls, liste: ListeBlanche,
                          relayed: list[RelayedRecipient]) -> Refusal | None:
    """Accept a delivery report without DKIM only when it can be about nothing but mail we relayed to this peer.

    A stock Postfix does not pass its own reports through its DKIM milter, so a receipt asked with
    NOTIFY=SUCCESS comes back unsigned. The caller has checked the rest (mutual TLS, null sender, a From
    domain listed with the peer's DN); ``relayed`` holds the recipients of the queued messages whose ids
    the report's returned header names in our Received field. The report must name that message by its
    Message-ID too (and its ENVID, if it gives one), be addressed to that message's sender only, and
    speak only of recipients we handed over (delivered) in domains the peer's certificate DN is listed for.
    """
    if report.message_id is None or not report.queue_ids:
        return _unsigned_report_refused("it does not name a message we relayed (our Received id and its Message-ID)")
    wanted = " ".join(report.message_id.split())
    ours = [r for r in relayed if r.message_id is not None and " ".join(r.message_id.split()) == wanted]
    if not ours or (report.envid is not None and any(r.envid != report.envid for r in ours)):
        return _unsigned_report_refused("it refers to no message we relayed")
    senders = {r.sender.lower() for r in ours}
    if not addressed_to or any(address.lower() not in senders for address in addressed_to):
        return _unsigned_report_refused("it is not addressed to the sender of the message it reports on")
    for outcome in report.recipients:
        handed_over = [
            r for r in ours if r.status is RecipientStatus.DELIVERED and (
                r.address.lower() == outcome.final_recipient
                or (outcome.original_recipient is not None and report_address(r.orcpt) == outcome.original_recipient)
            )
        ]  # fmt: skip
        if not handed_over:
            return _unsigned_report_refused(f"we relayed nothing to {outcome.final_recipient}")
        domain = address_domain(handed_over[0].address)
        if peer.dn is None or not liste.dn_allowed(domain, peer.dn):
            return _unsigned_report_refused(f"certificate DN {peer.dn_text} is not registered for domain {domain}")
    return None
