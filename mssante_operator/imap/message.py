"""What IMAP FETCH returns about a stored message: ENVELOPE, BODY/BODYSTRUCTURE and BODY[section].

A :class:`MessageStructure` is parsed once from the raw RFC 5322 bytes. The MIME tree is found with
offsets into those bytes (never by re-serialising a parsed message), so every section is returned
byte for byte as stored, and sizes and line counts are those of the stored bytes. Bodies are never
decoded to compute the structure: the only work proportional to the message size is a C-level
search for the boundary lines and a count of line feeds.

Parsing follows RFC 2045/2046 and behaves like Dovecot on malformed input, because clients and
compliance suites expect what the common servers do:

* The header ends at the first empty line (CRLF or bare LF). Without one, the whole part is header
  and its body is empty.
* A boundary line is ``--`` + boundary at the start of a line; as RFC 2046 5.1.2 says, the rest of
  the line does not have to match (``--b--`` closes). Boundaries of all enclosing multiparts are
  recognised, the longest match wins, so an outer boundary ends the inner parts it interrupts. The
  line break before a boundary line belongs to the boundary, not to the part (but a close-delimiter
  line keeps its own line end, even when another boundary line follows at once).
* A missing close-delimiter ends the part at the end of the enclosing part (or of the message); a
  multipart without a boundary parameter, or whose boundary never appears, has no parts (its
  BODYSTRUCTURE shows one empty text/plain part, as the grammar needs at least one).
* Nesting is limited to :data:`MAX_DEPTH` levels and a message to :data:`MAX_PARTS` parts; past
  them, a multipart or message/rfc822 part is kept whole, as application/octet-stream (so is one
  whose header a boundary line cuts short). Nothing here raises on any input.

Choices where RFC 3501 leaves room (documented because a compliance suite may look at them):

* BODYSTRUCTURE types, subtypes, parameter names, encodings and disposition types are upper-cased
  quoted strings, as in the RFC 3501 examples (``"TEXT" "PLAIN" ("CHARSET" "us-ascii")``); parameter
  values are as sent. A text part without a charset gets ``("CHARSET" "US-ASCII")`` (RFC 2046 4.1.2),
  a part without a Content-Type is ``text/plain`` (``message/rfc822`` in a multipart/digest, RFC 2046
  5.1.5), and so is one with an unparseable Content-Type (RFC 2045 5.2).
* RFC 2231 parameter continuations are merged, not decoded: ``name*0="a"; name*1="b"`` becomes
  ``("NAME" "ab")`` and ``name*0*=utf-8''%C3; name*1*=%A9`` becomes ``("NAME*" "utf-8''%C3%A9")``,
  leaving the charset decoding to the client (Dovecot does the same). Incomplete sequences are kept
  as sent.
* The md5 extension field is the Content-MD5 header when there is one (else NIL); the language is
  always a list when present; location and the other fields are the unfolded header values.
* ENVELOPE strings are the unfolded header values, not decoded (RFC 3501: encoded-words are returned
  as they are); 8-bit bytes are kept (surrogate-escaped in the Python strings, written back as the
  same bytes by :mod:`.wire`). When a header appears twice, the first one counts. Address names come
  from the phrase, or from the comment of an ``addr-spec (Name)``; a missing mailbox or domain is
  ``MISSING_MAILBOX`` / ``MISSING_DOMAIN`` (a NIL host would mean a group marker); quoted local parts
  are unquoted; routes are ``@a,@b``.
* Line counts are the number of line feeds in the body (Dovecot's count).
* Section numbering is RFC 3501 6.4.5's, with Dovecot's reading for the corner cases: part 1 of a
  non-multipart message is its body, ``1.MIME`` is then the message header; ``n.HEADER``/``n.TEXT``
  only exist when part n is message/rfc822 (an empty string otherwise).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable
from functools import lru_cache

from .wire import Concat, Packed

log = logging.getLogger(__name__)

MAX_DEPTH = 50
MAX_PARTS = 5000

_BLANK_LINE = re.compile(rb"\n\r?\n")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_RFC2231_NAME = re.compile(r"([^*]+)\*(?:(\d+)(\*)?)?")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")

MISSING_MAILBOX = "MISSING_MAILBOX"
MISSING_DOMAIN = "MISSING_DOMAIN"


# --- header fields ------------------------------------------------------------------------------


class _Field:
    """One header field as stored: its lower-cased name and all its lines with their line ends."""

    __slots__ = ("name", "raw", "value_at")

    def __init__(self, name: str, raw: bytes, value_at: int) -> None:
        self.name = name  # "" for a line without a colon
        self.raw = raw
        self.value_at = value_at  # index of the value in raw (just after the colon)

    def value(self) -> bytes:
        """The value unfolded (CRLF before WSP removed), trimmed, without stray CR, LF or NUL."""
        value = _FOLD.sub(b"", self.raw[self.value_at :]).strip(b" \t\r\n")
        if b"\r" in value or b"\n" in value or b"\0" in value:
            value = value.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"")
        return value

    def text(self) -> str:
        """The value as a str, 8-bit bytes kept as surrogate escapes (written back as is by wire)."""
        return self.value().decode("utf-8", "surrogateescape")


def _split_fields(block: bytes) -> list[_Field]:
    """The fields of a header block (which may end with the blank line); never raises."""
    pieces = block.split(b"\n")
    tail = pieces.pop()
    lines = [piece + b"\n" for piece in pieces]
    if tail:
        lines.append(tail)
    fields: list[_Field] = []
    current: list[bytes] = []
    for line in lines:
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and current:
            current.append(line)
            continue
        if current:
            fields.append(_make_field(current))
        current = [line]
    if current:
        fields.append(_make_field(current))
    return fields


def _make_field(lines: list[bytes]) -> _Field:
    raw = b"".join(lines) if len(lines) > 1 else lines[0]
    colon = lines[0].find(b":")
    if colon < 0:
        return _Field("", raw, len(raw))
    return _Field(lines[0][:colon].strip().decode("latin-1").lower(), raw, colon + 1)


def _first(fields: list[_Field], name: str) -> _Field | None:
    for field in fields:
        if field.name == name:
            return field
    return None


# --- MIME header values (RFC 2045, 2183, 2231) -----------------------------------------------------


def _skip_comment(text: str, start: int) -> int:
    """Index just after the (possibly nested) comment opening at ``start``."""
    depth, index, size = 0, start, len(text)
    while index < size:
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return size


def _unquote(text: str) -> str:
    """The content of the quoted string ``text`` starts with; what follows its closing quote is dropped."""
    out: list[str] = []
    index, size = 1, len(text)
    while index < size:
        char = text[index]
        if char == "\\" and index + 1 < size:
            out.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            break
        out.append(char)
        index += 1
    return "".join(out)


def _split_params(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``'value; a=b; c="d;e" (comment)'`` -> ``('value', [('a', 'b'), ('c', 'd;e')])``."""
    if '"' not in text and "(" not in text:
        segments = text.split(";")
    else:
        segments, current, index, size = [], [], 0, len(text)
        while index < size:
            char = text[index]
            if char == '"':
                end = index + 1
                while end < size and text[end] != '"':
                    end += 2 if text[end] == "\\" else 1
                current.append(text[index : end + 1])
                index = end + 1
            elif char == "(":
                current.append(" ")
                index = _skip_comment(text, index)
            elif char == ";":
                segments.append("".join(current))
                current = []
                index += 1
            else:
                current.append(char)
                index += 1
        segments.append("".join(current))
    params: list[tuple[str, str]] = []
    for segment in segments[1:]:
        name, equals, value = segment.partition("=")
        name = name.strip()
        if not equals or not name:
            continue
        value = value.strip()
        params.append((name, _unquote(value) if value.startswith('"') else value))
    return segments[0].strip(), _merge_rfc2231(params)


