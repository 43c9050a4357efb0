"""Routing of one submitted recipient: which target takes it, or why it is refused.

A pure decision over the recipient's domain, the domains we host and the liste blanche in force, in
this order: our own domains are delivered locally; ``patient.mssante.fr`` (Mon espace santé) goes to
the patient path; any other domain listed in the liste blanche is queued for its operator; the rest is
outside the trust space and refused, permanently. Whether a local mailbox exists is the annuaire's
question, asked by the listener afterwards.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import Refusal
from ..trust_space.liste_blanche import ListeBlanche, normalise_domain

PATIENT_DOMAIN = "patient.mssante.fr"
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
    address: str, *, local_domains: Iterable[str], liste: ListeBlanche, patients_open: bool = False
) -> Route | Refusal:
    """The target of ``address``, or the refusal to answer to its RCPT."""
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
