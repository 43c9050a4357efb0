"""IHE XDM archives: what build_xdm writes read_xdm reads back, real-world metadata shapes, and hostile archives."""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
from email.message import EmailMessage

import pytest

from mssante_base.patients import xdm
from mssante_base.patients.ins import Ins
from mssante_base.patients.xdm import NewDocument, PatientId, XdmError, build_xdm, find_xdm_attachments, read_xdm

INS = "288091234567894"
NIR_OID = "1.2.250.1.213.1.4.8"
PATIENT = PatientId(INS, NIR_OID)
TRAITS = {"family_name": "DUPONT", "given_names": "JEANNE", "birth_date": "19880915", "sex": "F"}
LOINC = "2.16.840.1.113883.6.1"
CDA = NewDocument("DOC0001.XML", b"<ClinicalDocument xmlns='urn:hl7-org:v3'/>", "text/xml", "11502-2", LOINC, "10",
                  "urn:asip:ci-sis:cr-bio:2017", "Compte rendu de biologie")
PDF = NewDocument("DOC0002.PDF", b"%PDF-1.4 fake", "application/pdf", "11488-4", LOINC, "10",
                  "urn:ihe:iti:xds-sd:pdf:2008", "Consultation", confidentiality=("N", "R"))


def zip_of(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def files_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_round_trip_keeps_every_attribute_and_the_bytes():
    package = read_xdm(build_xdm(PATIENT, [CDA, PDF], source_patient_info=TRAITS))
    cda, pdf = package.documents
    assert (cda.uri, cda.subset, cda.mime_type, cda.data) == ("DOC0001.XML", "SUBSET01", "text/xml", CDA.data)
    assert cda.patient_id == PATIENT and cda.patient_id.is_ins and cda.patient_id.ins == Ins(INS)
    assert cda.source_patient == xdm.SourcePatientInfo("DUPONT", "JEANNE", "19880915", "F")
    assert cda.type_code == xdm.Code("11502-2", LOINC, "Compte rendu de biologie")
    assert cda.class_code.code == "10" and cda.format_code.code == "urn:asip:ci-sis:cr-bio:2017"
    assert [c.code for c in cda.confidentiality] == ["N"] and [c.code for c in pdf.confidentiality] == ["N", "R"]
    assert cda.title == "Compte rendu de biologie" and pdf.title == "Consultation"
    assert cda.size == len(CDA.data) and cda.hash == hashlib.sha1(CDA.data).hexdigest() and cda.checks_out
    assert cda.unique_id.startswith("2.25.") and cda.entry_id.startswith("urn:uuid:") and cda.creation_time
    assert pdf.data == PDF.data and pdf.mime_type == "application/pdf"
    assert cda.is_cda and not pdf.is_cda
    assert package.cda_type_codes == {"11502-2"}
    assert package.patients == {PATIENT}
    assert cda.qualified_ins == Ins(INS)


def test_written_archive_has_the_xdm_layout():
    names = set(files_of(build_xdm(PATIENT, [CDA], subset="LOT_A")))
    assert names == {"README.TXT", "INDEX.HTM", "IHE_XDM/LOT_A/METADATA.XML", "IHE_XDM/LOT_A/DOC0001.XML"}
    metadata = files_of(build_xdm(PATIENT, [CDA]))["IHE_XDM/SUBSET01/METADATA.XML"].decode()
    for needed in ("lcm:SubmitObjectsRequest", "rim:RegistryPackage", xdm.SUBMISSION_SET, xdm.HAS_MEMBER,
                   "SubmissionSetStatus", xdm.SET_PATIENT_ID, f"{INS}^^^&amp;{NIR_OID}&amp;ISO^NH"):
        assert needed in metadata


def test_without_traits_the_ins_is_not_qualified():
    (doc,) = read_xdm(build_xdm(PATIENT, [CDA])).documents
    assert doc.patient_id.ins == Ins(INS) and doc.qualified_ins is None
    partial = dict(TRAITS, sex="")
    (doc,) = read_xdm(build_xdm(PATIENT, [CDA], source_patient_info=partial)).documents
    assert doc.qualified_ins is None


def test_patient_ids():
    assert PatientId.parse(f"{INS}^^^&{NIR_OID}&ISO^NH") == PATIENT
    assert PatientId.parse("12345^^^&1.2.3.4&ISO^PI") == PatientId("12345", "1.2.3.4")
    local = PatientId("12345", "1.2.3.4")
    assert not local.is_ins and local.ins is None and local.cx == "12345^^^&1.2.3.4&ISO^PI"
    for oid in ("1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"):
        assert PatientId(INS, oid).is_ins
    assert PatientId("288091234567823", NIR_OID).ins is None  # INS OID, wrong key
    assert PatientId("2880920A12345" + "67", NIR_OID).ins is None
    for bad in ("", "12345", "12345^^^1.2.3", "^^^&1.2.3&ISO"):
        with pytest.raises(XdmError):
            PatientId.parse(bad)


def test_source_patient_info_prefers_the_legal_name():
    info = xdm.SourcePatientInfo.parse(["PID-3|x", "PID-5|MARTIN^LEA^^^^^D", "PID-5|DURAND^LEA MARIE^^^^^L",
                                        "PID-7|20010203", "PID-8|F", "PID-11|somewhere"])
    assert info == xdm.SourcePatientInfo("DURAND", "LEA MARIE", "20010203", "F") and info.complete
    assert xdm.SourcePatientInfo.parse(["PID-5|SEUL"]).given_names == ""
    assert not xdm.SourcePatientInfo.parse([]).complete


@pytest.mark.parametrize(("mime", "format_code", "cda"), [
    ("text/xml", "urn:ihe:iti:xds-sd:pdf:2008", True),  # a CDA level 1 embedding a PDF is still CDA
    ("text/xml", "urn:asip:ci-sis:cr-bio:2017", True),
    ("application/pdf", "urn:ihe:iti:xds-sd:pdf:2008", False),
    ("image/jpeg", "urn:ihe:iti-fr:xds-sd:jpeg:2010", False),
    ("", "urn:asip:ci-sis:cr-bio:2017", True),
    ("", "urn:ihe:iti-fr:xds-sd:rtf:2010", False),
    ("", "urn:ihe:iti:xds-sd:text:2008", False),
])
def test_is_cda(mime, format_code, cda):
    doc = read_xdm(build_xdm(PATIENT, [NewDocument("D.BIN", b"x", mime, "1-8", LOINC, "10", format_code, "t")]))
    assert doc.documents[0].is_cda is cda


def test_paths_and_subset_names_are_case_insensitive():
    original = files_of(build_xdm(PATIENT, [CDA], subset="Lot-7"))
    lowered = zip_of({name.lower(): data for name, data in original.items()})
    (doc,) = read_xdm(lowered).documents
    assert doc.subset == "lot-7" and doc.data == CDA.data


def test_several_subsets_and_documents():
    first = files_of(build_xdm(PATIENT, [CDA, PDF], subset="SUBSET01"))
    second = files_of(build_xdm(PATIENT, [PDF], subset="SUBSET02"))
    package = read_xdm(zip_of(first | second))
    assert [(d.subset, d.uri) for d in package.documents] == [
        ("SUBSET01", "DOC0001.XML"), ("SUBSET01", "DOC0002.PDF"), ("SUBSET02", "DOC0002.PDF")]


R = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
FLAT_METADATA = f"""<?xml version="1.0" encoding="UTF-8"?>
<SubmitObjectsRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0" xmlns:rim="{R}">
 <rim:RegistryObjectList>
  <rim:ExtrinsicObject id="Doc1" mimeType="text/xml" objectType="{xdm.DOCUMENT_ENTRY}">
   <rim:Slot name="URI"><rim:ValueList><rim:Value>2|DOC0001.XML</rim:Value><rim:Value>1|SUB/</rim:Value>
   </rim:ValueList></rim:Slot>
   <rim:Slot name="sourcePatientInfo"><rim:ValueList><rim:Value>PID-5|DUPONT^JEANNE^^^^^L</rim:Value>
    <rim:Value>PID-7|19880915</rim:Value><rim:Value>PID-8|F</rim:Value></rim:ValueList></rim:Slot>
   <rim:Name><rim:LocalizedString value="CR"/></rim:Name>
  </rim:ExtrinsicObject>
  <rim:Classification id="c1" classificationScheme="{xdm.TYPE_CODE}" classifiedObject="Doc1"
      nodeRepresentation="11502-2"><rim:Slot name="codingScheme"><rim:ValueList><rim:Value>{LOINC}</rim:Value>
      </rim:ValueList></rim:Slot></rim:Classification>
  <rim:ExternalIdentifier id="e1" identificationScheme="{xdm.DOC_PATIENT_ID}" registryObject="Doc1"
      value="{INS.lower()}^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^NH"/>
  <rim:ExtrinsicObject id="Doc2" mimeType="application/pdf" objectType="{xdm.DOCUMENT_ENTRY}"/>
 </rim:RegistryObjectList>
</SubmitObjectsRequest>"""


def test_flat_metadata_split_uri_and_a_document_without_uri():
    data = zip_of({"IHE_XDM/S1/METADATA.XML": FLAT_METADATA.encode(), "IHE_XDM/S1/SUB/DOC0001.XML": b"<cda/>"})
    first, second = read_xdm(data).documents
    assert first.uri == "SUB/DOC0001.XML" and first.data == b"<cda/>"
    assert first.type_code == xdm.Code("11502-2", LOINC, "") and first.title == "CR"
    assert first.qualified_ins == Ins(INS) and first.size is None and first.checks_out
    assert second.uri == "SUB/DOC0001.XML"  # no URI: the subset's only file
    assert second.patient_id is None and second.type_code is None and second.confidentiality == ()


def test_a_document_without_uri_among_several_files_is_refused():
    data = zip_of({"IHE_XDM/S1/METADATA.XML": FLAT_METADATA.encode(), "IHE_XDM/S1/SUB/DOC0001.XML": b"<cda/>",
                   "IHE_XDM/S1/OTHER.PDF": b"%PDF"})
    with pytest.raises(XdmError, match="document 2 of subset S1 has no URI"):
        read_xdm(data)


def test_checks_out_compares_size_and_hash():
    metadata = files_of(build_xdm(PATIENT, [CDA]))
    metadata["IHE_XDM/SUBSET01/DOC0001.XML"] = b"changed"
    (doc,) = read_xdm(zip_of(metadata)).documents
    assert not doc.checks_out


@pytest.mark.parametrize(("data", "why"), [
    (b"not a zip", "not a readable ZIP"),
    (b"", "not a readable ZIP"),
    (zip_of({"README.TXT": b"x"}), "no IHE_XDM/<subset>/METADATA.XML"),
    (zip_of({"IHE_XDM/METADATA.XML": b"<x/>"}), "no IHE_XDM/<subset>/METADATA.XML"),
    (zip_of({"IHE_XDM/S/METADATA.XML": b"<unclosed>"}), "METADATA.XML of subset S is not well-formed XML"),
    (zip_of({"IHE_XDM/S/METADATA.XML": b""}), "not well-formed"),
    (zip_of({"IHE_XDM/S/METADATA.XML": b"<a>&nbsp;</a>"}), "not well-formed"),
    (zip_of({"IHE_XDM/S/METADATA.XML": f"<r xmlns='{R}'/>".encode()}), "describes no document"),
    (zip_of({"IHE_XDM/S/METADATA.XML": f"<r xmlns='{R}'><ExtrinsicObject id='a'><Slot name='URI'><ValueList>"
                                       "<Value>GONE.XML</Value></ValueList></Slot></ExtrinsicObject></r>".encode()}),
     "document 1 of subset S names a file that is not in the archive"),
    (zip_of({"IHE_XDM/S/METADATA.XML": f"<r xmlns='{R}'><ExtrinsicObject id='a'><Slot name='URI'><ValueList>"
                                       "<Value>../../README.TXT</Value></ValueList></Slot></ExtrinsicObject></r>"
                                       .encode(), "README.TXT": b"x"}),
     "has a URI leaving its folder"),
    (zip_of({"IHE_XDM/S/METADATA.XML": f"<r xmlns='{R}'><ExtrinsicObject id='a'><Slot name='size'><ValueList>"
                                       "<Value>big</Value></ValueList></Slot></ExtrinsicObject></r>".encode(),
             "IHE_XDM/S/D": b"x"}),
     "size that is not a number"),
    (zip_of({"IHE_XDM/S/METADATA.XML": b"<r/>", "ihe_xdm/s/metadata.xml": b"<r/>"}), "same name"),
])
def test_malformed_archives_say_what_is_wrong(data, why):
    with pytest.raises(XdmError, match=why):
        read_xdm(data)


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/passwd", "IHE_XDM/S/../../x", "a\\b.txt", "C:/x.txt"])
def test_path_traversal_names_are_refused(name):
    data = zip_of({"IHE_XDM/S/METADATA.XML": b"<r/>", name: b"x"})
    with pytest.raises(XdmError, match="path leaving its folder"):
        read_xdm(data)


DOCTYPES = [
    b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><r>&b;</r>',
    b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd"><r/>',
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
    b"<!DOCTYPE r><r/>",
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY a "b">]><r>&a;</r>'.encode("utf-16"),
]


