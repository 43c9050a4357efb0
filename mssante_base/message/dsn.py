"""Delivery Status Notifications: the RFC 3461 SMTP parameters and the RFC 3464 report, as pure functions.

The parameters arrive with MAIL FROM (RET, ENVID) and RCPT TO (NOTIFY, ORCPT); the queue keeps them
per message and per recipient, and when a recipient is delivered, fails or waits too long the
queue runner asks ``build_report`` for the notice to send back, with a null sender. A peer's report
about a message we relayed is read by ``parse_report`` (what it refers to), for the MTA's policy.

Values that end up inside the report (ENVID, ORCPT, remote replies) are checked or cleaned of
control characters here, so a client cannot smuggle header fields into the notice we generate.
"""

from __future__ import annotations

import email.policy
import quopri
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser, Parser
from email.utils import collapse_rfc2231_value, format_datetime, formataddr, make_msgid

from mssante_base.errors import Refusal

__all__ = [
    "DeliveryReport", "DsnSyntaxError", "MailParameters", "RcptParameters", "ReportedOutcome", "ReportedRecipient",
    "build_report", "parse_report", "report_address", "split_mail_parameters", "split_rcpt_parameters", "trace_ids",
    "wants_notice", "xtext_decode", "xtext_encode",
]

NOTIFY_EVENTS = ("SUCCESS", "FAILURE", "DELAY")  # the order NOTIFY values are returned in
ENVID_MAX = 100  # RFC 3461 4.4
ORCPT_MAX = 500  # RFC 3461 4.2
SENDER_NAME = "Système de messagerie"


class DsnSyntaxError(ValueError):
    """A malformed DSN parameter; ``refusal`` is the 501 5.5.4 reply to give the client."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.refusal = Refusal(501, "5.5.4", text)


@dataclass(frozen=True)
class MailParameters:
    """RET and ENVID of MAIL FROM (RFC 3461 4.3, 4.4); ENVID decoded, its case kept."""

    ret: str | None = None  # "FULL" | "HDRS"
    envid: str | None = None


@dataclass(frozen=True)
class RcptParameters:
    """NOTIFY and ORCPT of RCPT TO (RFC 3461 4.1, 4.2)."""

    notify: tuple[str, ...] | None = None  # ("NEVER",) or a subset of NOTIFY_EVENTS, in that order
    orcpt: str | None = None  # "addr-type;address", the address decoded from xtext


# --- xtext (RFC 3461 section 4) -------------------------------------------------------------------

_HEXCHAR = re.compile(r"\+([0-9A-Fa-f]{2})")


def xtext_encode(text: str) -> str:
    """``+XX`` for "+", "=", controls, space and every byte outside printable ASCII (UTF-8 first)."""
    return "".join(
        chr(byte) if 33 <= byte <= 126 and byte not in b"+=" else f"+{byte:02X}" for byte in text.encode("utf-8")
    )


def xtext_decode(xtext: str) -> str:
    """The text an xtext stands for (hex digits of either case); DsnSyntaxError for a "+" without two hex
    digits, for "=", or for a character outside "!".."~"."""
    if any(not 33 <= ord(char) <= 126 or char == "=" for char in xtext) or "+" in _HEXCHAR.sub("", xtext):
        raise DsnSyntaxError("Malformed xtext in DSN parameter")
    try:
        return _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), xtext).encode("latin-1").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DsnSyntaxError("DSN parameter is not valid UTF-8 once decoded") from exc


def _printable(text: str, what: str) -> str:
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise DsnSyntaxError(f"{what} must not contain control characters")
    return text


# --- splitting ESMTP parameters ------------------------------------------------------------------

def _split(params: str, keywords: tuple[str, ...]) -> tuple[dict[str, str], str]:
    """Our keywords' values (keyword upper-cased) and ``params`` without them, every other byte kept."""
    found: dict[str, str] = {}
    rest, kept_until = [], 0
    for token in re.finditer(r"\s*(\S+)", params):  # a match spans the token and the blanks before it
        keyword, equals, value = token.group(1).partition("=")
        if keyword.upper() not in keywords:
            continue
        keyword = keyword.upper()
        if keyword in found:
            raise DsnSyntaxError(f"{keyword} given more than once")
        if not equals or not value:
            raise DsnSyntaxError(f"{keyword} needs a value")
        found[keyword] = value
        rest.append(params[kept_until:token.start()])
        kept_until = token.end()
    rest.append(params[kept_until:])
    return found, "".join(rest)


