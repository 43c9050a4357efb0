"""FETCH items (attributes, macros, BODY[section]<partial>, CONDSTORE modifiers) and STORE."""

from __future__ import annotations

import re

from ..commands import (
    BodySection,
    Command,
    Fetch,
    FetchAttribute,
    FetchItem,
    Store,
    StoreMode,
)
from .lexer import MAX_MODSEQ, WORD, Reader, snippet

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
    "EMAILID",  # RFC 8474
    "THREADID",
    "SAVEDATE",  # RFC 8514
}
_FETCH_MACROS = {
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SECTION_TEXTS = {"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"}
_SECTION_WORD = re.compile(rb"[A-Za-z.]+")


def parse_fetch(r: Reader, tag: str, uid: bool) -> Command:
    r.sp("sequence set")
    sequence_set = r.sequence_set()
    r.sp("fetch items")
    items = _fetch_items(r)
    changed_since = None
    if r.optional_sp():
        changed_since = _modifiers(r, "CHANGEDSINCE", "FETCH")
    return Fetch(tag, sequence_set, items, uid=uid, changed_since=changed_since)


def _modifiers(r: Reader, name: str, command: str) -> int:
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


def _fetch_items(r: Reader) -> tuple[FetchItem, ...]:
    """A macro (expanded), one attribute, or a parenthesised list of attributes (macros not allowed)."""
    if r.peek() == b"(":
        return tuple(r.items(lambda: _fetch_attribute(r), "fetch attribute"))
    start = r.pos
    word = (r.take(WORD) or b"").decode("ascii").upper()
    if word in _FETCH_MACROS and r.peek() != b"[":
        return tuple(FetchAttribute(name) for name in _FETCH_MACROS[word])
    r.pos = start
    return (_fetch_attribute(r),)


def _fetch_attribute(r: Reader) -> FetchItem:
    """``fetch-att``."""
    token = r.take(WORD)
    if token is None:
        raise r.expected("fetch attribute")
    name = token.decode("ascii").upper()
    if name in ("BODY", "BODY.PEEK") and r.peek() == b"[":
        return _body_section(r, peek=name == "BODY.PEEK")
    if name not in _FETCH_ATTRIBUTES:
        raise r.fail(f"Unknown fetch attribute {name}")
    return FetchAttribute(name)


def _body_section(r: Reader, *, peek: bool) -> BodySection:
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


def _section_text(r: Reader, *, after_part: bool) -> str:
    """HEADER, HEADER.FIELDS[.NOT], TEXT, or MIME (only after a part number)."""
    token = r.take(_SECTION_WORD)
    word = (token or b"").decode("ascii").upper()
    if word in _SECTION_TEXTS or (word == "MIME" and after_part):
        return word
    raise r.fail(f"Invalid section {word or snippet(r.data[r.pos :])}")


# -- STORE


def parse_store(r: Reader, tag: str, uid: bool) -> Command:
    r.sp("sequence set")
    sequence_set = r.sequence_set()
    r.sp("store item")
    unchanged_since = None
    if r.peek() == b"(":
        unchanged_since = _modifiers(r, "UNCHANGEDSINCE", "STORE")
        r.sp("store item")
    mode = StoreMode(r.peek().decode("ascii")) if r.peek() in (b"+", b"-") else StoreMode.REPLACE
    r.pos += len(mode.value)
    item = (r.take(WORD) or b"").decode("ascii").upper()
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
