"""Filing plans: what of a message goes into the dossier, with which metadata, and what stays an attachment."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from support.filing_samples import (
    AUTHOR,
    CDA,
    EXE,
    HTML,
    INS,
    OTHER_INS,
    RTF,
    SENDER,
    SENDER_NAME,
    TEXT,
    jpeg,
    message,
    pdf,
    png,
    tiff,
    xdm,
    xdm_document,
)

from mes_bridge.filing.categories import Category
from mes_bridge.filing.loinc import category_for
from mes_bridge.filing.mime import read_message
from mes_bridge.filing.plan import FilingLimits, creation_time, plan_filing
from mssante_base.patients.xdm import Author, read_xdm


def plan(raw: bytes, limits: FilingLimits | None = None, ins: str = INS):
    return plan_filing(read_message(raw), ins, limits or FilingLimits(), author_address=SENDER,
                       author_name=SENDER_NAME)


def test_plain_attachments_are_filed_by_their_content_type():
    raw = message([("lettre.txt", "text/plain", pdf()), ("page.pdf", "application/pdf", HTML),
                   ("scan.tif", "image/tiff", tiff()), ("photo", "image/jpeg", jpeg()), (None, "image/png", png()),
                   ("ordonnance.rtf", "application/rtf", RTF), ("note.txt", "text/plain", TEXT),
                   ("outil.exe", "application/octet-stream", EXE)])
    result = plan(raw)
    assert result.xdm_error is None
    filed = {doc.attachment_index: doc for doc in result.documents}
    assert sorted(filed) == [0, 2, 3, 4, 5, 6]
    assert (filed[0].mime_type, filed[0].title, filed[0].filename) == ("application/pdf", "lettre", "lettre.txt")
    assert filed[2].mime_type == "image/tiff" and filed[3].title == "photo" and filed[4].title == "Image"
    assert filed[5].mime_type == "text/rtf" and filed[6].mime_type == "text/plain"
    for doc in result.documents:
        assert doc.category is Category.AUTR_DOC and not doc.structured and doc.message is None
        assert (doc.author_address, doc.author_name) == (SENDER, SENDER_NAME) and doc.xdm_unique_id is None
        assert not (doc.masked_from_professionals or doc.hidden_from_patient or doc.hidden_from_legal_reps)
    assert result.problems == ("attachment 1 is of a type the dossier does not take (text/html)",
                               "attachment 7 is of a type the dossier does not take "
                               "(application/vnd.microsoft.portable-executable)")
    assert not any("page" in problem or "outil" in problem for problem in result.problems)


def test_xdm_documents_are_filed_with_their_metadata_and_the_pdf_beside_once():
    report = pdf("Hemoglobine 13.2")
    archive = xdm([xdm_document("DOC0001.PDF", report), xdm_document("DOC0002.XML", CDA, mime_type="text/xml")])
    result = plan(message([("CR-bio.pdf", "application/pdf", report), ("IHE_XDM.ZIP", "application/zip", archive)]))
    assert result.xdm_error is None and result.problems == ()
    beside, structured = result.documents
    assert beside.attachment_index == 0 and beside.filename == "CR-bio.pdf" and beside.data == report
    assert structured.attachment_index is None and structured.filename == "DOC0002.XML"
    assert structured.structured and structured.mime_type == "text/xml" and not beside.structured
    for doc in (beside, structured):
        assert doc.title == "CR de biologie" and doc.category is Category.BIOLOGIE
        assert doc.document_date == datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
        assert doc.author_address == SENDER and doc.author_name == "Dr Claire MARTIN"
        assert doc.xdm_unique_id and doc.xdm_unique_id.startswith("2.25.")
    assert beside.xdm_unique_id != structured.xdm_unique_id
    assert all(doc.mime_type != "application/zip" for doc in result.documents)  # the archive itself never


def test_xdm_about_another_patient_files_nothing():
    archive = xdm([xdm_document("DOC0001.PDF", pdf())], ins=OTHER_INS)
    result = plan(message([("autre.pdf", "application/pdf", pdf("x")), ("IHE_XDM.ZIP", "application/zip", archive)]))
    assert result.documents == () and result.xdm_error == (
        "attachment 1: the archive is about another patient than the recipient")
    assert OTHER_INS not in result.xdm_error


def test_unreadable_xdm_files_nothing():
    result = plan(message([("a.pdf", "application/pdf", pdf()), ("IHE_XDM.ZIP", "application/zip", b"not a zip")]))
    assert result.documents == () and result.xdm_error == "attachment 1: the attachment is not a readable ZIP archive"


def test_a_zip_without_xdm_folder_is_just_an_unfileable_attachment():
    result = plan(message([("photos.zip", "application/zip", b"PK\x05\x06" + b"\x00" * 18)]))
    assert result.xdm_error is None and result.documents == () and len(result.problems) == 1


@pytest.mark.parametrize(("levels", "flags"), [
    (("N",), (False, False, False)),
    (("N", "MASQUE_PS"), (True, False, False)),
    (("R", "INVISIBLE_PATIENT"), (False, True, False)),
    (("N", "INVISIBLE_REP_LEGAUX", "MASQUE_PS"), (True, False, True)),
])
def test_confidentiality_codes_become_flags(levels, flags):
    archive = xdm([xdm_document("DOC0001.PDF", pdf(), confidentiality=levels)])
    (doc,) = plan(message([("IHE_XDM.ZIP", "application/zip", archive)])).documents
    assert (doc.masked_from_professionals, doc.hidden_from_patient, doc.hidden_from_legal_reps) == flags


@pytest.mark.parametrize(("type_code", "class_code", "category"), [
    ("11502-2", "10", Category.BIOLOGIE),
    ("18748-4", "31", Category.RADIO_SC),
    ("11490-0", "10", Category.CPT_REND),
    ("34133-9", "10", Category.CPT_REND),
    ("57833-6", "42", Category.ORD_SOIN),
    ("60591-5", "11", Category.SYNTHESE),
    ("CERT_DECL", "52", Category.CERT_MED),
    ("42348-3", "90", Category.DIR_ANT),
    ("99999-9", "52", Category.CERT_MED),  # unknown typeCode: the classCode decides
    ("99999-9", "77", Category.AUTR_DOC),
])
def test_category_from_type_code_then_class_code(type_code, class_code, category):
    assert category_for(type_code, class_code) is category
    archive = xdm([xdm_document("DOC0001.PDF", pdf(), type_code=type_code, class_code=class_code)])
    (doc,) = plan(message([("IHE_XDM.ZIP", "application/zip", archive)])).documents
    assert doc.category is category


def test_xdm_without_author_title_or_date_falls_back_to_the_sender():
    archive = xdm([xdm_document("Lettre_de_sortie.pdf", pdf(), title="", author=None, creation_time="2025")])
    (doc,) = plan(message([("IHE_XDM.ZIP", "application/zip", archive)])).documents
    assert doc.author_name == SENDER_NAME and doc.title == "Lettre de sortie"
    assert doc.document_date == datetime(2025, 1, 1, tzinfo=UTC)


def test_unfileable_xdm_document_is_a_problem():
    archive = xdm([xdm_document("PAGE.HTM", HTML, mime_type="text/html"), xdm_document("DOC.PDF", pdf())])
    result = plan(message([("IHE_XDM.ZIP", "application/zip", archive)]))
    assert [doc.filename for doc in result.documents] == ["DOC.PDF"]
    assert result.problems == ("document 1 of the XDM attachment 0 is of a type the dossier does not take "
                               "(text/html)",)


def test_the_same_file_twice_is_filed_once():
    result = plan(message([("a.pdf", "application/pdf", pdf()), ("copie.pdf", "application/pdf", pdf())]))
    assert [doc.attachment_index for doc in result.documents] == [0]


def test_limits_leave_attachments_unfiled_with_a_problem():
    files = [(f"doc{i}.pdf", "application/pdf", pdf(str(i), padding=1000)) for i in range(4)]
    files.insert(1, ("gros.pdf", "application/pdf", pdf("gros", padding=5000)))
    size = len(files[0][2])
    too_big = plan(message(files), FilingLimits(max_document_size=size + 100))
    assert [doc.attachment_index for doc in too_big.documents] == [0, 2, 3, 4]
    assert too_big.problems == (f"attachment 1 is larger than the {size + 100} bytes a document may have; "
                                "left as an attachment",)
    too_many = plan(message(files), FilingLimits(max_documents=2))
    assert [doc.attachment_index for doc in too_many.documents] == [0, 1]
    assert len(too_many.problems) == 3 and "beyond the 2 documents" in too_many.problems[0]
    total = plan(message(files), FilingLimits(max_total=3 * size))
    assert [doc.attachment_index for doc in total.documents] == [0, 2, 3]
    assert [problem.split(" would")[0] for problem in total.problems] == ["attachment 1", "attachment 4"]
    assert FilingLimits() == FilingLimits(10 * 1024 * 1024, 20, 50 * 1024 * 1024)


def test_creation_time_forms():
    assert creation_time("20250314093015") == datetime(2025, 3, 14, 9, 30, 15, tzinfo=UTC)
    assert creation_time("202503") == datetime(2025, 3, 1, tzinfo=UTC)
    assert creation_time("20251399") is None and creation_time("soon") is None and creation_time(None) is None


def test_author_round_trip_in_xdm():
    archive = xdm([xdm_document("DOC0001.PDF", pdf())])
    assert read_xdm(archive).documents[0].author == AUTHOR


def test_author_of_real_world_slot_values():
    person = "810002909371^DUPONT^Marie^^^Dr^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    author = Author.parse(person, "CH Exemple^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^11234567890")
    assert (author.identifier, author.id_authority, author.institution) == (
        "810002909371", "1.2.250.1.71.4.2.1", "CH Exemple")
    assert author.display_name == "Dr Marie DUPONT"
    assert Author.parse(None, "Laboratoire Central").display_name == "Laboratoire Central"
    assert Author.parse("", "") is None and Author.parse("^^^", None) is None


def test_plan_of_a_600_kb_message_files_its_one_document():
    report = pdf("grand") + random.Random(7).randbytes(200 * 1024)  # incompressible, as real scans are
    archive = xdm([xdm_document("DOC0001.PDF", report)])
    raw = message([("CR.pdf", "application/pdf", report), ("IHE_XDM.ZIP", "application/zip", archive)])
    assert len(raw) > 500 * 1024
    plan_filing(read_message(raw), INS, author_address=SENDER, author_name=SENDER_NAME)  # libmagic's first load
    views = [read_message(raw) for _ in range(10)]  # fresh views: nothing cached from an earlier plan
    results = [plan_filing(view, INS, author_address=SENDER, author_name=SENDER_NAME) for view in views]
    assert all(len(result.documents) == 1 for result in results)  # its speed: benchmarks/bridge.py


def test_documents_hidden_by_their_sender_are_filed_beyond_the_limits():
    """Only a filed document can be kept from the patient or their representatives (the attachment it came
    from is then withheld too): a hidden document is never left as a plain attachment by a limit."""
    hidden = xdm_document("SECRET.PDF", pdf("secret", padding=5000), confidentiality=("N", "INVISIBLE_REP_LEGAUX"))
    files = [("a.pdf", "application/pdf", pdf("a")), ("b.pdf", "application/pdf", pdf("b")),
             ("IHE_XDM.ZIP", "application/zip", xdm([hidden]))]
    result = plan(message(files), FilingLimits(max_documents=1, max_document_size=1000, max_total=1000))
    assert [(doc.filename, doc.hidden_from_legal_reps) for doc in result.documents] == [
        ("a.pdf", False), ("SECRET.PDF", True)]
    assert [problem.split(" is")[0] for problem in result.problems] == ["attachment 1"]
