"""The life of a patient's space, as pure rules: which change is allowed from which state, when the
opt-out window ends, when a space comes into existence (and gets its welcome message), and whether a
parent still represents a child. The store applies them inside its transactions; nothing here reads a
clock or a database.

    pending --activate--> active            (the person, with the code, within the window)
    pending --oppose----> opposed           (within the window, with the code or through support)
    pending --window----> not_activated     (the window ended without opposition: created by default)
    not_activated --activate--> active      (later, with a fresh code)
    not_activated --oppose/close--> opposed / closed
    active --close--> closed
    opposed, closed --activate--> active    (the person changed their mind: a fresh code, then activation)
    any but deleted --delete--> deleted     (archived, readable by no one, purged after the retention)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from mssante_base.patients.states import RECEIVING, PatientState

S = PatientState


class Change(enum.StrEnum):
    ACTIVATE = "activate"
    OPPOSE = "oppose"
    CLOSE = "close"
    CREATE_BY_DEFAULT = "created-by-default"
    DELETE = "delete"
    NEW_CODE = "new-code"  # not a change of state: allowed where an activation may follow


ALLOWED: dict[Change, frozenset[PatientState]] = {
    Change.ACTIVATE: frozenset({S.PENDING, S.NOT_ACTIVATED, S.OPPOSED, S.CLOSED}),
    Change.OPPOSE: frozenset({S.PENDING, S.NOT_ACTIVATED}),
    Change.CLOSE: frozenset({S.ACTIVE, S.NOT_ACTIVATED}),
    Change.CREATE_BY_DEFAULT: frozenset({S.PENDING}),
    Change.DELETE: frozenset(PatientState) - {S.DELETED, S.UNKNOWN},
    Change.NEW_CODE: frozenset({S.PENDING, S.NOT_ACTIVATED, S.OPPOSED, S.CLOSED}),
}
RESULT = {Change.ACTIVATE: S.ACTIVE, Change.OPPOSE: S.OPPOSED, Change.CLOSE: S.CLOSED,
          Change.CREATE_BY_DEFAULT: S.NOT_ACTIVATED, Change.DELETE: S.DELETED}

REFUSALS = {  # what the person or the support agent reads when a change is not possible now
    S.PENDING: "the space is not created yet (opt-out window open)",
    S.ACTIVE: "the space is already active",
    S.NOT_ACTIVATED: "the space was created by default and is not activated",
    S.OPPOSED: "the person opposed the creation of this space",
    S.CLOSED: "the space is closed",
    S.DELETED: "the space was deleted at the person's request",
}


class ChangeRefused(ValueError):
    """This change is not possible from the space's current state."""


def next_state(state: PatientState, change: Change) -> PatientState:
    """The state after ``change``; ChangeRefused, in words, when the change is not allowed from ``state``."""
    if state not in ALLOWED[change]:
        raise ChangeRefused(f"cannot {change.value.replace('-', ' ')}: {REFUSALS.get(state, 'unknown space')}")
    return RESULT.get(change, state)


def opens_space(before: PatientState, after: PatientState, *, opened_before: bool) -> bool:
    """True when this change brings the space into existence (it then gets its welcome message): it now
    takes mail and never did (a closed space reactivated keeps its content and its first welcome)."""
    return after in RECEIVING and before not in RECEIVING and not opened_before


@dataclass(frozen=True)
class SpacePolicy:
    """The durations the rules above depend on (``[bridge]`` settings; tests shorten them)."""

    opt_out_window: timedelta = timedelta(weeks=6)
    activation_code_validity: timedelta = timedelta(weeks=6)
    representation_until_age: int = 18  # 0: representation does not end with age
    archive_retention: timedelta = timedelta(days=3653)  # 10 calendar years, leap days included

    def window_ends(self, sent_at: datetime) -> datetime:
        return sent_at + self.opt_out_window

    def code_expires(self, issued_at: datetime) -> datetime:
        return issued_at + self.activation_code_validity

    def purge_before(self, now: datetime) -> datetime:
        """Spaces deleted before this instant have outlived their archive."""
        return now - self.archive_retention

    def represents(self, birth_date: str | None, today: date) -> bool:
        """Whether a child born on ``birth_date`` (ISO) is still represented ``today``: until the
        configured age; a child without a known birth date stays represented (an agent ends it)."""
        if self.representation_until_age <= 0 or not birth_date:
            return True
        try:
            born = date.fromisoformat(birth_date)
        except ValueError:
            return True
        return age_on(born, today) < self.representation_until_age


def age_on(born: date, today: date) -> int:
    """Whole years between ``born`` and ``today`` (a 29 February birthday counts on 1 March)."""
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))
