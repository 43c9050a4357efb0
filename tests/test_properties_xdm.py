"""Property-based tests of the XDM reader, ``patients/xdm.py`` (Hypothesis).

Whatever archive ``build_xdm`` agrees to write, ``read_xdm`` reads back the same documents and metadata;
and random bytes, damaged archives or archives of junk only ever give the reader's own error
(:class:`XdmError`, which becomes a refusal with a clear text), never another exception.
"""

from __future__ import annotations

import contextlib
import io
import zipfile

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from mssante_base.patients.xdm import (
    CONFIDENTIALITY_SCHEME,
    INS_OIDS,
    Author,
    NewDocument,
    PatientId,
    XdmError,
    build_xdm,
    read_xdm,
)

# XML 1.0 carries no C0 control but tab, LF and CR, no lone surrogate, no U+FFFE/U+FFFF.
xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"), max_size=16)
# Slot values are trimmed and split on the HL7 separators: generate them as the reader gives them back.
slot_text = xml_text.map(lambda text: "".join(c for c in text if c not in "^&|").strip())
codes = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.:", min_size=1, max_size=12)
filenames = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
                    min_size=1, max_size=16)


@st.composite
def documents(draw: st.DrawFn) -> NewDocument:
    author = None
    if draw(st.booleans()):
        author = Author(identifier=draw(slot_text), family_name=draw(slot_text), given_name=draw(slot_text),
                        prefix=draw(slot_text), id_authority=draw(st.sampled_from(["", "1.2.250.1.71.4.2.1"])),
                        institution=draw(slot_text))
    return NewDocument(
        filename=draw(filenames),
        data=draw(st.binary(max_size=200)),
        mime_type=draw(st.sampled_from(["application/pdf", "text/xml", "image/jpeg", "text/plain"])),
        type_code=draw(codes), type_scheme=draw(st.sampled_from(["2.16.840.1.113883.6.1", "1.2.250.1.213.1.1.4.12"])),
        class_code=draw(codes), format_code=draw(codes), title=draw(xml_text),
        confidentiality=tuple(draw(st.lists(st.sampled_from(["N", "R", "V"]), max_size=2))),
        creation_time=draw(st.none() | st.just("20250314093000")),
        author=author,
    )


@st.composite
def patients(draw: st.DrawFn) -> PatientId:
    oid = draw(st.sampled_from([*sorted(INS_OIDS), "1.2.250.1.71.4.2.7"]))
    return PatientId(draw(st.text(alphabet="0123456789ABCDEFabc", min_size=1, max_size=15)), oid)


traits = st.fixed_dictionaries({}, optional={
    "family_name": slot_text, "given_names": slot_text, "birth_date": st.just("19880915"),
    "sex": st.sampled_from(["M", "F", "U"]),
})


@settings(max_examples=150, deadline=None)
@given(patients(), st.lists(documents(), min_size=1, max_size=4), traits)
@example(PatientId("288091234567894", "1.2.250.1.213.1.4.8"),
         [NewDocument(".", b"x", "application/pdf", "1", "1", "1", "1", "t")], {})
@example(PatientId("288091234567894", "1.2.250.1.213.1.4.8"),
         [NewDocument(" a.pdf", b"x", "application/pdf", "1", "1", "1", "1", "t")], {})
def test_what_the_writer_writes_the_reader_reads_back(patient: PatientId, docs: list[NewDocument],
                                                      info: dict[str, str]) -> None:
    try:
        archive = build_xdm(patient, docs, source_patient_info=info)
    except ValueError:
        assume(False)  # names the writer refuses (duplicates, paths, METADATA.XML)
        return
    package = read_xdm(archive)
    assert len(package.documents) == len(docs)
    for read, doc in zip(package.documents, docs, strict=True):
        assert read.data == doc.data
        assert read.uri == doc.filename
        assert read.checks_out
        assert read.mime_type == doc.mime_type
        assert read.title == doc.title
        assert read.patient_id == patient
        assert (read.type_code.code, read.type_code.scheme) == (doc.type_code, doc.type_scheme)
        assert read.class_code.code == doc.class_code
        assert read.format_code.code == doc.format_code
        assert [(c.code, c.scheme) for c in read.confidentiality] == [(c, CONFIDENTIALITY_SCHEME)
                                                                      for c in doc.confidentiality]
        assert read.source_patient.family_name == info.get("family_name", "")
        assert read.source_patient.sex == info.get("sex", "")
        if doc.creation_time is not None:
            assert read.creation_time == doc.creation_time
        written = doc.author is not None and bool(doc.author.xcn or doc.author.xon)  # a lone prefix names no one
        if written and doc.author.display_name:
            assert read.author is not None
            assert (read.author.family_name, read.author.given_name, read.author.institution) == (
                doc.author.family_name, doc.author.given_name, doc.author.institution)


def only_own_error(data: bytes) -> None:
    with contextlib.suppress(XdmError):
        read_xdm(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_give_only_xdm_errors(data: bytes) -> None:
    only_own_error(data)


SAMPLE = build_xdm(PatientId("288091234567894", "1.2.250.1.213.1.4.8"),
                   [NewDocument("cr.pdf", b"%PDF-1.4 " * 40, "application/pdf", "11502-2", "2.16.840.1.113883.6.1",
                                "10", "urn:ihe:iti:xds-sd:pdf:2008", "CR de biologie")])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_damaged_archives_give_only_xdm_errors(changes: list[tuple[int, int]]) -> None:
    damaged = bytearray(SAMPLE)
    for position, value in changes:
        damaged[position] = value
    only_own_error(bytes(damaged))


xml_soup = st.lists(st.sampled_from([
    '<rim:ExtrinsicObject id="d" mimeType="x">', "</rim:ExtrinsicObject>", '<rim:Slot name="URI">',
    '<rim:Slot name="size">', "<rim:ValueList>", "<rim:Value>", "</rim:Value>", "</rim:ValueList>", "</rim:Slot>",
    "1|a", "2|b", "\u00b2|c", "9" * 5000, "x.pdf", "../x", "-1", "²", "<!DOCTYPE x>", "&amp;",
    '<rim:ExternalIdentifier identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"'
    ' value="a^^^&amp;1&amp;ISO"/>',
    '<rim:Classification classificationScheme="urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"/>',
]), max_size=25).map(lambda parts: (
    '<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0" '
    'xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>'
    + "".join(parts) + "</rim:RegistryObjectList></lcm:SubmitObjectsRequest>"
).encode())


@settings(max_examples=300, deadline=None)
@given(xml_soup, st.lists(st.sampled_from(["x.pdf", "a", "b", "c", "IHE_XDM/S/y"]), max_size=3))
@example(('<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0" '
          'xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>'
          '<rim:ExtrinsicObject id="d"><rim:Slot name="URI"><rim:ValueList><rim:Value>\u00b2|a</rim:Value>'
          "<rim:Value>1|b</rim:Value></rim:ValueList></rim:Slot></rim:ExtrinsicObject>"
          "</rim:RegistryObjectList></lcm:SubmitObjectsRequest>").encode(), ["ab"])
def test_archives_of_junk_metadata_give_only_xdm_errors(metadata: bytes, files: list[str]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("IHE_XDM/S/METADATA.XML", metadata)
        for name in dict.fromkeys(files):
            archive.writestr(name if "/" in name else f"IHE_XDM/S/{name}", b"data")
    only_own_error(buffer.getvalue())
