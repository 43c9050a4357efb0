"""The one attachment walk: headers decoded, attachments numbered the same for intake and web, HTML bodies as text."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from email.message import EmailMessage

from support.filing_samples import HTML, PATIENT_ADDRESS, SENDER, SENDER_NAME, TEXT, message, pdf, png

from mes_bridge.filing.mime import attachment, html_to_text, read_message


def test_headers_body_and_attachments():
    raw = message([("compte-rendu.pdf", "application/pdf", pdf()), ("photo.png", "image/png", png())],
                  headers={"Disposition-Notification-To": f"Secrétariat <{SENDER}>", "In-Reply-To": "<r@x.fr>",
                           "Cc": "Autre <AUTRE@Hopital.mssante.fr>"})
    view = read_message(raw)
    assert (view.from_address, view.from_name) == (SENDER, SENDER_NAME)
    assert view.to == (PATIENT_ADDRESS,) and view.cc == ("autre@hopital.mssante.fr",)
    assert view.subject == "Résultats" and view.message_id == "<m1@hopital.mssante.fr>"
    assert view.in_reply_to == "<r@x.fr>" and view.mdn_to == SENDER
    assert view.date == datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
    assert view.text_body == "Bonjour,\nci-joint.\n" and not view.ends_exchange
    first, second = view.attachments
    assert (first.index, first.filename, first.declared_type, first.data) == (0, "compte-rendu.pdf",
                                                                              "application/pdf", pdf())
    assert first.size == len(pdf()) and first.sha256 == hashlib.sha256(pdf()).hexdigest()
    assert (second.index, second.filename, second.detected.kind) == (1, "photo.png", "png")


def test_attachment_by_index_matches_the_walk():
    raw = message([("a.pdf", "application/pdf", pdf()), ("b.txt", "text/plain", TEXT)])
    assert attachment(raw, 1) == read_message(raw).attachments[1]
    assert attachment(raw, 1).data == TEXT  # a text/plain attachment is not taken for the body
    assert attachment(raw, 2) is None and attachment(raw, -1) is None


def test_end_of_exchange_and_no_receipt_requested():
    view = read_message(message([], headers={"X-MSS-MES": "FIN"}))
    assert view.ends_exchange and view.mdn_to is None and view.attachments == ()
    assert read_message(message([], subject="[FIN]")).ends_exchange


def test_html_only_body_becomes_text_and_is_no_attachment():
    html = ("<html><head><style>p{color:red}</style><title>t</title></head><body><p>Bonjour&nbsp;Madame,</p>"
            "<p>Vos r&eacute;sultats sont <b>normaux</b>.</p><script>alert(1)</script><br>Dr Martin</body></html>")
    view = read_message(message([], body=None, html=html))
    assert view.text_body == "Bonjour Madame,\n\nVos résultats sont normaux.\n\nDr Martin\n"
    assert "<" not in view.text_body and view.attachments == ()


def test_html_alternative_of_a_text_body_is_not_an_attachment():
    view = read_message(message([("a.pdf", "application/pdf", pdf())], html="<p>Bonjour</p>"))
    assert view.text_body.startswith("Bonjour") and [a.filename for a in view.attachments] == ["a.pdf"]


def test_names_are_reduced_to_their_last_segment_and_types_never_trusted():
    raw = message([("C:\\Users\\x\\lettre.pdf", "application/octet-stream", pdf()),
                   ("../../etc/page.pdf", "application/pdf", HTML)])
    first, second = read_message(raw).attachments
    assert first.filename == "lettre.pdf" and first.detected.kind == "pdf"
    assert second.filename == "page.pdf" and second.detected.kind == "other"


def test_a_message_that_is_only_a_pdf_and_a_forwarded_message():
    lone = EmailMessage()
    lone["From"] = SENDER
    lone.set_content(pdf(), maintype="application", subtype="pdf", filename="seul.pdf")
    view = read_message(lone.as_bytes())
    assert view.text_body == "" and [a.filename for a in view.attachments] == ["seul.pdf"]
    inner = EmailMessage()
    inner["Subject"] = "transféré"
    inner.set_content("texte\n")
    outer = EmailMessage()
    outer.set_content("voir ci-dessous\n")
    outer.add_attachment(inner)
    forwarded = read_message(outer.as_bytes()).attachments
    assert len(forwarded) == 1 and forwarded[0].declared_type == "message/rfc822"
    assert b"texte" in forwarded[0].data


def test_malformed_headers_read_as_empty():
    raw = (b"From: <<<\r\nTo: ,,,\r\nDate: not a date\r\nSubject: =?bogus?q?x?=\r\n"
           b"Disposition-Notification-To: nobody\r\n\r\nhello\r\n")
    view = read_message(raw)
    assert view.from_address == "" and view.to == () and view.date is None and view.mdn_to is None
    assert view.text_body == "hello\n"


def test_html_to_text_keeps_text_and_drops_code():
    assert html_to_text(HTML.decode()) == "Bonjour\n"


def test_a_date_of_unknown_zone_reads_as_utc() -> None:
    raw = b"From: a@b.test\r\nDate: Sun, 22 Nov 2026 01:48:13 -0000\r\nSubject: x\r\n\r\nbody\r\n"
    date = read_message(raw).date
    assert date is not None and date.utcoffset() is not None and date.hour == 1
