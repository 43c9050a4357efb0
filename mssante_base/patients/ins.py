"""Patient addresses: ``[matricule INS]@patient.mssante.fr``.

The local part is the 15-character matricule INS: a NIR (or NIA) of 13 characters and its 2-digit key,
``97 - (number mod 97)``, where Corsica's department ``2A`` counts as 19 and ``2B`` as 18. python-stdnum
computes the key; we only add what it tolerates and an address must not: stdnum strips spaces and
dots and upper-cases, while an address local part is exactly 15 characters, digits except ``2A``/``2B``
(either case) at the department's place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stdnum.exceptions import ValidationError
from stdnum.fr import nir

from mssante_base.errors import Refusal

PATIENT_DOMAIN = "patient.mssante.fr"
_SHAPE = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[ABab])[0-9]{8}")


class InvalidIns(ValueError):
    """Not a matricule INS (shape or key); the message says which."""


@dataclass(frozen=True, order=True)
class Ins:
    """A valid matricule INS, canonical: upper-case ``2A``/``2B``."""

    value: str

    @property
    def address(self) -> str:
        """The patient's address, lower-case as every address we store."""
        return f"{self.value.lower()}@{PATIENT_DOMAIN}"

    def __str__(self) -> str:
        return self.value


def validate_ins(text: str) -> Ins:
    """The INS in ``text`` (exactly 15 characters), or InvalidIns."""
    if len(text) != 15:
        raise InvalidIns(f"a matricule INS has 15 characters, not {len(text)}")
    if not _SHAPE.fullmatch(text):
        raise InvalidIns("a matricule INS is made of digits, with 2A or 2B only as a Corsican department")
    try:
        return Ins(nir.validate(text))
    except ValidationError as exc:
        raise InvalidIns("the key (last two digits) of the matricule INS is wrong") from exc


def is_patient_address(address: str) -> bool:
    """Whether ``address`` is in the patients' domain (valid INS or not)."""
    local, at, domain = address.rpartition("@")
    return bool(at and local) and domain.lower().rstrip(".") == PATIENT_DOMAIN


def parse_patient_address(address: str) -> Ins:
    """The INS of a patient address; raises the Refusal to answer (550 5.1.3) when it is not valid."""
    local, _, _ = address.rpartition("@")
    try:
        return validate_ins(local)
    except InvalidIns as exc:
        raise Refusal(550, "5.1.3", f"invalid INS in patient address: {exc}") from exc
