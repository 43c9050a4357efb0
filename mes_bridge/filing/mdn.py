"""Read receipts and integration-error reports (RFC 8098 MDNs) the patient's space sends back.

MSSanté senders ask for a read receipt with ``Disposition-Notification-To``; the bridge answers once, when the
patient first opens the message ("displayed"), or when it cannot file what was sent ("processed/error", the
form the MSSanté referential gives for integration errors). The report fields stay ASCII so that any MTA and
client along the way can read them; the human-readable part is French first, then English.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage, Message, MIMEPart
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Literal

from mssante_base.patients.ins import PATIENT_DOMAIN

DISPOSITIONS = {
    "displayed": "manual-action/MDN-sent-automatically; displayed",
    "error": "automatic-action/MDN-sent-automatically; processed/error",
}


def build_mdn(*, original_message_id: str | None, original_recipient: str, to: str, from_address: str,
              from_name: str, subject_of_original: str, disposition: Literal["displayed", "error"],
              error: str | None = None, reporting_ua: str = "mes_bridge", now: datetime | None = None) -> bytes:
    """A ``multipart/report; report-type=disposition-notification`` message, CRLF line endings."""
    if disposition not in DISPOSITIONS:
        raise ValueError(f"unknown disposition {disposition!r}")
    when = now or datetime.now(UTC)
    subject = _one_line(subject_of_original)
    message = EmailMessage(policy=SMTP)
    message["From"] = Address(_one_line(from_name), addr_spec=from_address)
    message["To"] = to
    message["Subject"] = (f"Accusé de lecture : {subject}" if disposition == "displayed"
                          else f"Erreur d'intégration : {subject}")
    message["Date"] = format_datetime(when)
    message["Message-ID"] = make_msgid(domain=PATIENT_DOMAIN)
    if original_message_id:
        message["In-Reply-To"] = _one_line(original_message_id)
        message["References"] = _one_line(original_message_id)
    message["Auto-Submitted"] = "auto-replied"
    message.set_content(_human_text(disposition, subject, original_recipient, when, error), cte="quoted-printable")
    message.make_mixed()
    message.replace_header("Content-Type", "multipart/report; report-type=disposition-notification")
    message.attach(_report_part(original_message_id, original_recipient, disposition, error, reporting_ua))
    return message.as_bytes()


def _report_part(original_message_id: str | None, original_recipient: str, disposition: str,
                 error: str | None, reporting_ua: str) -> MIMEPart:
    """The machine-readable ``message/disposition-notification`` part (RFC 8098 §3.1)."""
    fields = Message(policy=SMTP)
    fields["Reporting-UA"] = f"{PATIENT_DOMAIN}; {_ascii(reporting_ua)}"  # ua-name; ua-product
    fields["Original-Recipient"] = f"rfc822;{_ascii(original_recipient)}"
    fields["Final-Recipient"] = f"rfc822;{_ascii(original_recipient)}"
    if original_message_id:
        fields["Original-Message-ID"] = _ascii(original_message_id)
    fields["Disposition"] = DISPOSITIONS[disposition]
    if disposition == "error":
        fields["Error"] = _ascii(error or "the message could not be filed")
    part = MIMEPart(policy=SMTP)
    part["Content-Type"] = "message/disposition-notification"
    part["Content-Transfer-Encoding"] = "7bit"
    part.set_payload([fields])
    return part


def _human_text(disposition: str, subject: str, recipient: str, when: datetime, error: str | None) -> str:
    at = when.astimezone(UTC).strftime("%d/%m/%Y %H:%M UTC")
    if disposition == "displayed":
        return (f"Votre message « {subject} » adressé à {recipient} a été affiché par son destinataire le {at}.\n"
                "Cet accusé de lecture ne garantit pas que le message a été lu ni compris.\n\n"
                f"Your message \"{subject}\" to {recipient} was displayed by its recipient on {at}.\n"
                "This receipt does not guarantee that the message was read or understood.\n")
    reason = _one_line(error or "the message could not be filed")
    return (f"Votre message « {subject} » adressé à {recipient} n'a pas pu être intégré dans l'espace santé "
            f"du patient ({at}).\nMotif : {reason}\n\n"
            f"Your message \"{subject}\" to {recipient} could not be filed in the patient's space ({at}).\n"
            f"Reason: {reason}\n")


def parse_dnt(value: str | None) -> str | None:
    """The first address of a ``Disposition-Notification-To`` value, None when it holds none."""
    if not value or "\r" in value or "\n" in value:
        return None
    for _name, address in getaddresses([value]):
        local, at, domain = address.partition("@")
        if at and local and domain and " " not in address:
            return address
    return None


def _one_line(text: str) -> str:
    """Header-safe text: a sender's CR/LF must not start a header of ours."""
    return " ".join(text.split())


def _ascii(text: str) -> str:
    return _one_line(text).encode("ascii", "replace").decode("ascii")
