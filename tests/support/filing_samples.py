"""Small real files built by hand (PDF, PNG, JPEG, TIFF, RTF, CDA …) and messages carrying them (filing tests)."""

from __future__ import annotations

import struct
import zlib
from email.message import EmailMessage

from mssante_base.patients.xdm import Author, NewDocument, PatientId, build_xdm

INS = "288091234567894"
OTHER_INS = "190017512345655"  # another patient (valid key)
NIR_OID = "1.2.250.1.213.1.4.8"
LOINC = "2.16.840.1.113883.6.1"
PATIENT_ADDRESS = f"{INS}@patient.mssante.fr"
SENDER = "dr.martin@hopital.mssante.fr"
SENDER_NAME = "Dr Paul Martin"
TRAITS = {"family_name": "DUPONT", "given_names": "JEANNE", "birth_date": "19880915", "sex": "F"}
AUTHOR = Author(identifier="810001234567", family_name="MARTIN", given_name="Claire", prefix="Dr",
                id_authority="1.2.250.1.71.4.2.1", institution="Laboratoire Central")


def pdf(text: str = "Compte rendu", padding: int = 0, *, filler: bytes | None = None) -> bytes:
    """A valid one-page PDF (correct xref offsets); ``padding`` bytes of "x" (or ``filler``, e.g. random
    bytes as a compressed PDF holds) are added in the content stream to reach a size."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() + b"\n%" + (filler if filler is not None else
                                                                          b"x" * padding)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def png() -> bytes:
    """A 1×1 red PNG with real CRCs and a zlib-compressed scan line."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
            + chunk(b"IEND", b""))


def jpeg() -> bytes:
    """SOI, a JFIF APP0 segment and EOI: what libmagic needs to see a JPEG."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0 + b"\xff\xd9"


def tiff() -> bytes:
    """A little-endian TIFF header with an empty first IFD."""
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 0) + struct.pack("<I", 0)


RTF = b"{\\rtf1\\ansi\\deff0 {\\fonttbl {\\f0 Times New Roman;}} \\f0 Ordonnance du 3 mars \\par}"
TEXT = "Bonjour Madame, voici les résultats de votre bilan sanguin. Bien à vous.\n".encode()
CDA = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
       b'<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
       b'<typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>'
       b'<code code="11502-2" codeSystem="2.16.840.1.113883.6.1"/><title>CR de biologie</title>'
       b'<component><nonXMLBody><text mediaType="text/plain">ok</text></nonXMLBody></component>'
       b'</ClinicalDocument>')
OTHER_XML = b'<?xml version="1.0"?><report xmlns="urn:example"><line>1</line></report>'
HTML = b"<!DOCTYPE html><html><head><title>x</title></head><body><p>Bonjour</p><script>alert(1)</script></body></html>"
SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="1" height="1">'
       b"<script>alert(1)</script></svg>")
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 44 + b"\x40\x00\x00\x00PE\x00\x00"


def xdm_document(filename: str, data: bytes, *, mime_type: str = "application/pdf", type_code: str = "11502-2",
                 class_code: str = "10", title: str = "CR de biologie", confidentiality: tuple[str, ...] = ("N",),
                 creation_time: str | None = "20250314093000", author: Author | None = AUTHOR) -> NewDocument:
    format_code = "urn:ihe:iti:xds-sd:pdf:2008" if mime_type == "application/pdf" else "urn:asip:ci-sis:cr-bio:2017"
    return NewDocument(filename, data, mime_type, type_code, LOINC, class_code, format_code, title,
                       confidentiality=confidentiality, creation_time=creation_time, author=author)


def xdm(documents: list[NewDocument], ins: str = INS) -> bytes:
    return build_xdm(PatientId(ins, NIR_OID), documents, source_patient_info=TRAITS)


def message(attachments: list[tuple[str | None, str, bytes]], *, body: str | None = "Bonjour,\nci-joint.\n",
            html: str | None = None, subject: str = "Résultats", headers: dict[str, str] | None = None) -> bytes:
    """A professional's message to the patient; attachments are (filename, declared Content-Type, bytes)."""
    msg = EmailMessage()
    msg["From"] = f"{SENDER_NAME} <{SENDER}>"
    msg["To"] = PATIENT_ADDRESS
    msg["Subject"] = subject
    msg["Date"] = "Fri, 14 Mar 2025 10:00:00 +0100"
    msg["Message-ID"] = "<m1@hopital.mssante.fr>"
    for name, value in (headers or {}).items():
        msg[name] = value
    if body is not None:
        msg.set_content(body)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    for filename, declared, data in attachments:
        maintype, _, subtype = declared.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()
