"""The refusals the hardened SMTP server makes by itself, before any listener's checks: control bytes and
SMTPUTF8 in the envelope, bare line endings (SMTP smuggling), refused-recipient budgets, idle slots.

Pure; shared by the operator's listeners and the bridge's LMTP intake.
"""

from __future__ import annotations

import re

from mssante_base.errors import Refusal

BARE_LINE_ENDING = Refusal(
    550, "5.6.0",
    "Message refused: it contains a bare CR or LF; lines must end with CRLF (SMTP smuggling protection)",
)
TOO_MANY_FAILED_RECIPIENTS = Refusal(421, "4.7.0", "Too many refused recipients in this session; closing")
CERTIFICATE_OVER_BUDGET = Refusal(
    421, "4.7.0", "Too many refused recipients for your certificate recently; closing, try again later",
)
NO_IDLE_SLOT = Refusal(421, "4.3.2", "Too many connections: this idle session gives its place; try again later")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL, C1
INVALID_UTF8 = re.compile(r"[\udc80-\udcff]")  # aiosmtpd decodes with surrogateescape


def check_envelope_text(text: str, *, recipient: bool) -> Refusal | None:
    """A MAIL FROM or RCPT TO argument: no control character (RFC 5321 4.1.2) and valid UTF-8. The
    text is never quoted back: it is exactly what cannot be trusted."""
    if CONTROL_CHARACTERS.search(text):
        problem = "control characters are not allowed in an address"
    elif INVALID_UTF8.search(text):
        problem = "the address is not valid UTF-8"
    else:
        return None
    if recipient:
        return Refusal(553, "5.1.3", f"Bad recipient address syntax: {problem}")
    return Refusal(501, "5.1.7", f"Bad sender address syntax: {problem}")


def check_smtputf8(address: str, *, recipient: bool, smtputf8: bool) -> Refusal | None:
    """A non-ASCII address only in a transaction that declared SMTPUTF8 (RFC 6531 3.5)."""
    if smtputf8 or address.isascii():
        return None
    which = "recipient" if recipient else "sender"
    return Refusal(553, "5.6.7", f"Non-ASCII {which} address: MAIL FROM needs the SMTPUTF8 parameter (RFC 6531)")


def check_line_endings(data: bytes) -> Refusal | None:
    """Refuse bare CR and bare LF anywhere in the data: they enable SMTP smuggling.

    Counting is done in C: every LF and every CR must belong to a CRLF pair.
    """
    pairs = data.count(b"\r\n")
    if data.count(b"\n") != pairs or data.count(b"\r") != pairs:
        return BARE_LINE_ENDING
    return None

