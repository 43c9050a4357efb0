"""The one reading of a received message: its headers, its text and its attachments, numbered once.

Intake files attachments by their index and the web serves them by the same index, so both must walk the
MIME tree the same way: this module is that walk. The body shown to the patient is the text/plain part; an
HTML-only body is turned into plain text here, so that no sender's HTML is ever served.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import HeaderParseError, MessageError
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import SMTP, default
from functools import cached_property
from html.parser import HTMLParser
from pathlib import PureWindowsPath

from mssante_base.patients.conversations import ends_exchange

from .filetypes import DetectedType, detect_type
from .mdn import parse_dnt

WITHHELD_NOTICE = "Pièce jointe non disponible pour ce lecteur."
WITHHELD_FILENAME = "piece-jointe-non-disponible.txt"
_HEADER_ERRORS = (HeaderParseError, MessageError, ValueError, IndexError, LookupError, TypeError, AttributeError)


@dataclass(frozen=True)
class AttachmentPart:
    """One attachment: its ordinal in the walk, what the sender declared, and its bytes."""

    index: int
    filename: str | None  # the last path segment of the declared name; shown, never trusted for the type
    declared_type: str  # the sender's Content-Type (informative only)
    data: bytes = field(repr=False)
    size: int
    sha256: str

    @cached_property
    def detected(self) -> DetectedType:
        """The type from the content (computed once per part, shared by filing and serving)."""
        return detect_type(self.data)


@dataclass(frozen=True)
class MessageView:
    """What the bridge reads of a message, headers decoded (addresses lower-case)."""

    from_address: str
    from_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    date: datetime | None
    subject: str
    message_id: str | None
    in_reply_to: str | None
    mdn_to: str | None  # Disposition-Notification-To: a read receipt is due on first opening
    ends_exchange: bool  # X-MSS-MES: FIN or a subject of exactly [FIN]
    text_body: str
    attachments: tuple[AttachmentPart, ...]


def read_message(raw: bytes) -> MessageView:
    """The view of a raw RFC 5322 message (parsed once; malformed headers read as empty)."""
    message = _parse(raw)
    body, alternatives = _body(message)
    from_name, from_address = _first_address(message, "From")
    subject = _header(message, "Subject") or ""
    return MessageView(
        from_address=from_address,
        from_name=from_name,
        to=_addresses(message, "To"),
        cc=_addresses(message, "Cc"),
        date=_date(message),
        subject=subject,
        message_id=_header(message, "Message-ID"),
        in_reply_to=_header(message, "In-Reply-To"),
        mdn_to=parse_dnt(_header(message, "Disposition-Notification-To")),
        ends_exchange=ends_exchange([str(v) for v in message.get_all("X-MSS-MES", [])], subject),
        text_body=_text_of(body) if body is not None else "",
        attachments=tuple(_attachments(message, body, alternatives)),
    )


def attachment(raw: bytes, index: int) -> AttachmentPart | None:
    """Attachment ``index`` of a raw message as :func:`read_message` numbers it, None when there is none."""
    message = _parse(raw)
    for part in _attachments(message, *_body(message)):
        if part.index == index:
            return part
    return None


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def _body(message: EmailMessage) -> tuple[Message | None, set[int]]:
    """The body part (text/plain preferred, else text/html) and the ids of its alternatives' subtree.

    The other renderings of the body (multipart/alternative siblings) are not attachments.
    """
    try:
        body = message.get_body(preferencelist=("plain", "html"))
    except _HEADER_ERRORS:
        body = None
    if body is None:
        return None, set()
    skipped: set[int] = {id(body)}
    for container in message.walk():
        if container.get_content_type() == "multipart/alternative" and _contains(container, body):
            skipped.update(id(part) for part in container.walk())
    return body, skipped


def _contains(container: Message, part: Message) -> bool:
    return any(sub is part for sub in container.walk())


def _numbered(message: EmailMessage, body: Message | None, skipped: set[int]) -> Iterator[tuple[int, Message, bytes]]:
    """(index, part, bytes) of every leaf but the body and its alternatives, in document order; a forwarded
    message is one part; an unreadable leaf gets no index. The one numbering of attachments."""
    index = 0
    for part in _leaves(message):
        if part is body or id(part) in skipped:
            continue
        data = _payload(part)
        if data is None:
            continue
        yield index, part, data
        index += 1


def _attachments(message: EmailMessage, body: Message | None, skipped: set[int]) -> list[AttachmentPart]:
    return [AttachmentPart(index=index, filename=_filename(part), declared_type=part.get_content_type(), data=data,
                           size=len(data), sha256=hashlib.sha256(data).hexdigest())
            for index, part, data in _numbered(message, body, skipped)]


def without_attachments(raw: bytes, indexes: set[int]) -> bytes:
    """The message with attachments ``indexes`` (as :func:`read_message` numbers them) replaced by a short
    text/plain attachment saying so: their bytes, names and headers are gone, the other parts and the
    numbering stay (the placeholder keeps the index, so reading the result numbers the rest the same).
    ``raw`` itself when there is nothing to withhold; otherwise the message is serialised again (CRLF)."""
    message = _parse(raw)
    withheld = [part for index, part, _ in _numbered(message, *_body(message)) if index in indexes]
    if not withheld:
        return raw
    for part in withheld:
        part.clear()
        part.set_content(WITHHELD_NOTICE, disposition="attachment", filename=WITHHELD_FILENAME,
                         cte="quoted-printable")
        del part["MIME-Version"]  # set_content adds it to every EmailMessage; only the top level has one
    return message.as_bytes(policy=SMTP)


def _leaves(part: Message) -> list[Message]:
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        return [leaf for sub in part.get_payload() for leaf in _leaves(sub)]
    return [part]


def _payload(part: Message) -> bytes | None:
    """A leaf's decoded bytes (an attached message as its own bytes), None when unreadable."""
    try:
        if part.get_content_maintype() == "message":
            inner = part.get_payload()
            if isinstance(inner, list):
                return b"".join(sub.as_bytes() for sub in inner) if inner else None
        data = part.get_payload(decode=True)
    except _HEADER_ERRORS:
        return None
    return data if isinstance(data, bytes) else None


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except _HEADER_ERRORS:
        return None
    if not name:
        return None
    name = PureWindowsPath(str(name).replace("\x00", "")).name.strip()  # "C:\\x\\y.pdf" and "a/b.pdf" alike
    return name or None


