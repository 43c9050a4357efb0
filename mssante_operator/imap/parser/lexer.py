"""The lexical level of RFC 3501 section 9: a cursor with one method per grammar token."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import TypeVar

from ..commands import SYSTEM_FLAGS, UnreadableName
from ..sequence import MAX_NUMBER, SequenceSet
from ..utf7 import decode_mailbox
from .errors import ParseError

T = TypeVar("T")

MAX_MODSEQ = 2**63 - 1
"""mod-sequence-value is a 63-bit unsigned integer (RFC 7162 section 7)."""

MAX_SEARCH_DEPTH = 64
"""Nesting limit for NOT/OR/parentheses, so a hostile line cannot exhaust the recursion stack."""


def _char_class(chars: set[int]) -> bytes:
    """A regex character class matching exactly ``chars``."""
    return b"[" + b"".join(re.escape(bytes([c])) for c in sorted(chars)) + b"]"


_CTL = set(range(0x20)) | {0x7F}
_ATOM_CHARS = set(range(0x01, 0x80)) - _CTL - set(b'(){ %*"\\]')
_ASTRING_CHARS = _ATOM_CHARS | {ord("]")}

_ATOM = re.compile(_char_class(_ATOM_CHARS) + b"+")
_ASTRING_ATOM = re.compile(_char_class(_ASTRING_CHARS) + b"+")
TAG = re.compile(_char_class(_ASTRING_CHARS - {ord("+")}) + b"+")
_LIST_ATOM = re.compile(_char_class(_ATOM_CHARS | set(b"%*]")) + b"+")
_NUMBER = re.compile(rb"[0-9]+")
_SEQUENCE = re.compile(rb"[0-9:,*]+")
WORD = re.compile(rb"[A-Za-z0-9.]+")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_ESCAPE = re.compile(rb'\\(["\\])')
_LITERAL = re.compile(rb"\{([0-9]+)(\+?)\}\r\n")
BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}|=")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"( ?[0-9]|[0-9]{2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, start=1)}
"""English month names, not ``calendar.month_abbr``, which follows the process locale."""

_SYSTEM_FLAGS = {f.upper(): f for f in SYSTEM_FLAGS}
SPECIAL_USES = {u.upper(): u for u in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")}


def bounded_number(digits: bytes, maximum: int) -> int:
    """The number a run of ASCII digits spells, or ``maximum + 1`` for anything larger.

    A client may send thousands of digits: int() refuses more than 4300 with a ValueError (not a BAD),
    and past ``maximum`` the value only ever means "too big".
    """
    significant = digits.lstrip(b"0")
    if len(significant) > len(str(maximum)):
        return maximum + 1
    return min(int(significant or b"0"), maximum + 1)


def snippet(data: bytes) -> str:
    """A short printable excerpt of the offending input for the BAD text (no CR/LF, no 8-bit)."""
    data = re.split(rb"[\r\n]", data, maxsplit=1)[0]
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in data[:24])
    return text + ("..." if len(data) > 24 else "")


class Reader:
    """A cursor over the command bytes with one method per grammar token."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.tag: str | None = None

    # -- plumbing

    def fail(self, message: str) -> ParseError:
        """A ParseError for this command's tag."""
        return ParseError(self.tag, message)

    def expected(self, what: str) -> ParseError:
        """'Missing X' at the end of the line, 'Invalid X' with an excerpt elsewhere."""
        if self.at_end():
            return self.fail(f"Missing {what}")
        return self.fail(f"Invalid {what} near '{snippet(self.data[self.pos :])}'")

    def peek(self) -> bytes:
        """The next byte (as bytes), or b"" at the end."""
        return self.data[self.pos : self.pos + 1]

    def at_end(self) -> bool:
        """Only the final CRLF (or nothing) is left."""
        return self.data[self.pos :] in (b"", b"\r\n")

    def end(self) -> None:
        """Require the end of the command."""
        rest = self.data[self.pos :]
        if rest in (b"", b"\r\n"):
            return
        if rest in (b" ", b" \r\n"):
            raise self.fail("Unexpected trailing space")
        if rest[:1] == b" ":
            raise self.fail(f"Unexpected extra arguments near '{snippet(rest[1:])}'")
        raise self.fail(f"Unexpected characters near '{snippet(rest)}'")

    def sp(self, what: str) -> None:
        """Exactly one SP, then ``what`` follows."""
        if self.at_end():
            raise self.fail(f"Missing {what}")
        if self.peek() != b" ":
            raise self.fail(f"Expected a space before {what} near '{snippet(self.data[self.pos :])}'")
        self.pos += 1
        if self.peek() == b" ":
            raise self.fail(f"Extra space before {what}")
        if self.at_end():
            raise self.fail(f"Trailing space instead of {what}")

    def optional_sp(self) -> bool:
        """Consume one SP if an optional argument follows."""
        if self.peek() == b" ":
            self.sp("argument")
            return True
        return False

    def expect(self, char: bytes, what: str) -> None:
        """Require a punctuation byte."""
        if self.peek() != char:
            raise self.expected(what)
        self.pos += 1

    def match(self, pattern: re.Pattern[bytes]) -> re.Match[bytes] | None:
        """The match of ``pattern`` here (consumed), or None."""
        match = pattern.match(self.data, self.pos)
        if match is not None:
            self.pos = match.end()
        return match

    def take(self, pattern: re.Pattern[bytes]) -> bytes | None:
        """The text matched by ``pattern`` here (consumed), or None."""
        match = self.match(pattern)
        return None if match is None else match.group()

    def peek_word(self, word: str) -> bool:
        """Whether ``word`` (case-insensitive) is next, followed by SP."""
        end = self.pos + len(word)
        return self.data[self.pos : end].upper() == word.encode() and self.data[end : end + 1] == b" "

    def items(self, item: Callable[[], T], what: str, *, allow_empty: bool = False) -> list[T]:
        """A parenthesised, SP-separated list."""
        self.expect(b"(", f"'(' opening {what} list")
        found: list[T] = []
        if self.peek() == b")" and allow_empty:
            self.pos += 1
            return found
        while True:
            found.append(item())
            if self.peek() == b")":
                self.pos += 1
                return found
            if self.at_end():
                raise self.fail(f"Unclosed {what} list")
            self.sp(what)

    # -- tokens

    def atom(self, what: str) -> str:
        """1*ATOM-CHAR."""
        token = self.take(_ATOM)
        if token is None:
            raise self.expected(what)
        return token.decode("ascii")

    def keyword(self, what: str) -> str:
        """An atom compared case-insensitively (command names, options): upper-cased."""
        return self.atom(what).upper()

    def number(self, what: str, *, nonzero: bool = False, maximum: int = MAX_NUMBER) -> int:
        """``number`` (32-bit) or ``nz-number`` (no zero, no leading zero); ``maximum`` for mod-sequences."""
        token = self.take(_NUMBER)
        if token is None:
            raise self.expected(what)
        value = bounded_number(token, maximum)
        if value > maximum or (nonzero and token[:1] == b"0"):
            raise self.fail(f"Invalid {what} {token.decode()}")
        return value

    def quoted(self) -> bytes:
        """A quoted string, escapes resolved; 8-bit allowed, NUL/CR/LF and stray backslashes refused."""
        match = _QUOTED.match(self.data, self.pos)
        if match is None:
            raise self.fail(self._quoted_problem())
        self.pos = match.end()
        return _ESCAPE.sub(rb"\1", match.group(1))

    def _quoted_problem(self) -> str:
        """Why the quoted string here does not parse, for the BAD text."""
        i = self.pos + 1
        while i < len(self.data):
            byte = self.data[i : i + 1]
            if byte == b"\x00":
                return "NUL in quoted string"
            if byte in (b"\r", b"\n"):
                break
            if byte == b"\\":
                if self.data[i + 1 : i + 2] not in (b'"', b"\\"):
                    return "Invalid backslash escape in quoted string"
                i += 1
            i += 1
        return "Unterminated quoted string"

    def literal(self) -> bytes:
        """``{N}CRLF`` or ``{N+}CRLF`` followed by N octets (CHAR8: no NUL)."""
        match = _LITERAL.match(self.data, self.pos)
        if match is None:
            raise self.expected("literal")
        size = bounded_number(match.group(1), MAX_NUMBER)
        start = match.end()
        if size > MAX_NUMBER or start + size > len(self.data):
            raise self.fail("Literal shorter than announced")
        content = self.data[start : start + size]
        if b"\x00" in content:
            raise self.fail("NUL in literal")
        self.pos = start + size
        return content

    def string(self, what: str) -> bytes:
        """quoted / literal."""
        first = self.peek()
        if first == b'"':
            return self.quoted()
        if first == b"{":
            return self.literal()
        raise self.expected(what)

    def astring(self, what: str) -> bytes:
        """1*ASTRING-CHAR / string."""
        if self.peek() in (b'"', b"{"):
            return self.string(what)
        token = self.take(_ASTRING_ATOM)
        if token is None:
            raise self.expected(what)
        return token

    def nil(self) -> bool:
        """Consume NIL (any case) if it is next."""
        if self.data[self.pos : self.pos + 3].upper() == b"NIL" and not _ASTRING_ATOM.match(self.data, self.pos + 3):
            self.pos += 3
            return True
        return False

    def nstring(self, what: str) -> bytes | None:
        """string / NIL."""
        return None if self.nil() else self.string(what)

    def text(self, what: str) -> str:
        """An astring as UTF-8 text."""
        return self.utf8(self.astring(what), what)

    def utf8(self, raw: bytes, what: str) -> str:
        """Decode UTF-8 or fail: 8-bit text must be UTF-8 here."""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what.capitalize()} is not valid UTF-8") from None

    def mailbox_text(self, raw: bytes) -> str:
        """A wire mailbox name (modified UTF-7) as Unicode; US-ASCII that is not valid modified UTF-7
        comes back as an :class:`UnreadableName` (the command is well-formed: NO, not BAD)."""
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise self.fail(f"Mailbox name is not valid modified UTF-7: {snippet(raw)}") from exc
        try:
            return decode_mailbox(text)
        except ValueError:
            return UnreadableName(text)

    def mailbox(self) -> str:
        """``mailbox``: an astring in modified UTF-7; INBOX in any ASCII case is "INBOX" ("ınbox" is another name)."""
        name = self.mailbox_text(self.astring("mailbox name"))
        return "INBOX" if name.isascii() and name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        """``list-mailbox``: like an astring but wildcards allowed unquoted."""
        if self.peek() in (b'"', b"{"):
            raw = self.string("mailbox pattern")
        else:
            raw = self.take(_LIST_ATOM) or b""
            if not raw:
                raise self.expected("mailbox pattern")
        return self.mailbox_text(raw)

    def sequence_set(self) -> SequenceSet:
        """``sequence-set``."""
        token = self.take(_SEQUENCE)
        if token is None:
            raise self.expected("sequence set")
        try:
            return SequenceSet.parse(token.decode("ascii"))
        except ValueError:
            raise self.fail(f"Invalid sequence set {token.decode('ascii')}") from None

    def flag(self) -> str:
        """``flag``: a system flag (canonical spelling) or a keyword; ``\\Recent`` and ``\\*`` refused."""
        if self.peek() != b"\\":
            return self.atom("flag")
        self.pos += 1
        name = self.take(_ATOM)
        if name is None:
            raise self.fail("\\* and empty names are not flags") if self.peek() == b"*" else self.expected("flag")
        flag = "\\" + name.decode("ascii")
        canonical = _SYSTEM_FLAGS.get(flag.upper())
        if canonical is None:
            raise self.fail(f"Flag {flag} cannot be set by a client")
        return canonical

    def flag_list(self) -> tuple[str, ...]:
        """``"(" [flag *(SP flag)] ")"``."""
        return tuple(self.items(self.flag, "flag", allow_empty=True))

    def date(self) -> date:
        """``date``: ``1-Feb-1994``, optionally quoted."""
        quoted = self.peek() == b'"'
        if quoted:
            self.pos += 1
        match = self.match(_DATE)
        if match is None:
            raise self.expected("date")
        if quoted:
            self.expect(b'"', "closing quote of the date")
        day, month, year = match.groups()
        try:
            return date(int(year), _MONTHS[month.decode().upper()], int(day))
        except (KeyError, ValueError):
            raise self.fail(f"Invalid date {match.group().decode()}") from None

    def date_time(self) -> datetime:
        """``date-time``: ``"17-Jul-1996 02:44:25 -0700"`` as an aware datetime."""
        match = self.match(_DATE_TIME)
        if match is None:
            raise self.expected("date-time")
        day, month, year, hour, minute, second, sign, zh, zm = match.groups()
        try:
            offset = timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == b"-" else 1)
            if int(zm) >= 60:
                raise ValueError("zone minutes")
            return datetime(
                int(year),
                _MONTHS[month.decode().upper()],
                int(day),
                int(hour),
                int(minute),
                int(second),
                tzinfo=timezone(offset),
            )
        except (KeyError, ValueError):
            raise self.fail(f"Invalid date-time {match.group().decode()}") from None
