"""SEARCH criteria: every RFC 3501 key, OR/NOT/parenthesised nesting (bounded), CONDSTORE MODSEQ, WITHIN's
OLDER and YOUNGER (RFC 5032)."""

from __future__ import annotations

from collections.abc import Callable

from ..commands import (
    AgeKey,
    AllKey,
    And,
    Command,
    DateKey,
    DateRelation,
    FlagKey,
    HeaderContains,
    ModSeqKey,
    Not,
    ObjectIdKey,
    Or,
    SavedDateKey,
    Search,
    SearchKey,
    SequenceKey,
    SizeKey,
    TextContains,
)
from .errors import SUPPORTED_CHARSETS, BadCharset
from .lexer import MAX_MODSEQ, MAX_SEARCH_DEPTH, Reader, snippet

ESEARCH_OPTIONS = ("MIN", "MAX", "ALL", "COUNT")  # RFC 4731 3.1, in the order an ESEARCH response gives them


def parse_search(r: Reader, tag: str, uid: bool) -> Command:
    r.sp("search criteria")
    returns: tuple[str, ...] | None = None
    if r.peek_word("RETURN"):  # RFC 4731: search-return-opts come before CHARSET
        r.keyword("RETURN")
        r.sp("result options")
        asked = r.items(lambda: r.keyword("result option"), "result option", allow_empty=True)
        unknown = [option for option in asked if option not in ESEARCH_OPTIONS]
        if unknown:
            raise r.fail(f"Unknown SEARCH result option {unknown[0]}")
        returns = tuple(option for option in ESEARCH_OPTIONS if option in asked) or ("ALL",)
        r.sp("search criteria")
    charset = None
    if r.peek_word("CHARSET"):
        r.keyword("CHARSET")
        r.sp("charset")
        charset = snippet(r.astring("charset")).upper()
        if charset not in SUPPORTED_CHARSETS:
            raise BadCharset(tag, charset)
        r.sp("search criteria")
    keys = [_search_key(r, 0)]
    while r.optional_sp():
        keys.append(_search_key(r, 0))
    return Search(tag, keys[0] if len(keys) == 1 else And(tuple(keys)), charset, uid, returns)


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


def _search_key(r: Reader, depth: int) -> SearchKey:
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
    if name in ("ALL", "SAVEDATESUPPORTED"):  # RFC 8514: every folder here keeps save dates
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


def _header_key(r: Reader, name: str, _depth: int) -> SearchKey:
    if name != "HEADER":
        return HeaderContains(name.lower(), r.text("search string"))
    field = r.text("header field name").lower()
    r.sp("search string")
    return HeaderContains(field, r.text("search string"))


def _text_key(r: Reader, name: str, _depth: int) -> SearchKey:
    return TextContains(r.text("search string"), body_only=name == "BODY")


def _date_key(r: Reader, name: str, _depth: int) -> SearchKey:
    kind, sent = _DATE_KEYS[name]
    return DateKey(kind, r.date(), sent)


def _keyword_key(r: Reader, name: str, _depth: int) -> SearchKey:
    return FlagKey(r.atom("keyword"), present=name == "KEYWORD")


def _size_key(r: Reader, name: str, _depth: int) -> SearchKey:
    return SizeKey(larger=name == "LARGER", size=r.number("size"))


def _age_key(r: Reader, name: str, _depth: int) -> SearchKey:
    return AgeKey(older=name == "OLDER", seconds=r.number("interval in seconds", nonzero=True))


_SAVED_DATE_KEYS = {"SAVEDBEFORE": DateRelation.BEFORE, "SAVEDON": DateRelation.ON, "SAVEDSINCE": DateRelation.SINCE}


def _saved_date_key(r: Reader, name: str, _depth: int) -> SearchKey:
    return SavedDateKey(_SAVED_DATE_KEYS[name], r.date())


def _object_id_key(r: Reader, name: str, _depth: int) -> SearchKey:
    """EMAILID / THREADID objectid (RFC 8474 6): 1 to 255 of ALPHA, DIGIT, "_" and "-"."""
    value = r.atom("object id")
    if len(value) > 255 or not all(c.isascii() and (c.isalnum() or c in "_-") for c in value):
        raise r.fail(f"Invalid object id {snippet(value.encode())}")
    return ObjectIdKey(name, value)


def _uid_key(r: Reader, _name: str, _depth: int) -> SearchKey:
    return SequenceKey(True, r.sequence_set())


def _not_key(r: Reader, _name: str, depth: int) -> SearchKey:
    return Not(_search_key(r, depth + 1))


def _or_key(r: Reader, _name: str, depth: int) -> SearchKey:
    left = _search_key(r, depth + 1)
    r.sp("second key of OR")
    return Or(left, _search_key(r, depth + 1))


def _modseq_key(r: Reader, _name: str, _depth: int) -> SearchKey:
    """``MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer``; the entry is checked, then dropped."""
    if r.peek() == b'"':
        if not r.quoted().lower().startswith(b"/flags/"):
            raise r.fail("MODSEQ entry name must be /flags/<flag>")
        r.sp("MODSEQ entry type")
        if r.keyword("MODSEQ entry type") not in ("PRIV", "SHARED", "ALL"):
            raise r.fail("MODSEQ entry type must be priv, shared or all")
        r.sp("mod-sequence")
    return ModSeqKey(r.number("mod-sequence", maximum=MAX_MODSEQ))


_SEARCH_ARGUMENT_KEYS: dict[str, Callable[[Reader, str, int], SearchKey]] = {
    **dict.fromkeys((*_HEADER_KEYS, "HEADER"), _header_key),
    **dict.fromkeys(("BODY", "TEXT"), _text_key),
    **dict.fromkeys(_DATE_KEYS, _date_key),
    **dict.fromkeys(("KEYWORD", "UNKEYWORD"), _keyword_key),
    **dict.fromkeys(("LARGER", "SMALLER"), _size_key),
    **dict.fromkeys(("OLDER", "YOUNGER"), _age_key),
    **dict.fromkeys(("EMAILID", "THREADID"), _object_id_key),
    **dict.fromkeys(_SAVED_DATE_KEYS, _saved_date_key),
    "UID": _uid_key,
    "NOT": _not_key,
    "OR": _or_key,
    "MODSEQ": _modseq_key,
}
