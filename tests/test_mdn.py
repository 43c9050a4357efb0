"""Read receipts and integration-error MDNs (RFC 8098), read back with the standard email package."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser

import pytest

from mes_bridge.filing.mdn import build_mdn, parse_dnt

PATIENT = "288091234567894@patient.mssante.fr"
DOCTOR = "dr.martin@hopital.mssante.fr"
NOW = datetime(2025, 3, 14, 10, 30, tzinfo=UTC)


def mdn(disposition: str, **overrides: object):
    arguments = {"original_message_id": "<m1@hopital.mssante.fr>", "original_recipient": PATIENT, "to": DOCTOR,
                 "from_address": PATIENT, "from_name": "Jeanne Dupont", "subject_of_original": "Résultats",
                 "disposition": disposition, "error": None, "now": NOW, **overrides}
    raw = build_mdn(**arguments)
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    return BytesParser(policy=policy.default).parsebytes(raw)


def fields_of(message):
    text_part, report = message.iter_parts()
    assert text_part.get_content_type() == "text/plain"
    assert report.get_content_type() == "message/disposition-notification"
    return text_part.get_content(), report.get_payload()[0]


def test_displayed_receipt():
    message = mdn("displayed")
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "disposition-notification"
    assert message["Subject"] == "Accusé de lecture : Résultats"
    assert message["To"] == DOCTOR and message["From"].addresses[0].addr_spec == PATIENT
    assert message["From"].addresses[0].display_name == "Jeanne Dupont"
    assert message["Auto-Submitted"] == "auto-replied" and message["In-Reply-To"] == "<m1@hopital.mssante.fr>"
    assert message["Message-ID"].endswith("@patient.mssante.fr>")
    assert message["Date"].datetime == NOW
    text, fields = fields_of(message)
    assert "a été affiché" in text and "was displayed" in text and "Résultats" in text
    assert fields["Reporting-UA"] == "patient.mssante.fr; mes_bridge"
    assert fields["Original-Recipient"] == f"rfc822;{PATIENT}" and fields["Final-Recipient"] == f"rfc822;{PATIENT}"
    assert fields["Original-Message-ID"] == "<m1@hopital.mssante.fr>"
    assert fields["Disposition"] == "manual-action/MDN-sent-automatically; displayed"
    assert fields["Error"] is None


def test_error_report():
    message = mdn("error", error="attachment 1: the archive is about another patient than the recipient",
                 reporting_ua="bridge-test")
    assert message["Subject"] == "Erreur d'intégration : Résultats"
    text, fields = fields_of(message)
    assert "n'a pas pu être intégré" in text and "another patient" in text
    assert fields["Disposition"] == "automatic-action/MDN-sent-automatically; processed/error"
    assert fields["Error"] == "attachment 1: the archive is about another patient than the recipient"
    assert fields["Reporting-UA"].endswith("bridge-test")


def test_sender_text_cannot_add_headers_or_fields():
    message = mdn("error", subject_of_original="x\r\nBcc: victim@example.org",
                   error="bad\r\nDisposition: forged", original_message_id="<a@b>\r\nX-Injected: 1")
    assert message["Bcc"] is None and message["X-Injected"] is None
    _, fields = fields_of(message)
    assert fields.get_all("Disposition") == ["automatic-action/MDN-sent-automatically; processed/error"]
    assert fields["Error"] == "bad Disposition: forged"


def test_without_original_message_id_and_unknown_disposition():
    message = mdn("displayed", original_message_id=None)
    assert message["In-Reply-To"] is None and fields_of(message)[1]["Original-Message-ID"] is None
    with pytest.raises(ValueError):
        mdn("deleted")


@pytest.mark.parametrize(("value", "address"), [
    ("dr.martin@hopital.mssante.fr", "dr.martin@hopital.mssante.fr"),
    ('"Martin, Paul" <dr.martin@hopital.mssante.fr>, autre@x.fr', "dr.martin@hopital.mssante.fr"),
    ("", None),
    (None, None),
    ("pas une adresse", None),
    ("a@b\r\nBcc: c@d", None),
])
def test_parse_dnt(value, address):
    assert parse_dnt(value) == address