@pytest.mark.parametrize("metadata", DOCTYPES)
def test_dtds_and_entities_are_refused(metadata):
    with pytest.raises(XdmError, match=r"METADATA\.XML of subset S declares a DTD or entities"):
        read_xdm(zip_of({"IHE_XDM/S/METADATA.XML": metadata}))


def test_too_many_entries():
    files = {f"IHE_XDM/S/F{n}": b"" for n in range(xdm.MAX_ENTRIES)} | {"IHE_XDM/S/METADATA.XML": b"<r/>"}
    with pytest.raises(XdmError, match=f"1001 entries, more than the {xdm.MAX_ENTRIES} allowed"):
        read_xdm(zip_of(files, zipfile.ZIP_STORED))


def test_total_uncompressed_size_is_capped(monkeypatch):
    data = zip_of({"IHE_XDM/S/METADATA.XML": b"<r/>", "IHE_XDM/S/BIG": b"x" * 600}, zipfile.ZIP_STORED)
    monkeypatch.setattr(xdm, "MAX_TOTAL_SIZE", 500)
    with pytest.raises(XdmError, match="expands to more than"):
        read_xdm(data)


def test_highly_compressed_entries_are_refused_as_bombs():
    bomb = zip_of({"IHE_XDM/S/METADATA.XML": b"<r/>", "IHE_XDM/S/ZEROS": bytes(4 * 1024 * 1024)})
    assert len(bomb) < 40_000
    with pytest.raises(XdmError, match="expands more than 100 times"):
        read_xdm(bomb)


