"""IMAP client commands: framing of lines and literals, then parsing into :mod:`.commands` objects.

Pure code: the network layer reads lines and literal bytes and feeds a :class:`CommandFramer`, which
says when a literal must be read and returns the command bytes exactly as sent; :func:`parse_command`
turns them into a frozen command or raises :class:`ParseError` with a message for the ``BAD`` reply.

The grammar is RFC 3501 section 9 with the extensions' additions (LITERAL+, SASL-IR, ID, ENABLE,
UIDPLUS, MOVE, SPECIAL-USE, CONDSTORE, APPENDLIMIT), read strictly: one SP between arguments, no
trailing space. Deliberate leniencies, each sent by real clients: 8-bit UTF-8 in quoted strings,
single-digit days in APPEND date-times, ``CHANGEDSINCE 0``, an empty ``ID ()`` list, and search
strings decoded as UTF-8 whatever the CHARSET (US-ASCII is a subset).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TypeVar

from .commands import (
    AllKey,
    And,
    Append,
    Authenticate,
    BodySection,
    Capability,
    Check,
    Close,
    Command,
    Copy,
    Create,
    DateKey,
    DateRelation,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    FetchAttribute,
    FetchItem,
    FlagKey,
    HeaderContains,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Lsub,
    ModSeqKey,
    Move,
    Namespace,
    Noop,
    Not,
    Or,
    Rename,
    Search,
    SearchKey,
    Select,
    SequenceKey,
    SizeKey,
    StartTLS,
    Status,
    Store,
    StoreMode,
    Subscribe,
    TextContains,
    Unselect,
    Unsubscribe,
)
from .sequence import MAX_NUMBER, SequenceSet
from .utf7 import decode_mailbox

T = TypeVar("T")

MAX_MODSEQ = 2**63 - 1
"""mod-sequence-value is a 63-bit unsigned integer (RFC 7162 section 7)."""

MAX_SEARCH_DEPTH = 64
"""Nesting limit for NOT/OR/parentheses, so a hostile line cannot exhaust the recursion stack."""

SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")


# --------------------------------------------------------------------------- errors


class ParseError(Exception):
    """A command the server answers with ``BAD``; ``tag`` is None when no valid tag was read (``* BAD``)."""

    def __init__(self, tag: str | None, message: str) -> None:
        super().__init__(message)
        self.tag = tag
        self.message = message


class LineTooLong(ParseError):
    """The command text (literals excluded) exceeds the framer's ``max_line``: answer BAD."""

    def __init__(self, tag: str | None) -> None:
        super().__init__(tag, "Command line too long")


class LiteralTooBig(ParseError):
    """A literal is larger than the framer accepts; the framer is reset for the next command.

    Synchronising literal (``{N}``): the client waits for ``+`` and sends nothing, so answer
    ``NO [TOOBIG]`` (APPEND, RFC 7889) or ``BAD`` and carry on. Non-synchronising (``{N+}``): the
    client does not wait, the bytes and the rest of the command are already on their way, so
    answer ``BAD [TOOBIG]`` (or ``* BYE``) and close the connection: the alternative, reading up to
    4 GB to throw away and re-framing the command's tail, is a cost an abusive client should not set.
    """

    def __init__(self, tag: str | None, size: int, synchronising: bool = True, command: str | None = None) -> None:
        super().__init__(tag, f"Literal of {size} octets is too big")
        self.size = size
        self.synchronising = synchronising
        self.command = command


class BadCharset(ParseError):
    """SEARCH CHARSET other than UTF-8/US-ASCII: answer ``NO [BADCHARSET (UTF-8 US-ASCII)]``, not BAD.

    A subclass of ParseError so a session that forgets it still answers (BAD); catch it first.
    """

    def __init__(self, tag: str | None, charset: str) -> None:
        super().__init__(tag, f"Unsupported charset {charset}")
        self.charset = charset
        self.supported = SUPPORTED_CHARSETS


