"""The state of a patient's space (Mon espace santé), as the bridge's registry reports it.

A space exists once created, unless the person opposed (about 2 %). A created space receives messages
and documents even before the patient activates it; they read them after activation. Opposed or closed
spaces, and people without a space, have no messaging: mail to them is refused permanently.
"""

from __future__ import annotations

import enum

from mssante_base.errors import Refusal
from mssante_base.patients.ins import Ins


class PatientState(enum.StrEnum):
    ACTIVE = "active"
    NOT_ACTIVATED = "not_activated"
    OPPOSED = "opposed"
    CLOSED = "closed"
    UNKNOWN = "unknown"


RECEIVING = frozenset({PatientState.ACTIVE, PatientState.NOT_ACTIVATED})


def check_patient_state(ins: Ins, state: PatientState) -> Refusal | None:
    """None when the space takes messages; else the permanent refusal (550 5.1.1) naming why not."""
    if state in RECEIVING:
        return None
    why = {
        PatientState.OPPOSED: "the patient opposed the creation of their space",
        PatientState.CLOSED: "the patient's space is closed",
    }.get(state, "no patient space exists for this INS")
    return Refusal(550, "5.1.1", f"The patient {ins.address} has no Mon espace santé messaging ({why}); "
                                 "le patient n'a pas de messagerie Mon espace santé")
