"""What a delivery attempt ended with, typed: kind, reply code, enhanced status code and text.

The queue stores these as columns, the DSN reads them, ``queue show`` prints them: no layer parses a
reply line back. The only parse is at the wire, where a peer's (or the bridge's) reply arrives as a
code and a text that may begin with an RFC 2034 enhanced code (:meth:`Reply.from_smtp`). Our own
reasons (a connection refused, an expired message) have no reply code, and an enhanced code when we
give one.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

# RFC 3463: class.subject.detail at the start of a reply's text, followed by a space or the end.
_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?= |$)")


class ResultKind(enum.StrEnum):
    """How an attempt ended for one recipient."""

    DELIVERED = "delivered"  # the next hop took it (2xx)
    TEMPORARY = "temporary"  # try again later (4xx, or no answer: network, TLS, DNS)
    PERMANENT = "permanent"  # never (5xx, or a reason that will not change)


def kind_of(code: int) -> ResultKind:
    """The kind of an SMTP/LMTP reply code."""
    return ResultKind.DELIVERED if code < 400 else ResultKind.TEMPORARY if code < 500 else ResultKind.PERMANENT


@dataclass(frozen=True)
class Reply:
    """One recipient's answer: the peer's reply (``code`` set) or our own reason (``code`` None)."""

    kind: ResultKind
    text: str  # the human part, after the codes
    code: int | None = None  # the reply code; None when no reply came or the reason is ours
    enhanced: str | None = None  # RFC 3463 code ("5.1.1"), when the reply carried one or we give one

    @classmethod
    def from_smtp(cls, code: int, message: str) -> Reply:
        """A reply as received: whitespace runs (a multi-line reply's line breaks) become one space, and a
        leading enhanced code whose class matches the reply code's is split off."""
        text = " ".join(message.split())
        enhanced = _ENHANCED.match(text)
        if enhanced is None or enhanced.group(1) != str(code)[0]:
            return cls(kind_of(code), text, code)
        return cls(kind_of(code), text[enhanced.end() + 1:], code, enhanced.group())

    @property
    def line(self) -> str:
        """The reply as one line: "550 5.1.1 no such user", "4.3.0 file missing", "connection refused by …"."""
        rest = " ".join(part for part in (self.enhanced, self.text) if part)
        return rest if self.code is None else f"{self.code} {rest}"

    def __str__(self) -> str:
        return self.line
