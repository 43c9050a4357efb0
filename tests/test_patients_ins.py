"""Matricules INS and patient addresses (shape, key, Corsica) and what each patient-space state means."""

from __future__ import annotations

import pytest

from mssante_base.errors import Refusal
from mssante_base.patients.ins import (
    PATIENT_DOMAIN,
    Ins,
    InvalidIns,
    is_patient_address,
    parse_patient_address,
    validate_ins,
)
from mssante_base.patients.states import RECEIVING, PatientState, check_patient_state

NIR = "288091234567894"
NIA = "785019912345631"  # a temporary number (NIA): same shape and key rule
BORN_ABROAD = "185993112345649"  # department 99
CORSE_DU_SUD = "280012A12345667"  # 2A counts as 19 for the key
HAUTE_CORSE = "280012B12345694"  # 2B counts as 18


@pytest.mark.parametrize("text", [NIR, NIA, BORN_ABROAD, CORSE_DU_SUD, HAUTE_CORSE])
def test_valid_matricules(text):
    ins = validate_ins(text)
    assert ins == Ins(text) and ins.value == text and str(ins) == text
    assert ins.address == f"{text.lower()}@{PATIENT_DOMAIN}"


@pytest.mark.parametrize("text", [CORSE_DU_SUD, HAUTE_CORSE])
def test_corsica_in_both_cases_is_canonical_upper_case(text):
    lower = validate_ins(text.lower())
    assert lower.value == text and lower == validate_ins(text)
    assert lower.address == f"{text.lower()}@patient.mssante.fr"


@pytest.mark.parametrize("text", [
    "288091234567823",  # the ANS documentation's example: its key should be 94
    "288091234567895",
    "280012A12345694",  # 2A with the key of 2B
    "280012B12345667",  # 2B with the key of 2A
    "280012012345667",  # 20 is not 2A for the key
])
def test_wrong_key(text):
    with pytest.raises(InvalidIns, match="key"):
        validate_ins(text)


@pytest.mark.parametrize("text", ["", "28809123456789", "2880912345678944", "2880912345678940000"])
def test_wrong_length(text):
    with pytest.raises(InvalidIns, match=f"15 characters, not {len(text)}"):
        validate_ins(text)


@pytest.mark.parametrize("text", [
    "2 88 0912345678",  # spaces, which python-stdnum would strip
    "2880 1234567894",
    "2.88.0912345678",
    "28809123456789X",
    "2880912345678 4",
    "2A8091234567894",  # 2A away from the department
    "28809ZZ12345678",
    "28809AB12345678",
    "２88091234567894",  # a full-width digit
    " 88091234567894",
])
def test_spaces_dots_and_letters_refused(text):
    assert len(text) == 15
    with pytest.raises(InvalidIns, match="digits, with 2A or 2B only"):
        validate_ins(text)


def test_ins_values_order_and_hash():
    assert sorted({Ins(NIR), Ins(NIA), Ins(NIR)}) == [Ins(NIR), Ins(NIA)]


@pytest.mark.parametrize(("address", "patient"), [
    (f"{NIR}@patient.mssante.fr", True),
    ("anything@Patient.MSSante.FR", True),
    ("x@patient.mssante.fr.", True),
    ("@patient.mssante.fr", False),
    ("patient.mssante.fr", False),
    (f"{NIR}@mssante.fr", False),
    (f"{NIR}@sub.patient.mssante.fr", False),
    (f"{NIR}@patient.mssante.fr.evil.fr", False),
    ("", False),
])
def test_is_patient_address(address, patient):
    assert is_patient_address(address) is patient


def test_parse_patient_address():
    assert parse_patient_address(f"{NIR}@patient.mssante.fr") == Ins(NIR)
    assert parse_patient_address(f"{CORSE_DU_SUD.lower()}@PATIENT.MSSANTE.FR") == Ins(CORSE_DU_SUD)
    for local, why in (("288091234567823", "key"), ("12345", "15 characters, not 5"), ("28809123456789x", "digits")):
        with pytest.raises(Refusal) as caught:
            parse_patient_address(f"{local}@patient.mssante.fr")
        refusal = caught.value
        assert (refusal.code, refusal.enhanced) == (550, "5.1.3")
        assert refusal.text.startswith("invalid INS in patient address: ") and why in refusal.text


@pytest.mark.parametrize("state", [PatientState.ACTIVE, PatientState.NOT_ACTIVATED])
def test_receiving_states(state):
    assert state in RECEIVING and check_patient_state(Ins(NIR), state) is None


@pytest.mark.parametrize(("state", "why"), [
    (PatientState.OPPOSED, "opposed the creation of their space"),
    (PatientState.CLOSED, "space is closed"),
    (PatientState.DELETED, "space is closed"),  # a deletion is nobody's business: the words of a closed space
    (PatientState.PENDING, "space is not created yet"),
    (PatientState.UNKNOWN, "no patient space exists for this INS"),
])
def test_states_without_messaging(state, why):
    refusal = check_patient_state(Ins(NIR), state)
    assert refusal is not None and (refusal.code, refusal.enhanced) == (550, "5.1.1")
    assert why in refusal.text and Ins(NIR).address in refusal.text


def test_state_values_are_the_registry_words():
    assert {s.value for s in PatientState} == {"pending", "active", "not_activated", "opposed", "closed", "deleted",
                                               "unknown"}
    assert PatientState("not_activated") is PatientState.NOT_ACTIVATED