# --------------------------------------------------------------------------- framing


@dataclass(frozen=True)
class NeedLiteral:
    """Read exactly ``size`` octets next; for a synchronising literal send ``+ ...`` first."""

    size: int
    synchronising: bool


@dataclass(frozen=True)
class Complete:
    """A whole command, lines and literals as on the wire, ready for :func:`parse_command`."""

    data: bytes


FramerEvent = NeedLiteral | Complete

_LITERAL_AT_END = re.compile(rb"\{([0-9]+)(\+?)\}\r\n\Z")
_QUOTES_CLOSED = re.compile(rb'[^"]*(?:"(?:[^"\\]|\\.)*"[^"]*)*', re.DOTALL)
_HEAD = re.compile(rb"([^ \r\n]+) (?:UID )?([A-Za-z]+)", re.IGNORECASE)


class CommandFramer:
    """Assembles one command from its lines and literals, enforcing size limits.

    ``max_line`` bounds the command's text outside literals (all its lines together) and
    ``max_literal`` the sum of its literals. Any error resets the framer for the next command.
    """

    def __init__(self, max_line: int = 64 * 1024, max_literal: int = 64 * 1024 * 1024) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self._reset()

    def _reset(self) -> None:
        self._parts: list[bytes] = []
        self._line_bytes = 0
        self._literal_bytes = 0
        self._awaiting: int | None = None
        self._tag: str | None = None
        self._command: str | None = None

    @property
    def in_command(self) -> bool:
        """True between the first line of a command and its completion (EOF here is a truncated command)."""
        return bool(self._parts)

    def feed_line(self, line: bytes) -> FramerEvent:
        """Take one line including its CRLF; say whether a literal follows or the command is complete."""
        if self._awaiting is not None:
            raise RuntimeError("the framer expects literal data, not a line")
        if not self._parts:
            self._tag, self._command = _tag_and_command(line)
        try:
            return self._take_line(line)
        except ParseError:
            self._reset()
            raise

    def feed_literal(self, data: bytes) -> None:
        """Take the ``size`` octets announced by the last :class:`NeedLiteral`."""
        if self._awaiting is None:
            raise RuntimeError("the framer expects a line, not literal data")
        if len(data) != self._awaiting:
            raise ValueError(f"expected {self._awaiting} literal octets, got {len(data)}")
        self._parts.append(data)
        self._awaiting = None

    def _take_line(self, line: bytes) -> FramerEvent:
        self._line_bytes += len(line)
        if self._line_bytes > self.max_line:
            raise LineTooLong(self._tag)
        if not line.endswith(b"\n"):
            raise ParseError(self._tag, "Line not terminated by CRLF")
        if not line.endswith(b"\r\n"):
            raise ParseError(self._tag, "Line terminated by a bare LF instead of CRLF")
        self._parts.append(line)
        match = _LITERAL_AT_END.search(line)
        if match is not None and _QUOTES_CLOSED.fullmatch(line, 0, match.start()):
            size, synchronising = int(match.group(1)), not match.group(2)
            if size > self.max_literal - self._literal_bytes:
                raise LiteralTooBig(self._tag, size, synchronising, self._command)
            self._literal_bytes += size
            self._awaiting = size
            return NeedLiteral(size, synchronising)
        data = b"".join(self._parts)
        self._reset()
        return Complete(data)


def _tag_and_command(line: bytes) -> tuple[str | None, str | None]:
    """The tag (if valid) and command name of a first line, for errors raised before parsing."""
    match = _HEAD.match(line)
    if match is None:
        tag = line.rstrip(b"\r\n").split(b" ", 1)[0]
        return (tag.decode("ascii"), None) if _TAG.fullmatch(tag) else (None, None)
    tag, name = match.groups()
    return (tag.decode("ascii") if _TAG.fullmatch(tag) else None), name.decode("ascii").upper()


