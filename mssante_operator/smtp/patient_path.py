"""What the listeners ask about patients: the recipient's space, who may write, the conversation rule.

Both SMTP listeners use it. For a patient recipient (a professional writing, from our submission port
or from a peer operator): the INS must be valid (550 5.1.3), the patient's space must take messages
(the bridge's registry: 550 5.1.1, or 451 4.4.1 when it cannot say), and the sender must be a PER, ORG
or APP mailbox of the annuaire (550 5.7.1). For mail from a patient (mes_bridge on the submission port),
each recipient must be a professional who opened the conversation and has not ended it, or a pharmacy
(550 5.7.1, in French and English). At DATA, the X-MSS headers are checked against the IHE_XDM content,
and the message becomes conversation events, committed with it. The decisions themselves are the pure
functions of ``patients/``; this module only gathers their inputs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime

from mssante_base.annuaire import Annuaire, BalKind, MailboxEntry
from mssante_base.errors import Refusal
from mssante_base.message.headers import HeaderSummary
from mssante_base.patients.conversations import (
    ConversationEvent,
    ConversationStatus,
    check_patient_reply,
    check_writer,
    ends_exchange,
    events_for_message,
)
from mssante_base.patients.ins import Ins, parse_patient_address
from mssante_base.patients.mss_headers import announces_xdm, check_raw_mss_headers
from mssante_base.patients.states import check_patient_state

from ..patients.registry_client import REGISTRY_DOWN, PatientRegistry, RegistryUnavailable
from .directory import lookup_mailbox

PATIENT_TO_PATIENT = Refusal(550, "5.7.1", "Un patient ne peut pas écrire à un autre patient / "
                                           "patients cannot write to other patients")


@dataclass
class PatientPath:
    """The patient checks of one process (a registry client, the annuaire, the conversations store)."""

    registry: PatientRegistry
    annuaire: Annuaire
    conversation_status: Callable[[str, str], ConversationStatus | None]  # (INS, mailbox), blocking: run in a thread

    async def recipient(self, address: str) -> Ins:
        """The INS of a patient recipient whose space takes messages; raises the Refusal otherwise."""
        ins = parse_patient_address(address)
        try:
            state = await self.registry.state(ins)
        except RegistryUnavailable:
            raise REGISTRY_DOWN from None
        if (refusal := check_patient_state(ins, state)) is not None:
            raise refusal
        return ins

    async def writer(self, sender: str) -> MailboxEntry:
        """The annuaire entry of a professional writing to a patient; raises the Refusal otherwise."""
        entry = await lookup_mailbox(self.annuaire, sender)
        if (refusal := check_writer(sender, entry)) is not None:
            raise refusal
        assert entry is not None
        return entry

    async def reply(self, patient: Ins, recipient: str) -> None:
        """Whether the patient may write to ``recipient`` (the conversation rule); raises the Refusal."""
        entry = await lookup_mailbox(self.annuaire, recipient)
        status = await asyncio.to_thread(self.conversation_status, patient.value, recipient.lower())
        if (refusal := check_patient_reply(patient, recipient, entry, status)) is not None:
            raise refusal


async def check_content(raw: bytes, patients: Sequence[Ins], executor: Executor | None) -> Refusal | None:
    """The X-MSS-INS / X-MSS-CODECDA checks against the IHE_XDM content, parsed only when a header announces
    one, and then on ``executor``: reading the MIME message, its base64, the archive and its XML is CPU work."""
    if not announces_xdm(raw):
        return None
    return await asyncio.get_running_loop().run_in_executor(executor, check_raw_mss_headers, raw, patients)


def conversation_events(summary: HeaderSummary, *, mailbox: str, kind: BalKind, patients: Sequence[Ins],
                        message_id: str | None, actor: str, at: datetime) -> list[ConversationEvent]:
    """The events a professional's message to ``patients`` causes: (re)opening, or ending with FIN
    (X-MSS-MES or the Subject, read from the message's one header summary).

    Only PER and ORG mailboxes hold conversations: an APP mailbox writes to patients but can never be
    answered, so its messages open nothing.
    """
    if not patients or kind not in (BalKind.PER, BalKind.ORG):
        return []
    ends = ends_exchange(summary.mss_mes, summary.subject)
    return events_for_message(mailbox, patients, ends=ends, message_id=message_id, actor=actor, at=at)
