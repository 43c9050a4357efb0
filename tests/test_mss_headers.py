"""X-MSS-INS / X-MSS-CODECDA against the message's IHE XDM archive: each refusal and the accepted cases."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from mssante_base.patients.ins import validate_ins
from mssante_base.patients.mss_headers import check_mss_headers, check_raw_mss_headers, mss_header_values
from mssante_base.patients.xdm import NewDocument, PatientId, build_xdm

INS = validate_ins("288091234567894")
OTHER = validate_ins("180017512345660")
NIR = "1.2.250.1.213.1.4.8"
LOINC = "2.16.840.1.113883.6.1"
TRAITS = {"family_name": "DUPONT", "given_names": "JEANNE", "birth_date": "19880915", "sex": "F"}
BIO = NewDocument("DOC0001.XML", b"<ClinicalDocument/>", "text/xml", "11502-2", LOINC, "10", "urn:asip:ci-sis:2017",
                  "Biologie")
CRH = NewDocument("DOC0002.XML", b"<ClinicalDocument/>", "text/xml", "34133-9", LOINC, "10", "urn:asip:ci-sis:2017",
                  "Lettre de liaison")
PDF = NewDocument("DOC0003.PDF", b"%PDF", "application/pdf", "11488-4", LOINC, "10", "urn:ihe:iti:xds-sd:pdf:2008",
                  "Scan")
QUALIFIED = build_xdm(PatientId(INS.value, NIR), [BIO, CRH, PDF], source_patient_info=TRAITS)


def message(headers: dict[str, str | list[str]], *archives: bytes, filename: str = "IHE_XDM.ZIP") -> EmailMessage:
    result = EmailMessage()
    result["From"] = "dr.martin@hopital.mssante.fr"
    result["To"] = INS.address
    for name, value in headers.items():
        for one in [value] if isinstance(value, str) else value:
            result[name] = one
    result.set_content("Vos résultats")
    for archive in archives:
        result.add_attachment(archive, maintype="application", subtype="zip", filename=filename)
    return result


def refusal_of(headers: dict[str, str | list[str]], *archives: bytes, recipients=(INS,)) -> str:
    refusal = check_mss_headers(message(headers, *archives), recipients)
    assert refusal is not None and (refusal.code, refusal.enhanced) == (550, "5.6.0")
    assert " / " in refusal.text  # French / English
    return refusal.text


def test_without_the_headers_nothing_is_checked():
    assert check_mss_headers(message({}, b"not even a zip"), [OTHER]) is None
    assert check_mss_headers(message({"X-MSS-MES": "FIN"}), [INS]) is None


@pytest.mark.parametrize("headers", [
    {"X-MSS-INS": "O", "X-MSS-CODECDA": "11502-2,34133-9"},
    {"X-MSS-INS": " O ", "X-MSS-CODECDA": " 34133-9 , 11502-2 "},
    {"x-mss-ins": "o", "X-MSS-CODECDA": ["11502-2", "34133-9"]},
    {"X-MSS-INS": "O"},
    {"X-MSS-CODECDA": "34133-9,11502-2,11502-2"},
])
def test_headers_matching_the_archive_are_accepted(headers):
    assert check_mss_headers(message(headers, QUALIFIED), [INS]) is None


def test_n_without_a_qualified_ins_and_documents_without_cda():
    unqualified = build_xdm(PatientId(INS.value, NIR), [PDF])
    assert check_mss_headers(message({"X-MSS-INS": "N", "X-MSS-CODECDA": ""}, unqualified), [INS]) is None
    local = build_xdm(PatientId("IPP-42", "1.2.3.4.5"), [BIO], source_patient_info=TRAITS)
    assert check_mss_headers(message({"X-MSS-INS": "N", "X-MSS-CODECDA": "11502-2"}, local), [OTHER]) is None


def test_any_zip_with_an_ihe_xdm_folder_counts():
    assert check_mss_headers(message({"X-MSS-INS": "O"}, QUALIFIED, filename="envoi.zip"), [INS]) is None


def test_no_patient_recipient_needs_no_match():
    assert check_mss_headers(message({"X-MSS-INS": "O"}, QUALIFIED), []) is None


def test_header_without_archive():
    assert "does not carry" in refusal_of({"X-MSS-INS": "O"})
    not_xdm = message({"X-MSS-CODECDA": "11502-2"}, b"PK not an archive", filename="photos.zip")
    assert "does not carry" in check_mss_headers(not_xdm, []).text


def test_unreadable_archive_names_why():
    text = refusal_of({"X-MSS-INS": "O"}, b"garbage")
    assert "unreadable: the attachment is not a readable ZIP archive" in text


@pytest.mark.parametrize("value", ["", "Oui", "0", "Y", ["O", "O"], ["O", "N"]])
def test_ins_header_must_be_o_or_n_once(value):
    assert "must be O or N" in refusal_of({"X-MSS-INS": value}, QUALIFIED)


@pytest.mark.parametrize("codes", ["11502-2", "11502-2,34133-9,11488-4", "", "11502-2;34133-9"])
def test_codecda_must_list_exactly_the_cda_type_codes(codes):
    text = refusal_of({"X-MSS-CODECDA": codes}, QUALIFIED)
    assert "X-MSS-CODECDA does not match the CDA documents of the IHE_XDM archive (11502-2,34133-9)" in text


def test_codecda_set_when_there_is_no_cda():
    only_pdf = build_xdm(PatientId(INS.value, NIR), [PDF])
    assert "(aucun / none)" in refusal_of({"X-MSS-CODECDA": "11488-4"}, only_pdf)


def test_o_needs_a_qualified_ins():
    missing_sex = build_xdm(PatientId(INS.value, NIR), [BIO], source_patient_info=dict(TRAITS, sex=""))
    assert "X-MSS-INS is O but the IHE_XDM archive has no qualified INS" in refusal_of({"X-MSS-INS": "O"}, missing_sex)
    local = build_xdm(PatientId("IPP-42", "1.2.3.4.5"), [BIO], source_patient_info=TRAITS)
    assert "no qualified INS" in refusal_of({"X-MSS-INS": "O"}, local)
    wrong_key = build_xdm(PatientId("288091234567823", NIR), [BIO], source_patient_info=TRAITS)
    assert "no qualified INS" in refusal_of({"X-MSS-INS": "O"}, wrong_key, recipients=())


def test_n_with_a_qualified_ins():
    assert "X-MSS-INS is N but the IHE_XDM archive has a qualified INS" in refusal_of({"X-MSS-INS": "N"}, QUALIFIED)


def test_several_patients():
    other = build_xdm(PatientId(OTHER.value, NIR), [BIO], source_patient_info=TRAITS)
    assert "several patients" in refusal_of({"X-MSS-INS": "O"}, QUALIFIED, other)


def test_the_same_patient_in_two_archives_is_one_patient():
    lower_case = build_xdm(PatientId(INS.value.lower(), NIR), [CRH], source_patient_info=TRAITS)
    assert check_mss_headers(message({"X-MSS-INS": "O"}, QUALIFIED, lower_case), [INS]) is None


def test_documents_of_another_patient():
    text = refusal_of({"X-MSS-INS": "O"}, QUALIFIED, recipients=(INS, OTHER))
    assert f"not about the patient {OTHER.address}" in text
    assert "Vos résultats" not in text and "Biologie" not in text


def test_corsican_recipient_matches_whatever_the_case():
    corsican = validate_ins("280012A12345667")
    archive = build_xdm(PatientId(corsican.value.lower(), NIR), [BIO], source_patient_info=TRAITS)
    assert check_mss_headers(message({"X-MSS-INS": "O"}, archive), [corsican]) is None


def test_header_values_are_read_and_kept():
    msg = message({"X-MSS-INS": "O", "x-mss-codecda": ["11502-2,", " 34133-9"], "X-MSS-MES": "FIN",
                   "X-Other": "1"}, QUALIFIED)
    assert mss_header_values(msg) == {"X-MSS-INS": ["O"], "X-MSS-CODECDA": ["11502-2,", "34133-9"],
                                      "X-MSS-MES": ["FIN"]}
    check_mss_headers(msg, [INS])
    assert msg.get_all("X-MSS-CODECDA") == ["11502-2,", " 34133-9"]


def raw(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def test_raw_messages_are_parsed_only_when_a_header_announces_an_archive():
    assert check_raw_mss_headers(raw(message({"X-MSS-INS": "O"}, QUALIFIED)), [INS]) is None
    refusal = check_raw_mss_headers(raw(message({"X-MSS-INS": "O"}, QUALIFIED)), [OTHER])
    assert refusal is not None and refusal.enhanced == "5.6.0" and OTHER.address in refusal.text
    assert check_raw_mss_headers(raw(message({"x-mss-codecda": "1"}, b"junk")), []).code == 550
    assert check_raw_mss_headers(raw(message({"X-MSS-MES": "FIN"}, b"junk")), [OTHER]) is None
    body_mention = b"Subject: x\r\n\r\nX-MSS-INS: O\r\n"
    assert check_raw_mss_headers(body_mention, [OTHER]) is None


def test_malformed_mime_headers_do_not_break_the_search():
    data = (b"X-MSS-INS: O\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: application/zip; name*=utf-8'zz'%ZZ%\r\n"
            b"Content-Disposition: attachment; filename*=\"=?bad?=\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            b"!!!not base64\r\n--b--\r\n")
    refusal = check_raw_mss_headers(data, [INS])
    assert refusal is not None and refusal.code == 550