def is_done_line(line: bytes) -> bool:
    """Whether a line read during IDLE is the ``DONE`` that ends it (case-insensitive, CRLF optional)."""
    return line.upper() in (b"DONE\r\n", b"DONE")


def decode_sasl_response(line: bytes) -> bytes | None:
    """A client line during AUTHENTICATE: the decoded response, or None when the client cancels with ``*``.

    ValueError when it is not base64: RFC 3501 section 6.2.2 wants a tagged BAD then.
    """
    line = line.removesuffix(b"\r\n")
    if line == b"*":
        return None
    try:
        return base64.b64decode(line, validate=True)
    except binascii.Error as exc:
        raise ValueError("authentication response is not valid base64") from exc


# --------------------------------------------------------------------------- lexical


def _char_class(chars: set[int]) -> bytes:
    """A regex character class matching exactly ``chars``."""
    return b"[" + b"".join(re.escape(bytes([c])) for c in sorted(chars)) + b"]"


_CTL = set(range(0x20)) | {0x7F}
_ATOM_CHARS = set(range(0x01, 0x80)) - _CTL - set(b'(){ %*"\\]')
_ASTRING_CHARS = _ATOM_CHARS | {ord("]")}

_ATOM = re.compile(_char_class(_ATOM_CHARS) + b"+")
_ASTRING_ATOM = re.compile(_char_class(_ASTRING_CHARS) + b"+")
_TAG = re.compile(_char_class(_ASTRING_CHARS - {ord("+")}) + b"+")
_LIST_ATOM = re.compile(_char_class(_ATOM_CHARS | set(b"%*]")) + b"+")
_NUMBER = re.compile(rb"[0-9]+")
_SEQUENCE = re.compile(rb"[0-9:,*]+")
_WORD = re.compile(rb"[A-Za-z0-9.]+")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_ESCAPE = re.compile(rb'\\(["\\])')
_LITERAL = re.compile(rb"\{([0-9]+)(\+?)\}\r\n")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}|=")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"( ?[0-9]|[0-9]{2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, start=1)}
"""English month names, not ``calendar.month_abbr``, which follows the process locale."""

_SYSTEM_FLAGS = {f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}
_SPECIAL_USES = {u.upper(): u for u in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")}


def _snippet(data: bytes) -> str:
    """A short printable excerpt of the offending input for the BAD text (no CR/LF, no 8-bit)."""
    data = re.split(rb"[\r\n]", data, maxsplit=1)[0]
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in data[:24])
    return text + ("..." if len(data) > 24 else "")