def split_mail_parameters(params: str) -> tuple[MailParameters, str]:
    """RET and ENVID out of the MAIL FROM parameters (text after the address); the rest untouched."""
    found, rest = _split(params, ("RET", "ENVID"))
    ret = found.get("RET")
    if ret is not None:
        ret = ret.upper()
        if ret not in ("FULL", "HDRS"):
            raise DsnSyntaxError("RET must be FULL or HDRS")
    envid = found.get("ENVID")
    if envid is not None:
        if len(envid) > ENVID_MAX:
            raise DsnSyntaxError(f"ENVID is longer than {ENVID_MAX} characters")
        envid = _printable(xtext_decode(envid), "ENVID")
        if not envid.isascii():
            raise DsnSyntaxError("ENVID must be printable US-ASCII")
    return MailParameters(ret=ret, envid=envid), rest


def split_rcpt_parameters(params: str) -> tuple[RcptParameters, str]:
    """NOTIFY and ORCPT out of the RCPT TO parameters (text after the address); the rest untouched."""
    found, rest = _split(params, ("NOTIFY", "ORCPT"))
    notify = None
    if "NOTIFY" in found:
        values = found["NOTIFY"].upper().split(",")
        if values == ["NEVER"]:
            notify = ("NEVER",)
        elif len(set(values)) != len(values) or not set(values) <= set(NOTIFY_EVENTS):
            raise DsnSyntaxError("NOTIFY must be NEVER, or SUCCESS, FAILURE and DELAY each at most once")
        else:
            notify = tuple(event for event in NOTIFY_EVENTS if event in values)
    orcpt = None
    if "ORCPT" in found:
        if len(found["ORCPT"]) > ORCPT_MAX:
            raise DsnSyntaxError(f"ORCPT is longer than {ORCPT_MAX} characters")
        addr_type, semicolon, address = found["ORCPT"].partition(";")
        if not semicolon or not address or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+", addr_type):
            raise DsnSyntaxError("ORCPT must be addr-type;xtext, e.g. rfc822;someone@example.fr")
        orcpt = f"{addr_type};{_printable(xtext_decode(address), 'ORCPT')}"
    return RcptParameters(notify=notify, orcpt=orcpt), rest


def wants_notice(notify: tuple[str, ...] | None, event: str) -> bool:
    """Whether a DSN is owed for ``event`` ("success", "failure", "delay"); no NOTIFY means failure and delay."""
    if event not in ("success", "failure", "delay"):
        raise ValueError(f"unknown DSN event {event!r}")
    if notify is None:
        return event != "success"
    return event.upper() in notify


# --- the report (RFC 3464, RFC 6522) ---------------------------------------------------------------

@dataclass(frozen=True)
class ReportedRecipient:
    """One recipient's lines in a report."""

    address: str
    orcpt: str | None
    action: str  # "failed" | "delayed" | "delivered" | "relayed"
    status: str  # RFC 3463 enhanced code, e.g. "5.1.1"
    diagnostic: str = ""  # the remote reply or our reason
    remote_mta: str = ""
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None


_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_CLASS = {"failed": "5", "delayed": "4", "delivered": "2", "relayed": "2"}
_SUBJECT = {"failed": "Non remis", "delayed": "Retardé", "delivered": "Remis", "relayed": "Transmis"}
_TEXTS = {  # (French, English), the French first as the recipients of MSSanté mail read it
    "failed": ("Votre message n'a pas pu être remis aux destinataires suivants :",
               "Your message could not be delivered to the following recipients:"),
    "delayed": ("Votre message n'a pas encore pu être remis aux destinataires suivants. De nouvelles tentatives "
                "auront lieu automatiquement ; vous n'avez rien à faire pour l'instant.",
                "Your message has not been delivered yet to the following recipients. Delivery will be retried "
                "automatically; you need not do anything for now."),
    "delivered": ("Votre message a été remis aux destinataires suivants :",
                  "Your message was delivered to the following recipients:"),
    "relayed": ("Votre message a été transmis aux destinataires suivants, dont le système ne confirme pas "
                "la remise :",
                "Your message was relayed to the following recipients, whose system does not confirm delivery:"),
}
_ORDER = ("failed", "delayed", "delivered", "relayed")  # the worst outcome names the report
_WIDTH, _LIMIT = 78, 998
_HEADERS = email.policy.SMTP.clone(refold_source="all")  # "all": RFC 2047-encode even a short non-ASCII field