def _merge_rfc2231(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Join RFC 2231 continuations (``name*0``, ``name*1*``...) into one ``name`` or ``name*``."""
    if not any("*" in name for name, _ in params):
        return params
    plain: list[tuple[str, str]] = []
    sections: dict[str, list[tuple[int, bool, str, str]]] = {}
    bases: dict[str, str] = {}
    for name, value in params:
        match = _RFC2231_NAME.fullmatch(name)
        if match is None:
            plain.append((name, value))
            continue
        base, number, star = match.groups()
        extended = number is None or star is not None
        key = base.lower()
        bases.setdefault(key, base)
        sections.setdefault(key, []).append((int(number or 0), extended, value, name))
    merged: list[tuple[str, str]] = []
    for key, items in sections.items():
        items.sort(key=lambda item: item[0])
        if [item[0] for item in items] != list(range(len(items))):
            merged.extend((item[3], item[2]) for item in items)  # incomplete: kept as sent
            continue
        any_extended = any(item[1] for item in items)
        value = "''" if any_extended and not items[0][1] else ""
        for _, extended, text, _ in items:
            value += text.replace("%", "%25") if any_extended and not extended else text
        merged.append((bases[key] + ("*" if any_extended else ""), value))
    return plain + merged


def _param(params: list[tuple[str, str]], name: str) -> str | None:
    for key, value in params:
        if key.lower() == name:
            return value
    return None


def _encoding(fields: list[_Field]) -> str:
    """The Content-Transfer-Encoding token, "" when absent or not a token (Dovecot then says 7bit)."""
    field = _first(fields, "content-transfer-encoding")
    if field is None:
        return ""
    token = _TOKEN.match(_strip_comments(field.text()).strip())
    return token.group() if token is not None else ""


def _strip_comments(text: str) -> str:
    if "(" not in text:
        return text
    out, index = [], 0
    while index < len(text):
        if text[index] == "(":
            out.append(" ")
            index = _skip_comment(text, index)
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


# --- the MIME tree ---------------------------------------------------------------------------------


class _Part:
    """A MIME entity in the raw message: a message (the root, or the inside of a message/rfc822 part)
    or a body part of a multipart. Its header is ``raw[start:body_start]`` (blank line included when
    there is one), its body ``raw[body_start:end]``."""

    __slots__ = (
        "blank", "body_start", "children", "end", "fields", "maintype", "message", "opaque", "params",
        "start", "subtype",
    )

    def __init__(self, start: int, body_start: int, blank: bytes, fields: list[_Field]) -> None:
        self.start = start
        self.body_start = body_start
        self.end = body_start
        self.blank = blank  # the empty line ending the header as stored, b"" when there is none
        self.fields = fields
        self.maintype = "text"
        self.subtype = "plain"
        self.params: list[tuple[str, str]] = []
        self.children: list[_Part] | None = None  # a list for a multipart (possibly empty)
        self.message: _Part | None = None  # the encapsulated message of a message/rfc822 part
        self.opaque = False  # a multipart or message kept whole (limits reached)


_Match = tuple[int, int, bool]  # (start of the boundary line, index in the boundary stack, close?)


@lru_cache(maxsize=512)
def _boundary_pattern(boundaries: tuple[bytes, ...], *, after_newline: bool) -> re.Pattern[bytes]:
    # Longest first: the regex alternation takes the first that matches, and the longest boundary
    # matching a line is the one it belongs to. A search for "\n--" is about nine times faster than
    # one for "^--" in MULTILINE mode (re tries "^" at every position).
    ordered = sorted(set(boundaries), key=len, reverse=True)
    return re.compile((rb"\n--(" if after_newline else rb"--(") + b"|".join(re.escape(b) for b in ordered) + rb")")


class _Parser:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.count = 0

    def next_boundary(self, pos: int, stack: tuple[bytes, ...]) -> _Match | None:
        if not stack:
            return None
        match = _boundary_pattern(stack, after_newline=False).match(self.raw, 0) if pos == 0 else None
        start = 0
        if match is None:  # a boundary line starts after a newline (found from pos - 1: one may start at pos)
            match = _boundary_pattern(stack, after_newline=True).search(self.raw, max(pos - 1, 0))
            if match is None:
                return None
            start = match.start() + 1
        found = match.group(1)
        index = len(stack) - 1
        while stack[index] != found:  # the innermost multipart using that boundary
            index -= 1
        return start, index, self.raw.startswith(b"--", match.end())

    def line_break_before(self, pos: int, floor: int) -> int:
        """Where a part's body ends when a boundary line starts at ``pos``: before its line break."""
        raw = self.raw
        if pos - 2 >= floor and raw[pos - 2 : pos] == b"\r\n":
            return pos - 2
        if pos - 1 >= floor and raw[pos - 1 : pos] == b"\n":
            return pos - 1
        return pos

    def after_line(self, pos: int) -> int:
        newline = self.raw.find(b"\n", pos)
        return len(self.raw) if newline < 0 else newline + 1

    def parse(
        self, start: int, stack: tuple[bytes, ...], depth: int, digest: bool = False,
        hint: _Match | None = None,
    ) -> tuple[_Part, _Match | None]:
        """The entity starting at ``start`` and the boundary line that ended it (None: the end)."""
        raw = self.raw
        self.count += 1
        nxt = hint if hint is not None and hint[0] >= start else self.next_boundary(start, stack)
        limit = nxt[0] if nxt is not None else len(raw)
        # The header: up to the first empty line, unless a boundary line comes first.
        if raw.startswith(b"\r\n", start) and start + 2 <= limit:
            body_start, blank = start + 2, b"\r\n"
        elif raw.startswith(b"\n", start) and start < limit:
            body_start, blank = start + 1, b"\n"
        else:
            found = _BLANK_LINE.search(raw, start, limit)
            if found is not None:
                body_start, blank = found.end(), raw[found.start() + 1 : found.end()]
            else:
                body_start, blank = (self.line_break_before(limit, start) if nxt else limit), b""
        part = _Part(start, body_start, blank, _split_fields(raw[start:body_start]))
        self._content_type(part, digest)
        truncated = not blank and nxt is not None  # a boundary line inside the header
        if (part.children is not None or part.message is not None) and (
            truncated or depth >= MAX_DEPTH or self.count >= MAX_PARTS
        ):
            part.children = part.message = None
            part.opaque = True
        if part.children is not None:
            return part, self._multipart(part, stack, depth)
        if part.message is not None:
            inner, nxt = self.parse(body_start, stack, depth + 1, hint=nxt)
            part.message, part.end = inner, inner.end
            return part, nxt
        part.end = self.line_break_before(nxt[0], body_start) if nxt is not None else len(raw)
        return part, nxt

    def _content_type(self, part: _Part, digest: bool) -> None:
        field = _first(part.fields, "content-type")
        head, params = _split_params(field.text()) if field is not None else ("", [])
        maintype, slash, subtype = head.partition("/")
        maintype, subtype = maintype.strip().lower(), subtype.strip().lower()
        if slash and _TOKEN.fullmatch(maintype) and _TOKEN.fullmatch(subtype):
            part.maintype, part.subtype, part.params = maintype, subtype, params
        elif field is None and digest:
            part.maintype, part.subtype = "message", "rfc822"
        if part.maintype == "multipart":
            part.children = []
        elif part.maintype == "message" and part.subtype == "rfc822":
            part.message = part  # placeholder, replaced by the parsed message

    def _multipart(self, part: _Part, stack: tuple[bytes, ...], depth: int) -> _Match | None:
        raw = self.raw
        boundary = _param(part.params, "boundary")
        if not boundary:  # no parts; the body runs to the enclosing boundary
            nxt = self.next_boundary(part.body_start, stack)
            part.end = self.line_break_before(nxt[0], part.body_start) if nxt is not None else len(raw)
            return nxt
        own = (*stack, boundary.encode("utf-8", "surrogateescape"))
        mine = len(stack)
        digest = part.subtype == "digest"
        children = part.children
        assert children is not None
        found = self.next_boundary(part.body_start, own)
        floor = part.body_start
        while found is not None:
            line, index, close = found
            if index < mine:  # an enclosing part's boundary: this multipart ends here
                break
            after = self.after_line(line)
            if close:  # the epilogue runs to the enclosing boundary
                floor = after
                found = self.next_boundary(after, stack)
                break
            if self.count >= MAX_PARTS:
                found = self.next_boundary(after, own)
                continue
            child, found = self.parse(after, own, depth + 1, digest)
            children.append(child)
            floor = child.end
        part.end = self.line_break_before(found[0], floor) if found is not None else len(raw)
        return found


# --- addresses (RFC 5322 3.4, RFC 3501 ENVELOPE) ---------------------------------------------------

_SPECIALS = "<>@,;:"
_ATOM_END = set(' \t"()<>@,;:[')


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text): "a" atom (dots included), "q" quoted string content, "c" comment content,
    "d" domain literal, or the special character itself."""
    tokens: list[tuple[str, str]] = []
    index, size = 0, len(text)
    while index < size:
        char = text[index]
        if char in " \t":
            index += 1
        elif char == '"':
            end = index + 1
            while end < size and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            tokens.append(("q", _unquote(text[index : end + 1])))
            index = end + 1
        elif char == "(":
            end = _skip_comment(text, index)
            inner = text[index + 1 : end - 1] if text[end - 1 : end] == ")" else text[index + 1 : end]
            tokens.append(("c", re.sub(r"\\(.)", r"\1", inner).strip()))
            index = end
        elif char == "[":
            end = text.find("]", index)
            end = size if end < 0 else end + 1
            tokens.append(("d", text[index:end]))
            index = end
        elif char in _SPECIALS:
            tokens.append((char, char))
            index += 1
        else:
            end = index + 1
            while end < size and text[end] not in _ATOM_END:
                end += 1
            tokens.append(("a", text[index:end]))
            index = end
    return tokens


def _phrase(words: list[tuple[str, str]]) -> str | None:
    text = " ".join(value for kind, value in words if kind in ("a", "q", "d"))
    return text or None


def _addr_spec(tokens: list[tuple[str, str]]) -> tuple[str, str, str | None]:
    """(mailbox, host, leading words taken for a name) of local@domain tokens, tolerant of junk."""
    words = [token for token in tokens if token[0] != "c"]
    at = next((i for i, token in enumerate(words) if token[0] == "@"), len(words))
    local, domain = words[:at], words[at + 1 :]
    name = None
    if len(local) > 1 and not any(value.startswith(".") or value.endswith(".") for _, value in local):
        name, local = _phrase(local[:-1]), local[-1:]  # "John Smith john@x": a name, not a mailbox
    mailbox = "".join(value for _, value in local) or MISSING_MAILBOX
    host = "".join(value for _, value in domain) or MISSING_DOMAIN
    return mailbox, host, name


def _angle(tokens: list[tuple[str, str]]) -> tuple[str | None, str, str]:
    """(route, mailbox, host) of what is between < and >."""
    tokens = [token for token in tokens if token[0] != "c"]
    route = None
    if tokens and tokens[0][0] == "@":
        colon = next((i for i, token in enumerate(tokens) if token[0] == ":"), None)
        if colon is not None:
            route = "".join(value for _, value in tokens[:colon]) or None
            tokens = tokens[colon + 1 :]
    mailbox, host, _ = _addr_spec(tokens)
    return route, mailbox, host


def parse_addresses(text: str) -> list[list[str | None]]:
    """RFC 3501 address structures ``[name, adl, mailbox, host]`` of an address-list header value,
    groups as ``[None, None, group, None]`` ... ``[None, None, None, None]``; never raises."""
    tokens = _tokens(text)
    out: list[list[str | None]] = []
    in_group = False
    words: list[tuple[str, str]] = []
    angle: list[tuple[str, str]] | None = None
    index, size = 0, len(tokens)

    def flush() -> None:
        nonlocal words, angle
        comments = [value for kind, value in words if kind == "c" and value]
        if angle is not None:
            route, mailbox, host = _angle(angle)
            out.append([_phrase(words), route, mailbox, host])
        elif any(kind != "c" for kind, _ in words):
            mailbox, host, name = _addr_spec(words)
            out.append([comments[-1] if comments else name, None, mailbox, host])
        words, angle = [], None

    while index < size:
        kind, value = tokens[index]
        index += 1
        if kind == ",":
            flush()
        elif kind == ";":
            flush()
            if in_group:
                out.append([None, None, None, None])
                in_group = False
        elif kind == ":" and angle is None and not in_group:
            out.append([None, None, _phrase(words) or "", None])
            words, in_group = [], True
        elif kind == "<" and angle is None:
            close = next((i for i in range(index, size) if tokens[i][0] == ">"), None)
            if close is None:  # unclosed: up to the next separator
                close = next((i for i in range(index, size) if tokens[i][0] in ",;"), size)
                angle, index = tokens[index:close], close
            else:
                angle, index = tokens[index:close], close + 1
        elif angle is None:
            words.append((kind, value))
        # anything between ">" and the next separator is dropped
    flush()
    if in_group:
        out.append([None, None, None, None])
    return out


# --- decoding, for SEARCH --------------------------------------------------------------------------


def _to_text(data: bytes, charset: str | None = None) -> str:
    """``data`` decoded with ``charset``; without one (or US-ASCII, often wrong), UTF-8, else CP1252."""
    if charset and charset.strip().strip('"').lower() not in ("us-ascii", "ascii"):
        try:
            return data.decode(charset.strip().strip('"'), "replace")
        except (LookupError, ValueError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _word_bytes(encoding: str, payload: str) -> bytes | None:
    try:
        if encoding in "Bb":
            data = _NOT_BASE64.sub(b"", payload.encode("ascii", "ignore"))
            data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data + b"=" * (-len(data) % 4)
            return binascii.a2b_base64(data)
        return binascii.a2b_qp(payload.encode("ascii", "ignore"), header=True)
    except (binascii.Error, ValueError):
        return None


def decode_words(text: str) -> str:
    """``text`` with its RFC 2047 encoded-words decoded; adjacent words of one charset are decoded
    together (a character may be split across them), whitespace between encoded-words dropped."""
    if "=?" not in text:
        return text
    out: list[str] = []
    pending: tuple[str, bytes] | None = None  # (charset, bytes) of the encoded-words being joined
    position = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[position : match.start()]
        data = _word_bytes(match.group(2), match.group(3))
        charset = match.group(1).split("*", 1)[0]
        position = match.end()
        if data is None:
            if pending is not None:
                out.append(_to_text(pending[1], pending[0]))
                pending = None
            out.append(between + match.group(0))
            continue
        if pending is not None and not between.strip():
            if pending[0].lower() == charset.lower():
                pending = (charset, pending[1] + data)
                continue
            out.append(_to_text(pending[1], pending[0]))
        else:
            if pending is not None:
                out.append(_to_text(pending[1], pending[0]))
            out.append(between)
        pending = (charset, data)
    if pending is not None:
        out.append(_to_text(pending[1], pending[0]))
    out.append(text[position:])
    return "".join(out)


def _decode_body(data: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        data = _NOT_BASE64.sub(b"", data)
        data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data + b"=" * (-len(data) % 4)
        try:
            return base64.b64decode(data)
        except (binascii.Error, ValueError):
            return b""
    if encoding == "quoted-printable":
        try:
            return binascii.a2b_qp(data)
        except (binascii.Error, ValueError):
            return data
    return data


# --- the public object -----------------------------------------------------------------------------


def _empty_body(extensible: bool) -> list:
    body: list = ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 0, 0]
    return [*body, None, None, None, None] if extensible else body


class MessageStructure:
    """A stored message as IMAP FETCH sees it. Parse with :meth:`parse`; results are cached, and the
    lists returned by :meth:`envelope` and :meth:`bodystructure` are shared: do not modify them."""

    __slots__ = ("_body", "_bodystructure", "_envelope", "_header_only", "_root", "raw", "size")

    def __init__(self, raw: bytes, root: _Part) -> None:
        self.raw = raw
        self.size = len(raw)
        self._root = root
        self._envelope: list | None = None
        self._body: list | None = None
        self._bodystructure: list | None = None
        self._header_only = False

    @classmethod
    def parse(cls, raw: bytes) -> MessageStructure:
        """The structure of ``raw`` (RFC 5322 bytes as stored). Never raises on malformed input."""
        raw = bytes(raw)
        try:
            root, _ = _Parser(raw).parse(0, (), 0)
        except Exception:  # a bug here must not take FETCH down: the message becomes one text part
            log.exception("MIME structure of a %d-byte message could not be parsed", len(raw))
            found = _BLANK_LINE.search(raw)
            body_start = found.end() if found is not None else len(raw)
            root = _Part(0, body_start, raw[found.start() + 1 : body_start] if found else b"", [])
            root.end = len(raw)
        return cls(raw, root)

    @classmethod
    def parse_header(cls, raw: bytes) -> MessageStructure:
        """Only the message's own header: all that ENVELOPE, BODY[HEADER], BODY[HEADER.FIELDS ...] and
        RFC822.HEADER need (see :func:`header_only`), without walking the MIME tree of a large body.
        Parts, BODYSTRUCTURE and the text of such a structure are not known: asking for them is a bug."""
        raw = bytes(raw)
        if raw.startswith(b"\r\n"):
            body_start, blank = 2, b"\r\n"
        elif raw.startswith(b"\n"):
            body_start, blank = 1, b"\n"
        elif (found := _BLANK_LINE.search(raw)) is not None:
            body_start, blank = found.end(), raw[found.start() + 1 : found.end()]
        else:
            body_start, blank = len(raw), b""
        root = _Part(0, body_start, blank, _split_fields(raw[:body_start]))
        root.end = len(raw)
        structure = cls(raw, root)
        structure._header_only = True
        return structure

    # -- sections --

    def header_bytes(self) -> bytes:
        """BODY[HEADER]: the message header with its blank line (RFC822.HEADER)."""
        return self.raw[: self._root.body_start]

    def text_bytes(self) -> bytes:
        """BODY[TEXT]: everything after the header's blank line (RFC822.TEXT)."""
        return self.raw[self._root.body_start :]

    def _find(self, parts: tuple[int, ...]) -> _Part | None:
        assert not self._header_only, "the parts of a message parsed by parse_header"
        part, is_message = self._root, True
        last = len(parts) - 1
        for position, number in enumerate(parts):
            if part.children is not None:
                if not 1 <= number <= len(part.children):
                    return None
                part = part.children[number - 1]
            elif not (is_message and number == 1):
                return None  # a non-multipart message has a part 1, its body; a body part has none
            is_message = False
            if position < last and part.message is not None:
                part, is_message = part.message, True
        return part

    def section(self, parts: tuple[int, ...], text: str | None, fields: tuple[str, ...] = ()) -> bytes:
        """The contents of BODY[section], byte for byte as stored; b"" for what does not exist.

        ``parts`` are the part numbers (() for the whole message), ``text`` one of None, "HEADER",
        "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME", ``fields`` the header field names.
        """
        try:
            return self._section(tuple(parts), text.upper() if text else None, fields)
        except Exception:  # never on well-formed arguments; an odd request gets the empty string
            log.exception("BODY[%s %s] failed", parts, text)
            return b""

    def _section(self, parts: tuple[int, ...], text: str | None, fields: tuple[str, ...]) -> bytes:
        raw = self.raw
        if not parts:
            if text is None:
                return raw
            if text == "MIME":
                return b""
            message = self._root
        else:
            part = self._find(parts)
            if part is None:
                return b""
            if text is None:
                return raw[part.body_start : part.end]
            if text == "MIME":
                return raw[part.start : part.body_start]
            message = part.message
            if message is None:
                return b""
        if text == "HEADER":
            return raw[message.start : message.body_start]
        if text == "TEXT":
            return raw[message.body_start : message.end]
        if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            wanted = {name.lower() for name in fields}
            keep = text == "HEADER.FIELDS"
            selected = [field.raw for field in message.fields if (field.name in wanted) == keep]
            return b"".join(selected) + message.blank
        return b""

    # -- ENVELOPE --

    def envelope(self) -> list:
        """The ENVELOPE of the message, ready for :func:`.wire.encode`."""
        if self._envelope is None:
            self._envelope = self._safe(self._envelope_of, self._root, [None] * 10)
        return self._envelope

    @staticmethod
    def _safe(build: Callable[[_Part], list], part: _Part, fallback: list) -> list:
        try:
            return build(part)
        except Exception:
            log.exception("ENVELOPE/BODYSTRUCTURE failed")
            return fallback

    def _envelope_of(self, message: _Part) -> list:
        fields = message.fields

        def string(name: str) -> str | None:
            field = _first(fields, name)
            return None if field is None else field.text()

        def addresses(name: str) -> Packed | None:
            field = _first(fields, name)
            if field is None:
                return None
            found = parse_addresses(field.text())
            return Packed(found) if found else None

        sender = addresses("from")
        return [
            string("date"), string("subject"), sender, addresses("sender") or sender,
            addresses("reply-to") or sender, addresses("to"), addresses("cc"), addresses("bcc"),
            string("in-reply-to"), string("message-id"),
        ]

    # -- BODY / BODYSTRUCTURE --

    def bodystructure(self, extensible: bool = True) -> list:
        """BODYSTRUCTURE (``extensible``) or BODY, ready for :func:`.wire.encode`."""
        assert not self._header_only, "the BODYSTRUCTURE of a message parsed by parse_header"
        if extensible:
            if self._bodystructure is None:
                self._bodystructure = self._safe(lambda p: self._structure(p, True), self._root, _empty_body(True))
            return self._bodystructure
        if self._body is None:
            self._body = self._safe(lambda p: self._structure(p, False), self._root, _empty_body(False))
        return self._body

    def _structure(self, part: _Part, extensible: bool) -> list:
        fields = part.fields
        if part.children is not None:
            children = [self._structure(child, extensible) for child in part.children]
            body: list = [Concat(children or [_empty_body(extensible)]), part.subtype.upper()]
            if extensible:
                body += [self._params(part.params), *self._extension(fields)]
            return body
        maintype, subtype, params = part.maintype, part.subtype, part.params
        if part.opaque:
            maintype, subtype = "application", "octet-stream"
        if maintype == "text" and _param(params, "charset") is None:
            params = [*params, ("CHARSET", "US-ASCII")]
        body = [
            maintype.upper(), subtype.upper(), self._params(params), self._text(fields, "content-id"),
            self._text(fields, "content-description"), _encoding(fields).upper() or "7BIT",
            part.end - part.body_start,
        ]
        lines = self.raw.count(b"\n", part.body_start, part.end)
        if part.message is not None:
            body += [self._envelope_of(part.message), self._structure(part.message, extensible), lines]
        elif maintype == "text":
            body.append(lines)
        if extensible:
            body += [self._text(fields, "content-md5"), *self._extension(fields)]
        return body

    @staticmethod
    def _text(fields: list[_Field], name: str) -> str | None:
        field = _first(fields, name)
        return None if field is None else field.text()

    @staticmethod
    def _params(params: list[tuple[str, str]]) -> list | None:
        return [item for name, value in params for item in (name.upper(), value)] or None

    def _extension(self, fields: list[_Field]) -> list:
        """body-fld-dsp, body-fld-lang, body-fld-loc."""
        disposition = None
        field = _first(fields, "content-disposition")
        if field is not None:
            head, params = _split_params(field.text())
            kind = _TOKEN.match(head)
            if kind is not None:
                disposition = [kind.group().upper(), self._params(params)]
        language = None
        field = _first(fields, "content-language")
        if field is not None:
            tags = [tag.strip() for tag in _strip_comments(field.text()).split(",")]
            language = [tag for tag in tags if tag] or None
        return [disposition, language, self._text(fields, "content-location")]

    # -- SEARCH --

    def addresses(self, name: str) -> list[str]:
        """Every address of every ``name`` field, as ``Name <mailbox@host>`` (name RFC 2047 decoded):
        what SEARCH FROM/TO/CC/BCC look in, the envelope's view without comments or routes."""
        name = name.lower()
        found: list[str] = []
        for field in self._root.fields:
            if field.name != name:
                continue
            for display, _route, mailbox, host in parse_addresses(field.text()):
                if mailbox is None or host is None:
                    continue  # group markers
                address = f"<{mailbox}@{host}>"
                found.append(f"{decode_words(display)} {address}" if display else address)
        return found

    def header_values(self, name: str) -> list[str]:
        """The values of every ``name`` field of the message header, unfolded and RFC 2047 decoded."""
        name = name.lower()
        return [decode_words(_to_text(field.value())) for field in self._root.fields if field.name == name]

    def body_text(self) -> str:
        """The decoded text (transfer encoding and charset) of the text/* parts, in order, joined by
        newlines; encapsulated messages included."""
        assert not self._header_only, "the text of a message parsed by parse_header"
        texts: list[str] = []
        stack = [self._root]
        while stack:
            part = stack.pop()
            if part.children is not None:
                stack.extend(reversed(part.children))
            elif part.message is not None:
                stack.append(part.message)
            elif part.maintype == "text" and not part.opaque:
                data = _decode_body(self.raw[part.body_start : part.end], _encoding(part.fields).lower())
                texts.append(_to_text(data, _param(part.params, "charset")))
        return "\n".join(texts)