def test_an_entry_lying_about_its_size_is_never_expanded_past_it():
    data = bytearray(build_xdm(PATIENT, [NewDocument("DOC0001.XML", b"y" * 5000, "text/xml", "1-8", LOINC, "10",
                                                      "urn:x", "t")]))
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):  # local, central
        start = data.find(signature)
        while start >= 0:
            if data[start + name_at:].startswith(b"IHE_XDM/SUBSET01/DOC0001.XML"):
                struct.pack_into("<I", data, start + size_at, 10)
            start = data.find(signature, start + 4)
    with pytest.raises(XdmError, match="corrupt"):
        read_xdm(bytes(data))


def test_encrypted_entries_are_refused():
    data = bytearray(zip_of({"IHE_XDM/S/METADATA.XML": b"<r/>"}, zipfile.ZIP_STORED))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = data.find(signature)
        data[start + offset] |= 0x1
    with pytest.raises(XdmError, match="encrypted"):
        read_xdm(bytes(data))


def test_errors_never_quote_file_names_or_content():
    secret = "DUPONT-jeanne-VIH.pdf"
    data = zip_of({"IHE_XDM/S/METADATA.XML": f"<r xmlns='{R}'><ExtrinsicObject id='a'><Slot name='URI'><ValueList>"
                                             f"<Value>{secret}</Value></ValueList></Slot></ExtrinsicObject></r>"
                                             .encode()})
    with pytest.raises(XdmError) as caught:
        read_xdm(data)
    assert secret not in str(caught.value)
    with pytest.raises(XdmError) as caught:
        read_xdm(zip_of({"IHE_XDM/S/METADATA.XML": b"<r/>", f"../{secret}": b"x"}))
    assert secret not in str(caught.value)