def _one_line(text: str) -> str:
    """Controls (a multi-line reply's CR LF included) and runs of blanks become one space: a field stays one field."""
    return re.sub(r"[\x00-\x20\x7f]+", " ", text).strip()


def _fold(line: str) -> str:
    """Fold at spaces below 78 characters where possible, and never let a line pass 998 (RFC 5322 2.1.1).

    A word longer than a line is cut: a space in it is the price of a field every MTA accepts.
    """
    lines, current = [], ""
    for word in line.split(" "):
        for piece in [word[i:i + _LIMIT - 2] for i in range(0, len(word), _LIMIT - 2)] or [""]:
            if current and len(current) + 1 + len(piece) > _WIDTH:
                lines.append(current)
                current = " " + piece
            else:
                current = f"{current} {piece}" if current else piece
    lines.append(current)
    return "\r\n".join(lines) + "\r\n"


def _date(moment: datetime) -> str:
    return format_datetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _address_field(name: str, address: str) -> str:
    # RFC 6533 3.2: an address with non-ASCII characters is of type "utf-8", not "rfc822".
    return _fold(f"{name}: {'rfc822' if address.isascii() else 'utf-8'};{_one_line(address)}")


def _recipient_fields(recipient: ReportedRecipient) -> str:
    if recipient.action not in _CLASS:
        raise ValueError(f"unknown DSN action {recipient.action!r}")
    if not _STATUS.fullmatch(recipient.status) or recipient.status[0] != _CLASS[recipient.action]:
        raise ValueError(f"status {recipient.status!r} does not fit action {recipient.action!r}")
    fields = [_fold(f"Original-Recipient: {_one_line(recipient.orcpt)}")] if recipient.orcpt else []
    fields += [_address_field("Final-Recipient", recipient.address),
               f"Action: {recipient.action}\r\n", f"Status: {recipient.status}\r\n"]
    if recipient.remote_mta:
        fields.append(_fold(f"Remote-MTA: dns; {_one_line(recipient.remote_mta)}"))
    if recipient.diagnostic:
        fields.append(_fold(f"Diagnostic-Code: smtp; {_one_line(recipient.diagnostic)}"))
    if recipient.last_attempt:
        fields.append(f"Last-Attempt-Date: {_date(recipient.last_attempt)}\r\n")
    if recipient.will_retry_until and recipient.action == "delayed":
        fields.append(f"Will-Retry-Until: {_date(recipient.will_retry_until)}\r\n")
    return "".join(fields)


def _delivery_status(reporting_mta: str, envid: str | None, arrival: datetime,
                     recipients: list[ReportedRecipient]) -> str:
    per_message = _fold(f"Reporting-MTA: dns; {_one_line(reporting_mta)}")
    if envid:
        per_message += _fold(f"Original-Envelope-Id: {_one_line(envid)}")
    per_message += f"Arrival-Date: {_date(arrival)}\r\n"
    return "\r\n".join([per_message, *(_recipient_fields(r) for r in recipients)])


def _human_text(recipients: list[ReportedRecipient], reporting_mta: str) -> str:
    french, english = [], []
    for action in _ORDER:
        group = [r for r in recipients if r.action == action]
        if not group:
            continue
        lines = [f"  {_one_line(r.address)}" + (f" : {_one_line(r.diagnostic)}" if r.diagnostic else "")
                 for r in group]
        french += [_TEXTS[action][0], *lines, ""]
        english += [_TEXTS[action][1], *(line.replace(" : ", ": ", 1) for line in lines), ""]
    signature = f"-- \nLe serveur de messagerie {reporting_mta} / The mail server {reporting_mta}\n"
    return "\n".join([*french, "---", "", *english]) + signature


