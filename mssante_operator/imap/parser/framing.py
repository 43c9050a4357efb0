"""Framing: lines and literals (synchronising or LITERAL+) into complete command bytes.

The network layer reads a line, asks the framer whether a literal follows, reads it, and goes on
until the framer returns the command exactly as sent; sizes are checked before anything is read.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from .errors import LineTooLong, LiteralTooBig, ParseError
from .lexer import TAG, bounded_number


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
            # Sizes past 2**64 are all reported as 2**64 + 1: they only ever mean "too big".
            size, synchronising = bounded_number(match.group(1), 2**64), not match.group(2)
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
        return (tag.decode("ascii"), None) if TAG.fullmatch(tag) else (None, None)
    tag, name = match.groups()
    return (tag.decode("ascii") if TAG.fullmatch(tag) else None), name.decode("ascii").upper()


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