def test_build_refuses_bad_names():
    with pytest.raises(ValueError, match="at least one"):
        build_xdm(PATIENT, [])
    for name in ("../x.xml", "a/b.xml", "METADATA.XML", ""):
        with pytest.raises(ValueError, match="plain names"):
            build_xdm(PATIENT, [NewDocument(name, b"x", "text/xml", "1", LOINC, "10", "f", "t")])
    with pytest.raises(ValueError, match="plain names"):
        build_xdm(PATIENT, [CDA, NewDocument("doc0001.xml", b"x", "text/xml", "1", LOINC, "10", "f", "t")])
    with pytest.raises(ValueError, match="plain folder"):
        build_xdm(PATIENT, [CDA], subset="../up")


def message_with(*attachments: tuple[str, bytes, str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = "Résultats"
    message.set_content("Bonjour")
    for filename, data, mime in attachments:
        maintype, subtype = mime.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message


def test_find_xdm_attachments():
    archive = build_xdm(PATIENT, [CDA])
    message = message_with(("ihe_xdm.zip", b"whatever", "application/octet-stream"),
                           ("envoi.zip", archive, "application/zip"),
                           ("photos.zip", zip_of({"a.jpg": b"x"}), "application/zip"),
                           ("broken.zip", b"PK junk", "application/zip"),
                           ("cr.pdf", b"%PDF", "application/pdf"))
    assert find_xdm_attachments(message) == [b"whatever", archive]
    unnamed = message_with(("x.bin", archive, "application/x-zip-compressed"))
    assert find_xdm_attachments(unnamed) == [archive]
    assert find_xdm_attachments(message_with()) == []