def _split_original(original: bytes) -> tuple[bytes, bytes]:
    """The original with CRLF line ends, and its header block (ending with the blank line)."""
    original = re.sub(rb"(?<!\r)\n", b"\r\n", original)
    end = original.find(b"\r\n\r\n")
    return original, (original[:end + 4] if end >= 0 else original.rstrip(b"\r\n") + b"\r\n\r\n")


def _subject(headers: bytes) -> str:
    try:
        parsed = Parser(policy=email.policy.default).parsestr(headers.decode("utf-8", "replace"), headersonly=True)
        return _one_line(str(parsed["Subject"] or ""))
    except Exception:  # a header the parser cannot read leaves the subject out, not the report
        return ""


def _fold_long_lines(block: bytes) -> bytes:
    """Header lines over 998 octets (never legal, yet received) are folded so the report stays legal."""
    if all(len(line) <= _LIMIT for line in block.split(b"\r\n")):
        return block
    step = _LIMIT - 2
    return b"\r\n".join(
        b"\r\n ".join(line[i:i + step] for i in range(0, len(line), step)) if len(line) > _LIMIT else line
        for line in block.split(b"\r\n")
    )


def _part(content_type: str, body: bytes, encoding: str) -> bytes:
    return f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n".encode() + body


def build_report(*, reporting_mta: str, original_sender: str, envid: str | None, ret: str | None,
                 recipients: list[ReportedRecipient], original: bytes, arrival: datetime, now: datetime,
                 from_address: str) -> bytes:
    """A multipart/report (RFC 6522, RFC 3464) telling ``original_sender`` what became of ``recipients``.

    The original travels whole (message/rfc822) in a failure report unless RET=HDRS; success and
    delay reports carry only its header (text/rfc822-headers), as do originals whose lines exceed 998.
    """
    if not original_sender:
        raise ValueError("a message with a null sender is never answered with a DSN (RFC 3461 6.2)")
    if not recipients:
        raise ValueError("a report needs at least one recipient")
    original, headers = _split_original(original)
    status = _delivery_status(reporting_mta, envid, arrival, recipients)  # validates actions and codes
    worst = next(action for action in _ORDER if any(r.action == action for r in recipients))
    report_type = "delivery-status" if status.isascii() else "global-delivery-status"  # RFC 6533
    full = worst == "failed" and ret != "HDRS" and all(len(line) <= _LIMIT for line in original.split(b"\r\n"))
    enclosed = (_part("message/rfc822", original, "7bit" if original.isascii() else "8bit") if full else
                _part("text/rfc822-headers", _fold_long_lines(headers), "7bit" if headers.isascii() else "8bit"))
    human = quopri.encodestring(_human_text(recipients, reporting_mta).encode("utf-8")).replace(b"\n", b"\r\n")
    parts = [
        _part('text/plain; charset="utf-8"', human, "quoted-printable"),
        _part(f"message/{report_type}", status.encode("utf-8"), "7bit" if status.isascii() else "8bit"),
        enclosed,
    ]
    boundary = "=_dsn_" + secrets.token_hex(12)
    subject = f"{_SUBJECT[worst]} : {_subject(headers) or '(sans objet)'}"
    top = "".join([
        _fold(f"From: {formataddr((SENDER_NAME, from_address))}"),
        _fold(f"To: <{_one_line(original_sender)}>"),
        _HEADERS.fold("Subject", subject),
        f"Date: {_date(now)}\r\n",
        f"Message-ID: {make_msgid('dsn', domain=reporting_mta)}\r\n",
        "Auto-Submitted: auto-replied\r\n",
        "MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/report; report-type={report_type};\r\n boundary="{boundary}"\r\n',
        "\r\n",
    ]).encode("utf-8")
    delimiter = f"\r\n--{boundary}\r\n".encode()
    body = b"This is a MIME-formatted delivery status notification.\r\n"
    return top + body + delimiter + delimiter.join(parts) + f"\r\n--{boundary}--\r\n".encode()


