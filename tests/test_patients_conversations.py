"""The professional-first rule: who may write to a patient, whom a patient may answer, what ends an exchange."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mssante_base.annuaire import BalKind, MailboxEntry
from mssante_base.patients.conversations import (
    ConversationAction,
    ConversationEvent,
    ConversationStatus,
    check_patient_reply,
    check_writer,
    ends_exchange,
    events_for_message,
)
from mssante_base.patients.ins import Ins

PATIENT = Ins("288091234567894")
OTHER = Ins("280012A12345667")
OPEN, ENDED = ConversationStatus.OPEN, ConversationStatus.ENDED
AT = datetime(2025, 3, 4, 10, 30, tzinfo=UTC)


def entry(kind: BalKind, address: str = "dr.martin@hopital.mssante.fr", *, pharmacy: bool = False) -> MailboxEntry:
    return MailboxEntry(address=address, kind=kind, pharmacy=pharmacy)


@pytest.mark.parametrize("kind", [BalKind.PER, BalKind.ORG, BalKind.APP])
def test_professionals_may_write_to_patients(kind):
    assert check_writer("dr.martin@hopital.mssante.fr", entry(kind)) is None


@pytest.mark.parametrize("found", [entry(BalKind.CAB), None])
def test_others_may_not_write_to_patients(found):
    refusal = check_writer("someone@hopital.mssante.fr", found)
    assert refusal is not None and (refusal.code, refusal.enhanced) == (550, "5.7.1")
    assert "someone@hopital.mssante.fr is not one" in refusal.text
    assert "seules les messageries de professionnels de santé" in refusal.text


@pytest.mark.parametrize("kind", [BalKind.PER, BalKind.ORG])
def test_patient_answers_an_open_conversation(kind):
    assert check_patient_reply(PATIENT, "dr.martin@hopital.mssante.fr", entry(kind), OPEN) is None


@pytest.mark.parametrize("kind", [BalKind.PER, BalKind.ORG])
@pytest.mark.parametrize(("status", "english", "french"), [
    (ENDED, "dr.martin@hopital.mssante.fr has ended the exchange with you", "a mis fin à vos échanges"),
    (None, "a professional must write to you first; dr.martin@hopital.mssante.fr has not written",
     "un professionnel doit vous écrire en premier"),
])
def test_patient_cannot_write_without_an_open_conversation(kind, status, english, french):
    refusal = check_patient_reply(PATIENT, "dr.martin@hopital.mssante.fr", entry(kind), status)
    assert (refusal.code, refusal.enhanced) == (550, "5.7.1")
    assert english in refusal.text and french in refusal.text


@pytest.mark.parametrize("status", [None, OPEN, ENDED])
def test_patient_may_always_write_to_their_pharmacy(status):
    pharmacy = entry(BalKind.ORG, "officine@pharmacie.mssante.fr", pharmacy=True)
    assert check_patient_reply(PATIENT, "officine@pharmacie.mssante.fr", pharmacy, status) is None


def test_the_pharmacy_exception_is_for_org_mailboxes_only():
    pharmacist = entry(BalKind.PER, "pharmacien@pharmacie.mssante.fr", pharmacy=True)
    refusal = check_patient_reply(PATIENT, "pharmacien@pharmacie.mssante.fr", pharmacist, None)
    assert refusal is not None and "must write to you first" in refusal.text


@pytest.mark.parametrize("status", [None, OPEN, ENDED])
def test_applicative_mailboxes_never_receive(status):
    refusal = check_patient_reply(PATIENT, "labo@biolab.mssante.fr", entry(BalKind.APP), status)
    assert (refusal.code, refusal.enhanced) == (550, "5.7.1")
    assert "labo@biolab.mssante.fr is an applicative mailbox, which cannot receive messages" in refusal.text
    assert "messagerie applicative" in refusal.text


@pytest.mark.parametrize("found", [None, entry(BalKind.CAB)])
@pytest.mark.parametrize("status", [None, OPEN])
def test_unknown_and_cab_mailboxes_are_refused(found, status):
    refusal = check_patient_reply(PATIENT, "cabinet@medecins.mssante.fr", found, status)
    assert (refusal.code, refusal.enhanced) == (550, "5.7.1")
    assert "cabinet@medecins.mssante.fr is not a health professional's mailbox you can write to" in refusal.text
    assert " / " in refusal.text  # French / English


@pytest.mark.parametrize("values", [["FIN"], ["fin"], [" Fin\t"], ["OUVERTURE", "FIN"], ["\tFIN  "]])
def test_x_mss_mes_fin_ends_whatever_the_subject(values):
    assert ends_exchange(values, "Compte rendu")
    assert ends_exchange(values, None)


@pytest.mark.parametrize("subject", ["[FIN]", " [FIN] ", "[FIN]\t"])
def test_subject_exactly_fin_ends(subject):
    assert ends_exchange([], subject)


@pytest.mark.parametrize("subject", ["[FIN] suite", "Re: [FIN]", "[fin]", "FIN", "[ FIN ]", "", None])
def test_other_subjects_do_not_end(subject):
    assert not ends_exchange([], subject)


@pytest.mark.parametrize("values", [[], [""], ["FINI"], ["F I N"], ["OUVERTURE"]])
def test_other_x_mss_mes_values_do_not_end(values):
    assert not ends_exchange(values, "Résultats")


@pytest.mark.parametrize(("ends", "action"), [(False, ConversationAction.OPEN), (True, ConversationAction.END)])
def test_events_for_message(ends, action):
    events = events_for_message("Dr.Martin@Hopital.MSSante.fr", [PATIENT, OTHER, PATIENT], ends=ends,
                                message_id="<m1@hopital.mssante.fr>", actor="dr.martin", at=AT)
    assert events == [
        ConversationEvent(OTHER.value, "dr.martin@hopital.mssante.fr", action, "<m1@hopital.mssante.fr>",
                          "dr.martin", AT),
        ConversationEvent(PATIENT.value, "dr.martin@hopital.mssante.fr", action, "<m1@hopital.mssante.fr>",
                          "dr.martin", AT),
    ]


def test_events_for_no_patient_and_without_message_id():
    assert events_for_message("a@b.fr", [], ends=False, message_id=None, actor="x", at=AT) == []
    (event,) = events_for_message("a@b.fr", iter([PATIENT]), ends=True, message_id=None, actor="x", at=AT)
    assert event.message_id is None and event.action == "end" and event.patient_ins == PATIENT.value


def test_status_and_action_values_are_the_stored_words():
    assert [s.value for s in ConversationStatus] == ["open", "ended"]
    assert [a.value for a in ConversationAction] == ["open", "end"]
