"""Enhanced status codes (RFC 2034/3463) for replies that aiosmtpd writes on its own.

aiosmtpd answers many protocol errors itself ("500 Line too long", "552 Error: Too much mail
data", "250 OK"). Our peers and their administrators rely on enhanced codes, so every such reply is
rewritten here, in one table, before it leaves the server. Client text that a reply or a log line
carries is made printable here too.
"""

from __future__ import annotations

import logging
import re

# C0 controls, DEL, C1 controls, and the bytes of invalid UTF-8 (decoded by aiosmtpd as lone surrogates).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\udc80-\udcff]")


def printable(text: str) -> str:
    """``text`` with control characters and invalid UTF-8 bytes written as ``\\xNN``: client text in a reply
    or a log line can then neither drive a terminal nor forge a line."""
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(lambda match: f"\\x{ord(match.group()) & 0xFF:02x}", text)


class PrintableLog(logging.Filter):
    """Makes the messages of a logger that carries client text printable (added to the SMTP loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = printable(message)
        if clean is not message:
            record.msg, record.args = clean, None
        return True


_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")

# Exact rewrites of aiosmtpd's texts: (prefix of the reply) -> full reply.
_REWRITES: tuple[tuple[str, str], ...] = (
    ("500 Line too long", "500 5.5.2 Line too long: at most {line} characters per line (RFC 5321 4.5.3.1.6)"),
    ("500 Command line too long", "500 5.5.2 Command line too long"),
    ("552 Error: Too much mail data", "552 5.3.4 Message too big: at most {size} bytes are accepted"),
    ("552 Error: message size exceeds", "552 5.3.4 Message too big: at most {size} bytes are accepted"),
    ("530 Must issue a STARTTLS command first",
     "530 5.7.0 Must issue a STARTTLS command first: this server accepts mail only over TLS"),
    ("554 Command refused due to lack of security", "554 5.7.0 Command refused: the TLS handshake failed"),
    ("220 Ready to start TLS", "220 2.0.0 Ready to start TLS"),
    ("354 ", "354 End data with <CR><LF>.<CR><LF>"),
)

# Default enhanced code by reply code, for the remaining built-in replies.
_DEFAULTS = {
    "221": "2.0.0", "250": "2.0.0", "251": "2.1.5", "252": "2.5.0",
    "421": "4.3.0", "450": "4.2.0", "451": "4.3.0", "452": "4.3.1", "454": "4.7.0",
    "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
    "530": "5.7.0", "550": "5.7.1", "552": "5.3.4", "553": "5.1.3", "554": "5.7.0", "555": "5.5.4",
}


def with_enhanced_code(reply: str, *, max_line: int, max_size: int) -> str:
    """The reply with an enhanced status code, our wording for aiosmtpd's own texts."""
    for prefix, replacement in _REWRITES:
        if reply.startswith(prefix):
            return replacement.format(line=max_line, size=max_size)
    if _HAS_ENHANCED.match(reply) or len(reply) < 4 or reply[3] == "-":
        return reply
    code, _, text = reply.partition(" ")
    enhanced = _DEFAULTS.get(code)
    if enhanced is None:
        return reply
    text = text.removeprefix("Error: ")
    return f"{code} {enhanced} {text}"