# --- a report received from a peer (RFC 3464, RFC 6522, RFC 6533) -----------------------------------

REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})
_RETURNED = frozenset({"text/rfc822-headers", "message/global-headers", "message/rfc822", "message/global"})
_MAX_TRACE_IDS = 5  # our ids looked up per report: a report names one message
_ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})  # RFC 3464 2.3.3


@dataclass(frozen=True)
class ReportedOutcome:
    """One per-recipient block of a received report: the addresses decoded, lower-cased."""

    final_recipient: str
    original_recipient: str | None
    action: str  # an RFC 3464 action, or "unknown"


@dataclass(frozen=True)
class DeliveryReport:
    """What a received delivery-status report says and which message it refers to."""

    recipients: tuple[ReportedOutcome, ...]
    envid: str | None             # Original-Envelope-Id, as given
    message_id: str | None        # the Message-ID of the original, from the header the report returns
    queue_ids: tuple[str, ...]    # the ids in the original's Received fields that ``hostname`` wrote


def report_address(value: str | None) -> str | None:
    """The address of "rfc822; a@b" (any address type), lower-cased; None when there is none."""
    if value is None:
        return None
    _, _, address = _one_line(str(value)).partition(";")
    address = address.strip().strip("<>").lower()
    if not address or len(address) > 320 or not address.isprintable():  # junk, or bytes that were not UTF-8
        return None
    return address


def _action(value: object) -> str:
    action = _one_line(str(value or "")).lower()
    return action if action in _ACTIONS else "unknown"


def _returned_header(part: Message) -> Message | None:
    """The original's header out of a report's third part (headers only, or the whole message)."""
    if part.get_content_type() in ("message/rfc822", "message/global") and part.is_multipart():
        inner = part.get_payload(0)
        return inner if isinstance(inner, Message) else None
    payload = part.get_payload(decode=True)
    return BytesHeaderParser().parsebytes(payload) if isinstance(payload, bytes) else None


def trace_ids(received_values: list[str], hostname: str) -> tuple[str, ...]:
    """The ids in the ``Received`` fields written by ``hostname`` ("by HOST with … id ID"), first first."""
    ours = re.compile(rf"\bby\s+{re.escape(hostname)}\s.*?\bid\s+([0-9A-Za-z]+)", re.I)
    found = [m.group(1) for value in received_values if (m := ours.search(_one_line(value)))]
    return tuple(dict.fromkeys(found))[:_MAX_TRACE_IDS]


def parse_report(raw: bytes, hostname: str) -> DeliveryReport | None:
    """The report in ``raw`` when it is a ``multipart/report`` of a delivery status (else None).

    ``hostname`` is ours: the returned header's Received fields with ``by hostname`` give the queue ids
    the report refers to. Tolerant of what peers write: a part the parser cannot read is left out.
    """
    message = BytesParser(policy=email.policy.compat32).parsebytes(raw)
    if message.get_content_type() != "multipart/report" or not message.is_multipart():
        return None
    if collapse_rfc2231_value(message.get_param("report-type") or "").lower() not in REPORT_TYPES:
        return None
    blocks: list[Message] = []
    original: Message | None = None
    for part in message.get_payload():
        if not isinstance(part, Message):
            continue
        kind = part.get_content_type()
        if not blocks and kind in ("message/delivery-status", "message/global-delivery-status"):
            blocks = [b for b in part.get_payload() if isinstance(b, Message)] if part.is_multipart() else []
        elif original is None and kind in _RETURNED:
            original = _returned_header(part)
    recipients = tuple(
        ReportedOutcome(final, report_address(block["Original-Recipient"]), _action(block["Action"]))
        for block in blocks[1:] if (final := report_address(block["Final-Recipient"])) is not None
    )
    if not recipients:
        return None
    envid = blocks[0]["Original-Envelope-Id"]
    message_id = original["Message-ID"] if original is not None else None
    received = [str(v) for v in original.get_all("Received", [])] if original is not None else []
    return DeliveryReport(
        recipients=recipients,
        envid=_one_line(str(envid)) if envid is not None else None,
        message_id=_one_line(str(message_id)) if message_id is not None else None,
        queue_ids=trace_ids(received, hostname),
    )
