"""Routing of one recipient: which target takes it, or why it is refused. The one router of every listener.

A pure decision over the recipient's domain, the domains we host and, for mail our users submit, the liste
blanche in force, in this order: our own domains are delivered locally; ``patient.mssante.fr`` (Mon espace
santé) goes to the patient path; any other domain listed in the liste blanche is queued for its operator;
the rest is outside the trust space and refused, permanently. Mail from a peer operator (no liste given)
is never relayed: only our domains and the patient path take it. Whether a local mailbox exists is the
annuaire's question, asked by the listener's checks afterwards.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from mssante_base.errors import Refusal
from mssante_base.patients.ins import PATIENT_DOMAIN

from ..trust_space.liste_blanche import ListeBlanche, normalise_domain
from .policy import address_domain, check_recipient_domain

PATIENT_PATH_CLOSED = Refusal(
    451, "4.3.0",
    "Messages to patients (patient.mssante.fr) cannot be delivered by this operator yet; please try again later",
)


class Target(enum.Enum):
    LOCAL = "local"
    PATIENT = "patient"
    OUTBOUND = "outbound"


@dataclass(frozen=True)
class Route:
    target: Target
    domain: str


def route_recipient(
    address: str, *, local_domains: Iterable[str], liste: ListeBlanche | None, patients_open: bool = False
) -> Route | Refusal:
    """The target of ``address``, or the refusal to answer to its RCPT; ``liste`` None: the mail comes from
    a peer operator (relaying denied, and the patient domain taken only when the patient path is open)."""
    if liste is None:
        domain = address_domain(address)
        if patients_open and domain == PATIENT_DOMAIN:
            return Route(Target.PATIENT, domain)
        return check_recipient_domain(domain, local_domains) or Route(Target.LOCAL, domain)
    local, at, domain = address.rpartition("@")
    domain = normalise_domain(domain) if at and local else ""
    if not domain:
        return Refusal(501, "5.1.3", "The recipient address must be local-part@domain")
    if domain in {normalise_domain(d) for d in local_domains}:
        return Route(Target.LOCAL, domain)
    if domain == PATIENT_DOMAIN:
        return Route(Target.PATIENT, domain) if patients_open else PATIENT_PATH_CLOSED
    if liste.is_listed(domain):
        return Route(Target.OUTBOUND, domain)
    return Refusal(550, "5.7.1",
                   f"recipient domain outside the MSSanté trust space: {domain} is not in the liste blanche")
