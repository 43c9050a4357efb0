"""Header work on incoming messages: reading the few fields we index, adding trace headers.

Only the header block is parsed (the body of a 20 MB report is never decoded here), and a
malformed header never raises: the message is stored as received and the fields are best effort.
"""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.parser import HeaderParser
from email.utils import format_datetime, make_msgid

_PARSER = HeaderParser(policy=email.policy.compat32)
_HEADER_END = re.compile(rb"\r\n\r\n")
_AUTH_RESULTS_NAME = re.compile(rb"^authentication-results[ \t]*:", re.I)
_COMMENT = re.compile(rb"\([^()]*\)")


@dataclass(frozen=True)
class HeaderSummary:
    """The header fields the store indexes and the policy reads."""

    from_values: list[str]
    from_text: str
    subject: str
    message_id: str | None
    sender_values: list[str] = field(default_factory=list)
    has_date: bool = True
    mss_mes: list[str] = field(default_factory=list)  # X-MSS-MES values (FIN ends a patient conversation)


def split_header(message: bytes) -> tuple[bytes, bytes]:
    """(header block with its final CRLF, rest from the blank line on)."""
    match = _HEADER_END.search(message)
    if match is None:
        return message, b""
    return message[: match.start() + 2], message[match.start() + 2 :]


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, HeaderParseError):
        return value


def summarise(message: bytes) -> HeaderSummary:
    """Decoded From, Subject and Message-ID of a message, tolerant of malformed headers."""
    header, _ = split_header(message)
    # RFC 6532 (SMTPUTF8) allows raw UTF-8 in headers; any other 8-bit byte is junk, replaced rather
    # than carried as surrogates that the store could not encode.
    parsed = _PARSER.parsestr(header.decode("utf-8", "replace"))
    from_values = [str(v) for v in parsed.get_all("From", [])]
    message_id = parsed.get("Message-ID")
    message_id = " ".join(str(message_id).split()) if message_id else None
    return HeaderSummary(
        from_values=from_values,
        from_text=" ".join(_decoded(str(v)) for v in from_values),
        subject=" ".join(_decoded(str(parsed.get("Subject", ""))).split()),
        message_id=message_id or None,
        sender_values=[str(v) for v in parsed.get_all("Sender", [])],
        has_date=parsed.get("Date") is not None,
        mss_mes=[str(v) for v in parsed.get_all("X-MSS-MES", [])],
    )


def _authserv_id(value: bytes) -> bytes:
    """The authserv-id of an Authentication-Results value (RFC 8601 2.2): unfolded, comments skipped."""
    value = b" ".join(value.split())
    while (stripped := _COMMENT.sub(b" ", value)) != value:  # innermost comments first
        value = stripped
    token = re.split(rb"[\s;]", value.strip(), maxsplit=1)[0]
    return token.strip(b'"').lower()


def remove_authentication_results(message: bytes, authserv_id: str) -> bytes:
    """Drop Authentication-Results headers claiming to be ours (RFC 8601 section 5): they are forged.

    The field is unfolded and its comments skipped before its authserv-id is read, so that a forger
    cannot keep the header by folding it, adding a version number or a comment in front of our name.
    """
    header, body = split_header(message)
    ours = authserv_id.encode("utf-8").lower()
    kept: list[bytes] = []
    for lines in _fields(header):
        name = _AUTH_RESULTS_NAME.match(lines[0])
        if name is not None and _authserv_id(b" ".join([lines[0][name.end() :], *lines[1:]])) == ours:
            continue
        kept.extend(lines)
    return b"\r\n".join(kept) + body


def _fields(header: bytes) -> list[list[bytes]]:
    """The header block split into fields, each its first line and its continuation lines."""
    fields: list[list[bytes]] = []
    for line in header.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    return fields


_BCC_NAME = re.compile(rb"^bcc[ \t]*:", re.I)


def prepare_submission(message: bytes, summary: HeaderSummary, *, id_domain: str, when: datetime) -> tuple[bytes, str]:
    """A submitted message made ready to leave (RFC 6409 8): Bcc fields removed, Date and Message-ID
    added when the client left them out. Returns the message and its Message-ID."""
    header, body = split_header(message)
    kept = [line for lines in _fields(header) if not _BCC_NAME.match(lines[0]) for line in lines]
    added = b""
    message_id = summary.message_id
    if message_id is None:
        message_id = make_msgid(domain=id_domain)
        added += b"Message-ID: " + message_id.encode("ascii") + b"\r\n"
    if not summary.has_date:
        added += b"Date: " + format_datetime(when).encode("ascii") + b"\r\n"
    if not body:  # a message without a blank line: all header, no body
        kept = [line for line in kept if line]
        return added + b"\r\n".join(kept) + b"\r\n", message_id
    return added + b"\r\n".join(kept) + body, message_id


def received_header(
    *, helo: str, client_ip: str, hostname: str, protocol: str, tls: str, queue_id: str,
    recipient: str | None, when: datetime,
) -> bytes:
    """An RFC 5321 Received trace header."""
    for_clause = f"\r\n\tfor <{recipient}>" if recipient else ""
    return (
        f"Received: from {helo} ([{client_ip}])\r\n\tby {hostname} with {protocol} ({tls})\r\n"
        f"\tid {queue_id}{for_clause}; {format_datetime(when)}\r\n"
    ).encode()


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authentication_results_value(authserv_id: str, results: list[str]) -> str:
    """The value of an Authentication-Results header: each method result (resinfo) after its own ";"
    (RFC 8601 2.2), on its own folded line; without the ";" a parser reads the next result as
    properties of the previous one."""
    return authserv_id + "".join(f";\r\n\t{result}" for result in results) if results else authserv_id + "; none"


def _comment(text: str) -> str:
    """An RFC 5322 comment holding ``text``: parentheses and backslashes quoted, so that it stays one comment."""
    return "(" + re.sub(r"([()\\])", r"\\\1", text) + ")"


def dkim_result_text(result: str, domain: str, selector: str, b_prefix: str, reason: str) -> str:
    text = f"dkim={result}"
    if reason and result != "pass":
        text += " " + _comment(reason[:120])
    return text + f" header.d={domain} header.s={selector} header.b={b_prefix}"


def _ascii_dn(dn_text: str) -> str:
    """An RFC 4514 DN in ASCII: each non-ASCII character as the hex pairs of its UTF-8 bytes (``Rh\\C3\\B4ne``),
    which is the same DN, and which an RFC 8601 value (an RFC 2045 quoted-string) can carry."""
    return "".join(char if char.isascii() else "".join(f"\\{byte:02X}" for byte in char.encode()) for char in dn_text)


def tls_result_text(dn_text: str, mail_from_domain: str) -> str:
    """Our record of the mutual-TLS check: the peer certificate DN listed for the sender domain."""
    dn = _quote(_ascii_dn(dn_text))
    return f"x-mssante-tls=pass smtp.mailfrom={mail_from_domain or '<>'} policy.peer-dn={dn}"
