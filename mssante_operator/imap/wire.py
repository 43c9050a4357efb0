"""IMAP response encoding (RFC 3501 sections 4 and 9): Python values to response syntax.

:func:`encode` maps ``None`` to ``NIL``, an ``int`` to a number, a ``str`` or ``bytes`` to a quoted
string when that is safe (7-bit, no CR, LF or NUL, short) and to a literal otherwise, a list or tuple
to a parenthesised list of its elements separated by single spaces. Wrappers say what plain values
cannot: :class:`Atom` is written as is (flags, ``NIL`` on purpose, response keywords), :class:`Literal`
forces a literal, and two containers write their elements back to back, as the grammar wants for
``1*body`` in a multipart BODYSTRUCTURE and ``1*address`` in an ENVELOPE:
:class:`Packed` (parenthesised) and :class:`Concat` (no parentheses).

The string ``"NIL"`` is a string: it is quoted, never confused with the NIL atom.

``str`` is written in UTF-8; surrogate escapes (from bytes decoded with ``surrogateescape``, as
:mod:`mssante_operator.imap.message` does for header values) are written back as the original
bytes, so a header with 8-bit junk reaches the client byte for byte. NUL bytes are not allowed in
IMAP4rev1 literals either: callers that send stored content must deal with them first.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# A quoted string holds TEXT-CHARs (7-bit, no CR, LF or NUL); longer strings go as literals.
_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
_MAX_QUOTED = 1024
_ATOM_TEXT = re.compile(r"[\x20-\x7e]+")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Atom(str):
    """Text written without quotes: a flag (``\\Seen``), a keyword, ``NIL`` when meant as NIL.

    Printable US-ASCII (spaces allowed, for keys such as ``BODY[HEADER.FIELDS (FROM)]``); CR, LF, NUL
    and 8-bit characters are refused, so an atom can never break the response line.
    """

    __slots__ = ()

    def __new__(cls, text: str) -> Atom:
        if not _ATOM_TEXT.fullmatch(text):
            raise ValueError(f"not atom text: {text!r}")
        return super().__new__(cls, text)


class Literal(bytes):
    """Bytes always written as a literal ``{N}\\r\\n...`` (a ``str`` is taken as UTF-8)."""

    __slots__ = ()

    def __new__(cls, data: bytes | bytearray | memoryview | str) -> Literal:
        if isinstance(data, str):
            data = _as_bytes(data)
        return super().__new__(cls, data)


class Packed(list):
    """A parenthesised list written without separators: ``((...)(...))``, RFC 3501 ``1*address``."""

    __slots__ = ()


class Concat(tuple):
    """Elements written back to back, no parentheses, no separators: ``(...)(...)``, ``1*body``."""

    __slots__ = ()


def _as_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        return text.encode("utf-8", "replace")


def quoted(text: str | bytes) -> bytes:
    """``text`` as an IMAP quoted string, ``\\`` and ``"`` escaped; ValueError if it cannot be quoted."""
    data = _as_bytes(text) if isinstance(text, str) else bytes(text)
    if not _QUOTABLE.fullmatch(data):
        raise ValueError("8-bit, CR, LF or NUL characters cannot be in a quoted string")
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(data: bytes) -> bytes:
    """``data`` as an IMAP literal: ``{N}\\r\\n`` and the bytes."""
    return b"{%d}\r\n" % len(data) + bytes(data)


def _string(data: bytes) -> bytes:
    if len(data) <= _MAX_QUOTED and _QUOTABLE.fullmatch(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data)


def _encode_into(value: object, out: list[bytes]) -> None:
    # Order matters: Atom is a str, Literal is bytes, bool is an int, Packed is a list, Concat a tuple.
    if value is None:
        out.append(b"NIL")
    elif isinstance(value, Atom):
        out.append(value.encode("ascii"))
    elif isinstance(value, Literal):
        out.append(literal(value))
    elif isinstance(value, str):
        out.append(_string(_as_bytes(value)))
    elif isinstance(value, bytes | bytearray | memoryview):
        out.append(_string(bytes(value)))
    elif isinstance(value, bool):
        raise TypeError("a bool has no IMAP form")
    elif isinstance(value, int):
        if value < 0:
            raise ValueError("IMAP numbers are unsigned")
        out.append(b"%d" % value)
    elif isinstance(value, Concat):
        for item in value:
            _encode_into(item, out)
    elif isinstance(value, Packed):
        out.append(b"(")
        for item in value:
            _encode_into(item, out)
        out.append(b")")
    elif isinstance(value, list | tuple):
        out.append(b"(")
        for index, item in enumerate(value):
            if index:
                out.append(b" ")
            _encode_into(item, out)
        out.append(b")")
    else:
        raise TypeError(f"no IMAP form for {type(value).__name__}")


def encode(value: object) -> bytes:
    """The IMAP response syntax of ``value`` (see the module docstring for the mapping)."""
    out: list[bytes] = []
    _encode_into(value, out)
    return b"".join(out)


def format_internaldate(when: datetime) -> str:
    """``when`` as an RFC 3501 date-time, without the quotes: ``" 7-Jul-1996 02:44:25 -0700"``.

    The day is two characters, space-padded (``date-day-fixed``); months are English whatever the
    locale. A naive datetime is taken as UTC.
    """
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset()
    seconds = offset.total_seconds() if offset is not None else 0.0
    sign = "-" if seconds < 0 else "+"
    hours, minutes = divmod(int(abs(seconds) // 60), 60)
    return (
        f"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {sign}{hours:02d}{minutes:02d}"
    )
