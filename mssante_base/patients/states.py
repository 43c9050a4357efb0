"""The state of a patient's space (Mon espace santé), as the bridge's registry reports it.

Spaces are created on an opt-out basis: the person receives a provisional code and, during the
opt-out window, may activate the space or oppose it (``pending``: no space yet, no messaging). At the
end of the window, without opposition, the space is created by default (``not_activated``): it
receives messages and documents, which the person reads once they activate it. Opposed, closed or
deleted spaces, and people without a space, have no messaging: mail to them is refused permanently.
A deleted space is refused with the words of a closed one (its archive is nobody's business).
"""

from __future__ import annotations

import enum

from mssante_base.errors import Refusal
from mssante_base.patients.ins import Ins


class PatientState(enum.StrEnum):
    PENDING = "pending"  # code sent, opt-out window open: the space does not exist yet
    ACTIVE = "active"
    NOT_ACTIVATED = "not_activated"  # created by default (or seeded): receives, not yet activated
    OPPOSED = "opposed"
    CLOSED = "closed"
    DELETED = "deleted"  # at the person's request: archived, readable by no one, then purged
    UNKNOWN = "unknown"


RECEIVING = frozenset({PatientState.ACTIVE, PatientState.NOT_ACTIVATED})

_WHY = {
    PatientState.PENDING: "the patient's space is not created yet",
    PatientState.OPPOSED: "the patient opposed the creation of their space",
    PatientState.CLOSED: "the patient's space is closed",
    PatientState.DELETED: "the patient's space is closed",
}


def check_patient_state(ins: Ins, state: PatientState) -> Refusal | None:
    """None when the space takes messages; else the permanent refusal (550 5.1.1) naming why not."""
    if state in RECEIVING:
        return None
    why = _WHY.get(state, "no patient space exists for this INS")
    return Refusal(550, "5.1.1", f"The patient {ins.address} has no Mon espace santé messaging ({why}); "
                                 "le patient n'a pas de messagerie Mon espace santé")
