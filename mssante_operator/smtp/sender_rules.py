"""Who may send as whom on the submission port: pure checks over the authenticated Principal.

A professional sends as their PER mailbox or as an ORG mailbox they are a delegate of; software
sends as the APP mailbox its certificate maps to; mes_bridge sends as patients (valid INS addresses)
only. The envelope sender (MAIL FROM) and every address of the From and Sender header fields must be
one of those: anything else is spoofing, refused with ``550 5.7.1`` before the message is read or stored.
"""

from __future__ import annotations

from email.utils import getaddresses

from mssante_base.errors import Refusal
from mssante_base.patients.ins import is_patient_address, parse_patient_address

from ..auth.authenticator import Principal

NULL_SENDER = Refusal(
    550, "5.7.1", "The null sender <> is reserved for delivery reports; send with your own mailbox address"
)


def check_envelope_sender(address: str, principal: Principal) -> Refusal | None:
    """MAIL FROM must be a mailbox the principal may send as."""
    if address in ("", "<>"):
        return NULL_SENDER
    if principal.patient_gateway and is_patient_address(address):
        try:
            parse_patient_address(address)
        except Refusal as refusal:
            return refusal
    if not principal.may_send_as(address):
        return Refusal(550, "5.7.1", f"You are not allowed to send as {address}: "
                                     f"{principal.login} may send as {', '.join(principal.addresses)}")
    return None


def check_header_senders(from_values: list[str], sender_values: list[str], principal: Principal) -> Refusal | None:
    """Exactly one From address, and it and any Sender address must be the principal's to use."""
    from_addresses = [address for _, address in getaddresses(from_values) if address]
    if len(from_addresses) != 1:
        return Refusal(550, "5.6.0", "The message must have exactly one From address (RFC 5322 3.6.2)")
    for field, addresses in (("From", from_addresses),
                             ("Sender", [a for _, a in getaddresses(sender_values) if a])):
        for address in addresses:
            if not principal.may_send_as(address):
                return Refusal(550, "5.7.1", f"{field} header: you are not allowed to send as {address}")
    return None
