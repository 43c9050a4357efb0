"""Message bytes for send-bulk: a composed report around a PDF, or a ready ``.eml`` made fit for SMTP.

Pure functions. The Message-ID of a composed report depends only on the APP address, the file name
and the PDF's content, so the message sent again after a crash is recognised as the same one.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_BCC = re.compile(rb"^Bcc:.*?\r\n(?![ \t])", re.IGNORECASE | re.MULTILINE | re.DOTALL)

BODY = (
    "Bonjour,\n\n"
    "Veuillez trouver ci-joint un document transmis automatiquement par {sender}.\n"
    "Ce message est envoyé par une boîte applicative : merci de ne pas y répondre.\n\n"
    "Cordialement\n"
)


def message_id(sender: str, file_name: str, sha256: str) -> str:
    """``<bulk.hex@domain>``, the same for the same (sender, file name, content) whatever the run.

    128 bits of the digest: unique enough, and short enough for the header to stay on one line.
    """
    digest = hashlib.sha256("\0".join((sender.lower(), file_name, sha256)).encode()).hexdigest()[:32]
    return f"<bulk.{digest}@{sender.rpartition('@')[2].lower()}>"


def compose_report(*, sender: str, recipients: tuple[str, ...], subject: str, file_name: str, pdf: bytes,
                   sha256: str, now: datetime) -> bytes:
    """A report: short French text, the PDF attached (base64; an RFC 2231 file name when not ASCII)."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(sender, file_name, sha256)
    message.set_content(BODY.format(sender=sender), cte="quoted-printable")
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename=file_name)
    for part in message.iter_attachments():
        del part["MIME-Version"]  # the email package repeats it on each part; once, at the top, is the rule
    return message.as_bytes()


def prepare_eml(raw: bytes) -> bytes:
    """A ready message with CRLF line endings and no Bcc header field (its addresses stay envelope-only)."""
    raw = _LINE_ENDINGS.sub(b"\r\n", raw)
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    end = raw.find(b"\r\n\r\n")
    head, body = (raw, b"") if end < 0 else (raw[: end + 2], raw[end + 2:])
    return _BCC.sub(b"", head) + body


def dot_stuffed(message: bytes) -> bytes:
    """The DATA payload: CRLF line endings, a leading dot doubled, the ``.`` terminator line added."""
    message = _LINE_ENDINGS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", message) + b".\r\n"