def _text_of(body: Message) -> str:
    try:
        text = body.get_content() if isinstance(body, EmailMessage) else None
    except _HEADER_ERRORS:
        text = None
    if not isinstance(text, str):
        raw = body.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    text = text.replace("\r\n", "\n")
    return html_to_text(text) if body.get_content_subtype() == "html" else text


def _header(message: EmailMessage, name: str) -> str | None:
    try:
        value = message.get(name)
    except _HEADER_ERRORS:
        return None
    text = " ".join(str(value).split()) if value is not None else ""
    return text or None


def _first_address(message: EmailMessage, name: str) -> tuple[str, str]:
    try:
        header = message.get(name)
        addresses = header.addresses if header is not None else ()
    except _HEADER_ERRORS:
        return "", ""
    for address in addresses:
        if _usable(address.addr_spec):
            return address.display_name or "", address.addr_spec.lower()
    return "", ""


def _addresses(message: EmailMessage, name: str) -> tuple[str, ...]:
    found: list[str] = []
    try:
        for header in message.get_all(name, []):
            found.extend(address.addr_spec.lower() for address in header.addresses if _usable(address.addr_spec))
    except _HEADER_ERRORS:
        pass
    return tuple(found)


def _usable(addr_spec: str) -> bool:
    local, at, domain = addr_spec.rpartition("@")
    return bool(local and at and domain) and not any(c in addr_spec for c in "<> \t")


def _date(message: EmailMessage) -> datetime | None:
    """The Date header, always time-zone aware: "-0000" (RFC 5322: zone unknown) is read as UTC."""
    try:
        header = message.get("Date")
        value = header.datetime if header is not None else None
    except _HEADER_ERRORS:
        return None
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


# --- HTML to text -------------------------------------------------------------------------------------------

_BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol",
                     "blockquote", "pre", "hr", "section", "article", "header", "footer", "address"})
_HIDDEN = frozenset({"script", "style", "head", "title", "template", "noscript"})


class _TextExtractor(HTMLParser):
    """Visible text of an HTML body, with line breaks where blocks end; scripts, styles and head dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BLOCKS:
            self.chunks.append("\n")
        elif tag == "td":
            self.chunks.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.chunks.append(data)


def html_to_text(html: str) -> str:
    """Plain text of an HTML body (never served as HTML: the patient's space shows text only)."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    lines = (re.sub(r"[ \t\r\f\v\xa0]+", " ", line).strip() for line in "".join(extractor.chunks).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
