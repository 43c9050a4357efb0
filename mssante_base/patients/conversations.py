"""The professional-first rule of patient messaging, as pure decisions over what the store and annuaire say.

A professional must start each conversation. PER, ORG and APP mailboxes may write to a patient; every
message they send opens (or reopens) the conversation between that mailbox and the patient, except one
that ends it: ``X-MSS-MES: FIN`` (Référentiel #2) or, the older rule, a subject of exactly ``[FIN]``.
A patient may write only to a PER or ORG mailbox whose conversation with them is open, or to a
pharmacy's ORG mailbox (the one exception: a patient may write first to their pharmacy). APP mailboxes
never receive. An ORG conversation is with the ORG mailbox (the From address), not with the delegate
who wrote on its behalf.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from mssante_base.annuaire import BalKind, MailboxEntry
from mssante_base.errors import Refusal
from mssante_base.patients.ins import Ins

WRITERS = frozenset({BalKind.PER, BalKind.ORG, BalKind.APP})  # who may write to a patient
FIN_SUBJECT = "[FIN]"


class ConversationStatus(enum.StrEnum):
    OPEN = "open"
    ENDED = "ended"


class ConversationAction(enum.StrEnum):
    OPEN = "open"  # the mailbox wrote to the patient (first time, or again after an end)
    END = "end"  # the mailbox ended the exchange (FIN), or an operator did


@dataclass(frozen=True)
class ConversationEvent:
    """One change of a conversation, committed with the message that caused it (audit trail)."""

    patient_ins: str  # canonical INS (upper-case 2A/2B)
    mailbox: str  # the professional's mailbox, lower-case
    action: ConversationAction
    message_id: str | None  # the message that opened or ended it (None: an operator's command)
    actor: str  # who: the submission login, the peer's certificate DN, or "operator:<user>"
    at: datetime


def ends_exchange(x_mss_mes: Iterable[str], subject: str | None) -> bool:
    """Whether a professional's message ends the exchange: ``X-MSS-MES: FIN`` or a subject of exactly ``[FIN]``."""
    if any(value.strip().upper() == "FIN" for value in x_mss_mes):
        return True
    return subject is not None and subject.strip() == FIN_SUBJECT


def events_for_message(mailbox: str, patients: Iterable[Ins], *, ends: bool, message_id: str | None,
                       actor: str, at: datetime) -> list[ConversationEvent]:
    """The conversation events a professional's message to ``patients`` causes (one per patient)."""
    action = ConversationAction.END if ends else ConversationAction.OPEN
    return [ConversationEvent(ins.value, mailbox.lower(), action, message_id, actor, at)
            for ins in sorted(set(patients))]


def check_writer(sender: str, entry: MailboxEntry | None) -> Refusal | None:
    """Whether ``sender`` may write to patients: a PER, ORG or APP mailbox of the annuaire, nobody else."""
    if entry is not None and entry.kind in WRITERS:
        return None
    return Refusal(550, "5.7.1", f"Only health professionals' mailboxes (PER, ORG, APP) may write to patients; "
                                 f"{sender} is not one / seules les messageries de professionnels de santé "
                                 "peuvent écrire aux patients")


def check_patient_reply(ins: Ins, recipient: str, entry: MailboxEntry | None,
                        status: ConversationStatus | None) -> Refusal | None:
    """Whether the patient ``ins`` may write to ``recipient`` (its annuaire entry, its conversation status)."""
    if entry is not None and entry.kind is BalKind.ORG and entry.pharmacy:
        return None
    if entry is not None and entry.kind is BalKind.APP:
        return _refused(f"{recipient} is an applicative mailbox, which cannot receive messages",
                        f"{recipient} est une messagerie applicative, qui ne reçoit pas de messages")
    if entry is None or entry.kind not in (BalKind.PER, BalKind.ORG):
        return _refused(f"{recipient} is not a health professional's mailbox you can write to",
                        f"{recipient} n'est pas une messagerie de professionnel à laquelle vous pouvez écrire")
    if status is ConversationStatus.OPEN:
        return None
    if status is ConversationStatus.ENDED:
        return _refused(f"{recipient} has ended the exchange with you; you can reply again once they write to you",
                        f"{recipient} a mis fin à vos échanges ; vous pourrez répondre quand il vous écrira de nouveau")
    return _refused(f"a professional must write to you first; {recipient} has not written to you",
                    f"un professionnel doit vous écrire en premier ; {recipient} ne vous a pas écrit")


def _refused(english: str, french: str) -> Refusal:
    return Refusal(550, "5.7.1", f"{french} / {english}")
