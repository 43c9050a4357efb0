"""Types come from content only: each accepted format, CDA R2 told from other XML, active content refused."""

from __future__ import annotations

import pytest
from support.filing_samples import CDA, EXE, HTML, OTHER_XML, RTF, SVG, TEXT, jpeg, pdf, png, tiff

from mes_bridge.filing.filetypes import SAFE_INLINE, detect_type, is_cda, xml_root


@pytest.mark.parametrize(("data", "mime", "kind"), [
    (pdf(), "application/pdf", "pdf"),
    (png(), "image/png", "png"),
    (jpeg(), "image/jpeg", "jpeg"),
    (tiff(), "image/tiff", "tiff"),
    (RTF, "text/rtf", "rtf"),
    (TEXT, "text/plain", "text"),
    (CDA, "text/xml", "cda"),
])
def test_accepted_formats_are_fileable(data, mime, kind):
    detected = detect_type(data)
    assert (detected.mime_type, detected.kind, detected.fileable) == (mime, kind, True)
    assert detected.structured is (kind == "cda")


@pytest.mark.parametrize("data", [HTML, SVG, EXE, OTHER_XML, b"", b"PK\x03\x04" + b"\x00" * 40])
def test_active_or_unknown_content_is_not_fileable(data):
    detected = detect_type(data)
    assert not detected.fileable and detected.kind == "other" and not detected.structured
    assert detected.mime_type not in SAFE_INLINE


def test_cda_without_xml_declaration_or_with_bom_is_still_cda():
    body = CDA.split(b"\n", 1)[1]
    assert detect_type(body).kind == "cda"  # libmagic alone calls this text/html
    assert detect_type(b"\xef\xbb\xbf" + CDA).kind == "cda"


def test_cda_needs_the_hl7_namespace_and_well_formed_xml():
    assert not is_cda(CDA.replace(b'xmlns="urn:hl7-org:v3"', b'xmlns="urn:other"'))
    assert not is_cda(CDA[:-10])  # truncated
    assert xml_root(OTHER_XML) == "urn:example}report"


def test_dtd_and_entities_are_refused_without_expansion():
    bomb = (b'<?xml version="1.0"?><!DOCTYPE ClinicalDocument [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            b'<ClinicalDocument xmlns="urn:hl7-org:v3">&b;</ClinicalDocument>')
    external = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                b'<ClinicalDocument xmlns="urn:hl7-org:v3">&e;</ClinicalDocument>')
    assert xml_root(bomb) is None and xml_root(external) is None
    assert not detect_type(bomb).fileable and not detect_type(external).fileable


def test_text_that_merely_starts_with_a_bracket_is_text():
    detected = detect_type("<3 merci docteur pour votre aide, à bientôt\n".encode())
    assert (detected.kind, detected.mime_type) == ("text", "text/plain")


def test_inline_safety():
    assert detect_type(pdf()).inline_safe and detect_type(png()).inline_safe
    assert not detect_type(tiff()).inline_safe and not detect_type(CDA).inline_safe