class _Reader:
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
        return self.fail(f"Invalid {what} near '{_snippet(self.data[self.pos :])}'")

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
            raise self.fail(f"Unexpected extra arguments near '{_snippet(rest[1:])}'")
        raise self.fail(f"Unexpected characters near '{_snippet(rest)}'")

    def sp(self, what: str) -> None:
        """Exactly one SP, then ``what`` follows."""
        if self.at_end():
            raise self.fail(f"Missing {what}")
        if self.peek() != b" ":
            raise self.fail(f"Expected a space before {what} near '{_snippet(self.data[self.pos :])}'")
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
        value = int(token)
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
        size = int(match.group(1))
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
        """A wire mailbox name (modified UTF-7) as Unicode."""
        try:
            return decode_mailbox(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise self.fail(f"Mailbox name is not valid modified UTF-7: {_snippet(raw)}") from exc

    def mailbox(self) -> str:
        """``mailbox``: an astring in modified UTF-7; INBOX in any case is "INBOX"."""
        name = self.mailbox_text(self.astring("mailbox name"))
        return "INBOX" if name.upper() == "INBOX" else name

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


# --------------------------------------------------------------------------- commands


def parse_command(data: bytes) -> Command:
    """Parse one complete command (as returned by :class:`CommandFramer`; the final CRLF is optional)."""
    reader = _Reader(data)
    if reader.at_end():
        raise ParseError(None, "Empty command line")
    tag = reader.take(_TAG)
    if tag is None or (reader.peek() != b" " and not reader.at_end()):
        raise ParseError(None, "Invalid tag")
    reader.tag = tag.decode("ascii")
    if data.endswith(b"\n") and not data.endswith(b"\r\n"):
        raise reader.fail("Line terminated by a bare LF instead of CRLF")
    reader.sp("command name")
    name = reader.keyword("command name")
    uid = name == "UID"
    if uid:
        reader.sp("command after UID")
        name = reader.keyword("command after UID")
        if name not in _UID_COMMANDS:
            raise reader.fail(f"UID {name} is not a UID command")
    handler = _COMMANDS.get(name)
    if handler is None:
        raise reader.fail(f"Unknown command {name}")
    command = handler(reader, reader.tag, uid)
    reader.end()
    return command


def _bare(cls: Callable[[str], Command]) -> Callable[[_Reader, str, bool], Command]:
    """A handler for a command without arguments."""
    return lambda _reader, tag, _uid: cls(tag)


def _authenticate(r: _Reader, tag: str, _uid: bool) -> Command:
    r.sp("authentication mechanism")
    mechanism = r.keyword("authentication mechanism")
    if not r.optional_sp():
        return Authenticate(tag, mechanism)
    token = r.take(_BASE64)
    if token is None:
        raise r.expected("initial response")
    if token == b"=":
        return Authenticate(tag, mechanism, b"")
    try:
        return Authenticate(tag, mechanism, base64.b64decode(token, validate=True))
    except binascii.Error:
        raise r.fail("Initial response is not valid base64") from None


def _login(r: _Reader, tag: str, _uid: bool) -> Command:
    r.sp("user name")
    username = r.text("user name")
    r.sp("password")
    return Login(tag, username, r.text("password"))


def _id(r: _Reader, tag: str, _uid: bool) -> Command:
    r.sp("ID parameters")
    if r.nil():
        return Id(tag, None)

    def pair() -> tuple[str, str | None]:
        key = r.utf8(r.string("ID field name"), "ID field name")
        r.sp("ID field value")
        value = r.nstring("ID field value")
        return key, None if value is None else r.utf8(value, "ID field value")

    return Id(tag, tuple(r.items(pair, "ID parameter", allow_empty=True)))


def _enable(r: _Reader, tag: str, _uid: bool) -> Command:
    r.sp("capability")
    capabilities = [r.keyword("capability")]
    while r.optional_sp():
        capabilities.append(r.keyword("capability"))
    return Enable(tag, tuple(capabilities))


def _select(cls: type[Select]) -> Callable[[_Reader, str, bool], Command]:
    """SELECT and EXAMINE: mailbox then the RFC 4466 select-params, of which only CONDSTORE exists here."""

    def handler(r: _Reader, tag: str, _uid: bool) -> Command:
        r.sp("mailbox name")
        mailbox = r.mailbox()
        if not r.optional_sp():
            return cls(tag, mailbox)
        for param in r.items(lambda: r.keyword("select parameter"), "select parameter"):
            if param != "CONDSTORE":
                raise r.fail(f"Unsupported {cls.name} parameter {param}")
        return cls(tag, mailbox, condstore=True)

    return handler


def _create(r: _Reader, tag: str, _uid: bool) -> Command:
    r.sp("mailbox name")
    mailbox = r.mailbox()
    uses: list[str] = []
    if r.optional_sp():
        for attrs in r.items(lambda: _create_param(r), "create parameter"):
            uses.extend(attrs)
    return Create(tag, mailbox, tuple(uses))


def _create_param(r: _Reader) -> list[str]:
    """``USE (attr...)`` (RFC 6154), the only create-param supported."""
    param = r.keyword("create parameter")
    if param != "USE":
        raise r.fail(f"Unsupported CREATE parameter {param}")
    r.sp("special-use attributes")
    return r.items(lambda: _use_attr(r), "special-use attribute", allow_empty=True)


def _use_attr(r: _Reader) -> str:
    """``use-attr``: a known attribute in canonical spelling, or an extension ``\\Name`` kept as sent."""
    r.expect(b"\\", "special-use attribute")
    attr = "\\" + r.atom("special-use attribute")
    return _SPECIAL_USES.get(attr.upper(), attr)


def _one_mailbox(cls: Callable[[str, str], Command]) -> Callable[[_Reader, str, bool], Command]:
    """DELETE, SUBSCRIBE, UNSUBSCRIBE: a single mailbox argument."""

    def handler(r: _Reader, tag: str, _uid: bool) -> Command:
        r.sp("mailbox name")
        return cls(tag, r.mailbox())

    return handler


def _rename(r: _Reader, tag: str, _uid: bool) -> Command:
    r.sp("mailbox name")
    old = r.mailbox()
    r.sp("new mailbox name")
    return Rename(tag, old, r.mailbox())


_LIST_SELECTION = {"SPECIAL-USE"}
_LIST_RETURN = {"SPECIAL-USE", "CHILDREN"}


def _list(r: _Reader, tag: str, _uid: bool) -> Command:
    r.sp("reference name")
    selection: set[str] = set()
    extended = r.peek() == b"("
    if extended:
        selection.update(_options(r, "LIST selection option", _LIST_SELECTION))
        r.sp("reference name")
    reference = r.mailbox_text(r.astring("reference name"))
    r.sp("mailbox pattern")
    if r.peek() == b"(":
        extended = True
        patterns = tuple(r.items(r.list_mailbox, "mailbox pattern"))
    else:
        patterns = (r.list_mailbox(),)
    returns: set[str] = set()
    if r.optional_sp():
        if r.keyword("RETURN") != "RETURN":
            raise r.fail("Expected RETURN options after the LIST pattern")
        r.sp("LIST return options")
        returns.update(_options(r, "LIST return option", _LIST_RETURN))
        extended = True
    return List(tag, reference, patterns, frozenset(selection), frozenset(returns), extended)


def _options(r: _Reader, what: str, known: set[str]) -> list[str]:
    """A possibly empty list of option keywords, each one of ``known``."""
    options = r.items(lambda: r.keyword(what), what, allow_empty=True)
    for option in options:
        if option not in known:
            raise r.fail(f"Unsupported {what} {option}")
    return options


def _lsub(r: _Reader, tag: str, _uid: bool) -> Command:
    r.sp("reference name")
    reference = r.mailbox_text(r.astring("reference name"))
    r.sp("mailbox pattern")
    return Lsub(tag, reference, r.list_mailbox())


_STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE", "APPENDLIMIT"}


def _status(r: _Reader, tag: str, _uid: bool) -> Command:
    r.sp("mailbox name")
    mailbox = r.mailbox()
    r.sp("status items")
    items = r.items(lambda: r.keyword("status item"), "status item")
    for item in items:
        if item not in _STATUS_ITEMS:
            raise r.fail(f"Unknown status item {item}")
    return Status(tag, mailbox, tuple(items))


def _append(r: _Reader, tag: str, _uid: bool) -> Command:
    r.sp("mailbox name")
    mailbox = r.mailbox()
    r.sp("message literal")
    flags: tuple[str, ...] = ()
    internal_date = None
    if r.peek() == b"(":
        flags = r.flag_list()
        r.sp("message literal")
    if r.peek() == b'"':
        internal_date = r.date_time()
        r.sp("message literal")
    if r.peek() == b"~":
        raise r.fail("literal8 is not supported (no BINARY extension)")
    if r.peek() != b"{":
        raise r.expected("message literal")
    return Append(tag, mailbox, r.literal(), flags, internal_date)


def _expunge(r: _Reader, tag: str, uid: bool) -> Command:
    if not uid:
        return Expunge(tag)
    r.sp("UID set")
    return Expunge(tag, uid=True, sequence_set=r.sequence_set())


def _copy_or_move(cls: type[Copy] | type[Move]) -> Callable[[_Reader, str, bool], Command]:
    """COPY and MOVE: sequence set then destination mailbox."""

    def handler(r: _Reader, tag: str, uid: bool) -> Command:
        r.sp("sequence set")
        sequence_set = r.sequence_set()
        r.sp("mailbox name")
        return cls(tag, sequence_set, r.mailbox(), uid=uid)

    return handler


# -- FETCH

_FETCH_ATTRIBUTES = {
    "ENVELOPE",
    "FLAGS",
    "INTERNALDATE",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.SIZE",
    "RFC822.TEXT",
    "BODY",
    "BODYSTRUCTURE",
    "UID",
    "MODSEQ",
}
_FETCH_MACROS = {
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SECTION_TEXTS = {"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"}
_SECTION_WORD = re.compile(rb"[A-Za-z.]+")


def _fetch(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp("sequence set")
    sequence_set = r.sequence_set()
    r.sp("fetch items")
    items = _fetch_items(r)
    changed_since = None
    if r.optional_sp():
        changed_since = _modifiers(r, "CHANGEDSINCE", "FETCH")
    return Fetch(tag, sequence_set, items, uid=uid, changed_since=changed_since)


def _modifiers(r: _Reader, name: str, command: str) -> int:
    """``(NAME mod-sequence)``, the one FETCH/STORE modifier supported (RFC 7162); 0 is allowed (valzer)."""

    def modifier() -> int:
        found = r.keyword(f"{command} modifier")
        if found != name:
            raise r.fail(f"Unsupported {command} modifier {found}")
        r.sp("mod-sequence")
        return r.number("mod-sequence", maximum=MAX_MODSEQ)

    values = r.items(modifier, f"{command} modifier")
    if len(values) > 1:
        raise r.fail(f"Repeated {command} modifier {name}")
    return values[0]


def _fetch_items(r: _Reader) -> tuple[FetchItem, ...]:
    """A macro (expanded), one attribute, or a parenthesised list of attributes (macros not allowed)."""
    if r.peek() == b"(":
        return tuple(r.items(lambda: _fetch_attribute(r), "fetch attribute"))
    start = r.pos
    word = (r.take(_WORD) or b"").decode("ascii").upper()
    if word in _FETCH_MACROS and r.peek() != b"[":
        return tuple(FetchAttribute(name) for name in _FETCH_MACROS[word])
    r.pos = start
    return (_fetch_attribute(r),)


def _fetch_attribute(r: _Reader) -> FetchItem:
    """``fetch-att``."""
    token = r.take(_WORD)
    if token is None:
        raise r.expected("fetch attribute")
    name = token.decode("ascii").upper()
    if name in ("BODY", "BODY.PEEK") and r.peek() == b"[":
        return _body_section(r, peek=name == "BODY.PEEK")
    if name not in _FETCH_ATTRIBUTES:
        raise r.fail(f"Unknown fetch attribute {name}")
    return FetchAttribute(name)


def _body_section(r: _Reader, *, peek: bool) -> BodySection:
    """``section ["<" number "." nz-number ">"]`` after BODY or BODY.PEEK."""
    r.expect(b"[", "section")
    parts: list[int] = []
    text = None
    fields: tuple[str, ...] = ()
    if r.peek().isdigit():
        while True:
            parts.append(r.number("section part", nonzero=True))
            if r.peek() != b".":
                break
            r.pos += 1
            if not r.peek().isdigit():
                text = _section_text(r, after_part=True)
                break
    elif r.peek() != b"]":
        text = _section_text(r, after_part=False)
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        r.sp("header field names")
        fields = tuple(r.items(lambda: r.utf8(r.astring("header field name"), "header field name"), "header field"))
    r.expect(b"]", "']' closing the section")
    partial = None
    if r.peek() == b"<":
        r.pos += 1
        origin = r.number("partial origin")
        r.expect(b".", "'.' in partial range")
        count = r.number("partial length", nonzero=True)
        r.expect(b">", "'>' closing partial range")
        partial = (origin, count)
    return BodySection(peek, tuple(parts), text, fields, partial)


def _section_text(r: _Reader, *, after_part: bool) -> str:
    """HEADER, HEADER.FIELDS[.NOT], TEXT, or MIME (only after a part number)."""
    token = r.take(_SECTION_WORD)
    word = (token or b"").decode("ascii").upper()
    if word in _SECTION_TEXTS or (word == "MIME" and after_part):
        return word
    raise r.fail(f"Invalid section {word or _snippet(r.data[r.pos :])}")


# -- STORE


def _store(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp("sequence set")
    sequence_set = r.sequence_set()
    r.sp("store item")
    unchanged_since = None
    if r.peek() == b"(":
        unchanged_since = _modifiers(r, "UNCHANGEDSINCE", "STORE")
        r.sp("store item")
    mode = StoreMode(r.peek().decode("ascii")) if r.peek() in (b"+", b"-") else StoreMode.REPLACE
    r.pos += len(mode.value)
    item = (r.take(_WORD) or b"").decode("ascii").upper()
    if item not in ("FLAGS", "FLAGS.SILENT"):
        raise r.fail(f"Unknown store item {mode.value}{item}")
    r.sp("flags")
    if r.peek() == b"(":
        flags = r.flag_list()
    else:
        found = [r.flag()]
        while r.optional_sp():
            found.append(r.flag())
        flags = tuple(found)
    return Store(tag, sequence_set, mode, flags, item == "FLAGS.SILENT", uid, unchanged_since)


# -- SEARCH


def _search(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp("search criteria")
    charset = None
    if r.peek_word("CHARSET"):
        r.keyword("CHARSET")
        r.sp("charset")
        charset = _snippet(r.astring("charset")).upper()
        if charset not in SUPPORTED_CHARSETS:
            raise BadCharset(tag, charset)
        r.sp("search criteria")
    keys = [_search_key(r, 0)]
    while r.optional_sp():
        keys.append(_search_key(r, 0))
    return Search(tag, keys[0] if len(keys) == 1 else And(tuple(keys)), charset, uid)


_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "RECENT": ("\\Recent", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
    "OLD": ("\\Recent", False),
}
_DATE_KEYS = {
    "BEFORE": (DateRelation.BEFORE, False),
    "ON": (DateRelation.ON, False),
    "SINCE": (DateRelation.SINCE, False),
    "SENTBEFORE": (DateRelation.BEFORE, True),
    "SENTON": (DateRelation.ON, True),
    "SENTSINCE": (DateRelation.SINCE, True),
}
_HEADER_KEYS = {"BCC", "CC", "FROM", "SUBJECT", "TO"}


def _search_key(r: _Reader, depth: int) -> SearchKey:
    """``search-key`` (RFC 3501 section 6.4.4, plus MODSEQ from RFC 7162)."""
    if depth > MAX_SEARCH_DEPTH:
        raise r.fail("Search criteria nested too deeply")
    first = r.peek()
    if first == b"(":
        keys = r.items(lambda: _search_key(r, depth + 1), "search key")
        return keys[0] if len(keys) == 1 else And(tuple(keys))
    if first.isdigit() or first == b"*":
        return SequenceKey(False, r.sequence_set())
    name = r.keyword("search key")
    if name == "ALL":
        return AllKey()
    if name in _FLAG_KEYS:
        return FlagKey(*_FLAG_KEYS[name])
    if name == "NEW":
        return And((FlagKey("\\Recent", True), FlagKey("\\Seen", False)))
    parse_argument = _SEARCH_ARGUMENT_KEYS.get(name)
    if parse_argument is None:
        raise r.fail(f"Unknown search key {name}")
    r.sp(f"argument of {name}")
    return parse_argument(r, name, depth)


def _header_key(r: _Reader, name: str, _depth: int) -> SearchKey:
    if name != "HEADER":
        return HeaderContains(name.lower(), r.text("search string"))
    field = r.text("header field name").lower()
    r.sp("search string")
    return HeaderContains(field, r.text("search string"))


def _text_key(r: _Reader, name: str, _depth: int) -> SearchKey:
    return TextContains(r.text("search string"), body_only=name == "BODY")


def _date_key(r: _Reader, name: str, _depth: int) -> SearchKey:
    kind, sent = _DATE_KEYS[name]
    return DateKey(kind, r.date(), sent)


def _keyword_key(r: _Reader, name: str, _depth: int) -> SearchKey:
    return FlagKey(r.atom("keyword"), present=name == "KEYWORD")


def _size_key(r: _Reader, name: str, _depth: int) -> SearchKey:
    return SizeKey(larger=name == "LARGER", size=r.number("size"))


def _uid_key(r: _Reader, _name: str, _depth: int) -> SearchKey:
    return SequenceKey(True, r.sequence_set())


def _not_key(r: _Reader, _name: str, depth: int) -> SearchKey:
    return Not(_search_key(r, depth + 1))


def _or_key(r: _Reader, _name: str, depth: int) -> SearchKey:
    left = _search_key(r, depth + 1)
    r.sp("second key of OR")
    return Or(left, _search_key(r, depth + 1))


def _modseq_key(r: _Reader, _name: str, _depth: int) -> SearchKey:
    """``MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer``; the entry is checked, then dropped."""
    if r.peek() == b'"':
        if not r.quoted().lower().startswith(b"/flags/"):
            raise r.fail("MODSEQ entry name must be /flags/<flag>")
        r.sp("MODSEQ entry type")
        if r.keyword("MODSEQ entry type") not in ("PRIV", "SHARED", "ALL"):
            raise r.fail("MODSEQ entry type must be priv, shared or all")
        r.sp("mod-sequence")
    return ModSeqKey(r.number("mod-sequence", maximum=MAX_MODSEQ))


_SEARCH_ARGUMENT_KEYS: dict[str, Callable[[_Reader, str, int], SearchKey]] = {
    **dict.fromkeys((*_HEADER_KEYS, "HEADER"), _header_key),
    **dict.fromkeys(("BODY", "TEXT"), _text_key),
    **dict.fromkeys(_DATE_KEYS, _date_key),
    **dict.fromkeys(("KEYWORD", "UNKEYWORD"), _keyword_key),
    **dict.fromkeys(("LARGER", "SMALLER"), _size_key),
    "UID": _uid_key,
    "NOT": _not_key,
    "OR": _or_key,
    "MODSEQ": _modseq_key,
}

_COMMANDS: dict[str, Callable[[_Reader, str, bool], Command]] = {
    "CAPABILITY": _bare(Capability),
    "NOOP": _bare(Noop),
    "LOGOUT": _bare(Logout),
    "STARTTLS": _bare(StartTLS),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "ID": _id,
    "ENABLE": _enable,
    "SELECT": _select(Select),
    "EXAMINE": _select(Examine),
    "CREATE": _create,
    "DELETE": _one_mailbox(Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(Subscribe),
    "UNSUBSCRIBE": _one_mailbox(Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "NAMESPACE": _bare(Namespace),
    "STATUS": _status,
    "APPEND": _append,
    "CHECK": _bare(Check),
    "CLOSE": _bare(Close),
    "UNSELECT": _bare(Unselect),
    "EXPUNGE": _expunge,
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy_or_move(Copy),
    "MOVE": _copy_or_move(Move),
    "IDLE": _bare(Idle),
}
_UID_COMMANDS = {"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE"}
