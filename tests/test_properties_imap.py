"""Property-based tests of the IMAP framing and parser (Hypothesis).

Two properties: whatever bytes a client sends, the framer and the parser raise nothing but their own
errors (each becomes a BAD or NO reply; anything else would end the connection with a traceback); and a
well-formed command, generated from the RFC 3501 grammar in every spelling a client may use (atoms,
quoted strings, synchronising and non-synchronising literals, any letter case) and framed line by line
as the server reads it, parses to the expected command object.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mssante_operator.imap.commands import (
    AllKey,
    And,
    Append,
    AppendedMessage,
    Authenticate,
    BodySection,
    Command,
    Copy,
    Create,
    DateKey,
    DateRelation,
    Delete,
    Examine,
    Expunge,
    Fetch,
    FetchAttribute,
    FlagKey,
    HeaderContains,
    Id,
    Login,
    ModSeqKey,
    Move,
    Not,
    Or,
    Rename,
    Search,
    SearchKey,
    Select,
    SequenceKey,
    SizeKey,
    Status,
    Store,
    StoreMode,
    Subscribe,
    TextContains,
    Unsubscribe,
)
from mssante_operator.imap.parser import CommandFramer, Complete, NeedLiteral, ParseError, parse_command
from mssante_operator.imap.sequence import MAX_NUMBER, SequenceSet
from mssante_operator.imap.utf7 import encode_mailbox

MAX_MODSEQ = 2**63 - 1
# RFC 3501 section 9, written here independently of the parser: ASTRING-CHAR and ATOM-CHAR.
ATOM_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '(){%*"\\]')
NOT_IN_ASTRING_ATOM = re.compile(rb'[(){ %*"\\\x00-\x20\x7f-\xff]')
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

Expected = Callable[[str], Command]


def framed(wire: bytes, framer: CommandFramer) -> list[bytes]:
    """The complete commands a framer makes of ``wire`` read as the server reads it: a line (up to LF),
    then the literal the line announces, and so on; a truncated tail is dropped (the server sees EOF)."""
    commands, pos = [], 0
    while pos < len(wire):
        end = wire.find(b"\n", pos)
        line = wire[pos:] if end < 0 else wire[pos : end + 1]
        pos += len(line)
        event = framer.feed_line(line)
        while isinstance(event, NeedLiteral):
            if pos + event.size > len(wire):
                return commands
            framer.feed_literal(wire[pos : pos + event.size])
            pos += event.size
            end = wire.find(b"\n", pos)
            line = wire[pos:] if end < 0 else wire[pos : end + 1]
            pos += len(line)
            event = framer.feed_line(line)
        assert isinstance(event, Complete)
        commands.append(event.data)
    return commands


def frame_and_parse_junk(wire: bytes) -> None:
    """Frame then parse ``wire``: only the parser's errors may come out (the framer resets after one)."""
    framer = CommandFramer(max_literal=2048)
    while wire:
        try:
            for command in framed(wire, framer):
                with contextlib.suppress(ParseError):
                    parse_command(command)
            return
        except ParseError:
            # The server answers BAD and reads on from the next line; so do we.
            end = wire.find(b"\n")
            wire = b"" if end < 0 else wire[end + 1 :]
            framer = CommandFramer(max_literal=2048)


# --------------------------------------------------------------------------- junk


KEYWORDS = (
    "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "AUTHENTICATE", "LOGIN", "ID", "ENABLE", "SELECT", "EXAMINE",
    "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "NAMESPACE", "STATUS", "APPEND",
    "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "IDLE", "UID", "CHARSET",
    "UTF-8", "ALL", "NEW", "OLD", "SEEN", "UNSEEN", "KEYWORD", "HEADER", "FROM", "SUBJECT", "BODY", "TEXT", "BEFORE",
    "ON", "SINCE", "SENTON", "LARGER", "SMALLER", "NOT", "OR", "MODSEQ", "CHANGEDSINCE", "UNCHANGEDSINCE", "FLAGS",
    "+FLAGS", "-FLAGS.SILENT", "BODY.PEEK", "BODYSTRUCTURE", "ENVELOPE", "RFC822.SIZE", "FAST", "FULL",
    "HEADER.FIELDS", "HEADER.FIELDS.NOT", "MIME", "RETURN", "SPECIAL-USE", "CHILDREN", "USE", "CONDSTORE", "MESSAGES",
    "UIDNEXT", "INBOX", "NIL", "\\Seen", "\\Deleted", "\\Recent", "\\*", "\\Sent", "=", "1-Jan-2024",
)
PUNCTUATION = ("(", ")", "[", "]", "<", ">", ".", "*", ":", ",", "%", '"', "\\", "{", "}", "+", "-", "~", "&")

numbers = st.one_of(
    st.integers(0, 2**70).map(str),
    st.integers(4000, 6000).map(lambda n: "9" * n),  # past int()'s 4300-digit limit
)
quoted_soup = st.text(max_size=12).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"')
literal_soup = st.binary(max_size=12).map(lambda b: b"{%d}\r\n" % len(b) + b)
big_literal = st.sampled_from([b"{4096}\r\n", b"{4096+}\r\n", b"{" + b"9" * 5000 + b"}\r\n", b"{99999999999}\r\n"])
token = st.one_of(
    st.sampled_from(KEYWORDS).map(str.encode),
    st.sampled_from(PUNCTUATION).map(str.encode),
    numbers.map(str.encode),
    st.tuples(numbers, numbers).map(lambda pair: f"{pair[0]}:{pair[1]}".encode()),
    numbers.map(lambda n: f"<{n}.{n}>".encode()),
    numbers.map(lambda n: f"BODY[{n}.{n}.MIME]".encode()),
    quoted_soup.map(lambda t: t.encode("utf-8", "surrogatepass")),
    literal_soup,
    big_literal,
    st.text(alphabet=ATOM_CHARS, min_size=1, max_size=8).map(str.encode),
    st.binary(min_size=1, max_size=4),
)
soup = st.lists(st.tuples(token, st.sampled_from([b" ", b" ", b"", b"  ", b"\r\n"])), max_size=14).map(
    lambda pairs: b"".join(t + sep for t, sep in pairs)
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
@example(b"a1 FETCH 1 BODY[]<" + b"9" * 5000 + b".1>\r\n")
@example(b"a1 APPEND INBOX {" + b"9" * 5000 + b"}\r\n")
@example(b"a1 APPEND INBOX {" + b"9" * 5000 + b"+}\r\n")
@example(b"a1 SEARCH LARGER " + b"9" * 5000 + b"\r\n")
@example(b"a1 LOGIN {" + b"9" * 5000 + b"}\r\nx y\r\n")
def test_any_bytes_give_only_parse_errors(wire: bytes) -> None:
    frame_and_parse_junk(wire)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([b"a1 ", b"a1 UID ", b"* ", b""]), soup)
def test_any_token_soup_gives_only_parse_errors(head: bytes, body: bytes) -> None:
    frame_and_parse_junk(head + body + b"\r\n")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_parse_command_alone_raises_only_parse_errors(data: bytes) -> None:
    """The parser is also safe on input the framer would never give it (no CRLF, CR inside...)."""
    with contextlib.suppress(ParseError):
        parse_command(data)


# --------------------------------------------------------------------------- well-formed commands


def spelled(word: str) -> st.SearchStrategy[str]:
    """A keyword in any letter case."""
    return st.sampled_from([word, word.lower(), word.capitalize(), word.swapcase()])


def astring(value: bytes) -> st.SearchStrategy[bytes]:
    """Every wire form of an astring: atom (when the value is one), quoted string, literal, LITERAL+."""
    forms = [b"{%d}\r\n" % len(value) + value, b"{%d+}\r\n" % len(value) + value]
    if not re.search(rb"[\r\n\x00]", value):
        forms.append(b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"')
    if value and not NOT_IN_ASTRING_ATOM.search(value):
        forms.append(value)
    return st.sampled_from(forms)


texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=16)
mailbox_names = st.one_of(
    st.sampled_from(["INBOX", "inbox", "InBox", "Sent", "Dossiers/Cardiologie", "Éléments envoyés", "a&b", ""]),
    texts,
)
atoms = st.text(alphabet=ATOM_CHARS, min_size=1, max_size=10)
numbers_32 = st.integers(1, MAX_NUMBER)


def expected_mailbox(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 5.1): ASCII case only; "ınbox" (dotless i) is another name."""
    return "INBOX" if name.isascii() and name.upper() == "INBOX" else name


@st.composite
def mailbox(draw: st.DrawFn) -> tuple[bytes, str]:
    name = draw(mailbox_names)
    return draw(astring(encode_mailbox(name).encode("ascii"))), expected_mailbox(name)


@st.composite
def sequence_set(draw: st.DrawFn) -> tuple[bytes, SequenceSet]:
    ranges = draw(st.lists(st.tuples(st.none() | numbers_32, st.none() | numbers_32, st.booleans()),
                           min_size=1, max_size=4))
    wire, expected = [], []
    for first, last, single in ranges:
        def show(n: int | None) -> str:
            return "*" if n is None else str(n)
        if single:
            wire.append(show(first))
            last = first
        else:
            wire.append(f"{show(first)}:{show(last)}")
        if first is None or last is None:
            expected.append((last if first is None else first, None))
        else:
            expected.append((min(first, last), max(first, last)))
    return ",".join(wire).encode(), SequenceSet(tuple(expected))


@st.composite
def flag(draw: st.DrawFn) -> tuple[bytes, str]:
    if draw(st.booleans()):
        canonical = draw(st.sampled_from(SYSTEM_FLAGS))
        return draw(spelled(canonical)).encode(), canonical
    keyword = draw(atoms)
    return keyword.encode(), keyword


@st.composite
def flag_list(draw: st.DrawFn) -> tuple[bytes, tuple[str, ...]]:
    flags = draw(st.lists(flag(), max_size=4))
    return b"(" + b" ".join(w for w, _ in flags) + b")", tuple(f for _, f in flags)


@st.composite
def login(draw: st.DrawFn) -> tuple[bytes, Expected]:
    user, password = draw(texts), draw(texts)
    wire = b" ".join([draw(spelled("LOGIN")).encode(), draw(astring(user.encode())), draw(astring(password.encode()))])
    return wire, lambda tag: Login(tag, user, password)


@st.composite
def authenticate(draw: st.DrawFn) -> tuple[bytes, Expected]:
    mechanism = draw(st.sampled_from(["PLAIN", "XOAUTH2", "EXTERNAL", "SCRAM-SHA-256"]))
    response = draw(st.none() | st.binary(max_size=40))
    wire = draw(spelled("AUTHENTICATE")).encode() + b" " + draw(spelled(mechanism)).encode()
    if response is not None:
        wire += b" " + (base64.b64encode(response) if response else b"=")
    return wire, lambda tag: Authenticate(tag, mechanism, response)


@st.composite
def id_command(draw: st.DrawFn) -> tuple[bytes, Expected]:
    pairs = draw(st.none() | st.lists(st.tuples(texts, st.none() | texts), max_size=3))
    if pairs is None:
        return draw(spelled("ID")).encode() + b" " + draw(spelled("NIL")).encode(), lambda tag: Id(tag, None)
    items = []
    for key, value in pairs:
        value_wire = draw(spelled("NIL")).encode() if value is None else draw(string_only(value.encode()))
        items.append(draw(string_only(key.encode())) + b" " + value_wire)
    return (draw(spelled("ID")).encode() + b" (" + b" ".join(items) + b")",
            lambda tag: Id(tag, tuple(pairs)))


def string_only(value: bytes) -> st.SearchStrategy[bytes]:
    """A ``string`` (quoted or literal, never an atom)."""
    return astring(value).filter(lambda wire: wire[:1] in (b'"', b"{"))


@st.composite
def one_mailbox(draw: st.DrawFn) -> tuple[bytes, Expected]:
    name, cls = draw(st.sampled_from([("DELETE", Delete), ("SUBSCRIBE", Subscribe), ("UNSUBSCRIBE", Unsubscribe)]))
    wire, expected = draw(mailbox())
    return draw(spelled(name)).encode() + b" " + wire, lambda tag: cls(tag, expected)


@st.composite
def select(draw: st.DrawFn) -> tuple[bytes, Expected]:
    name, cls = draw(st.sampled_from([("SELECT", Select), ("EXAMINE", Examine)]))
    wire, expected = draw(mailbox())
    condstore = draw(st.booleans())
    if condstore:
        wire += b" (" + draw(spelled("CONDSTORE")).encode() + b")"
    return draw(spelled(name)).encode() + b" " + wire, lambda tag: cls(tag, expected, condstore=condstore)


@st.composite
def create(draw: st.DrawFn) -> tuple[bytes, Expected]:
    wire, expected = draw(mailbox())
    uses = draw(st.none() | st.lists(st.sampled_from(["\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive"]),
                                     max_size=2))
    if uses is not None:
        wire += b" (" + draw(spelled("USE")).encode() + b" (" + " ".join(
            draw(spelled(use)) for use in uses).encode() + b"))"
    return b"CREATE " + wire, lambda tag: Create(tag, expected, tuple(uses or ()))


@st.composite
def rename(draw: st.DrawFn) -> tuple[bytes, Expected]:
    (old, old_name), (new, new_name) = draw(mailbox()), draw(mailbox())
    return b"RENAME " + old + b" " + new, lambda tag: Rename(tag, old_name, new_name)


@st.composite
def status(draw: st.DrawFn) -> tuple[bytes, Expected]:
    wire, expected = draw(mailbox())
    items = draw(st.lists(st.sampled_from(["MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ",
                                           "SIZE", "APPENDLIMIT"]), min_size=1, max_size=4))
    spelled_items = " ".join(draw(spelled(item)) for item in items).encode()
    return b"STATUS " + wire + b" (" + spelled_items + b")", lambda tag: Status(tag, expected, tuple(items))


@st.composite
def copy_or_move(draw: st.DrawFn) -> tuple[bytes, Expected]:
    name, cls = draw(st.sampled_from([("COPY", Copy), ("MOVE", Move)]))
    uid = draw(st.booleans())
    (set_wire, expected_set), (box_wire, box) = draw(sequence_set()), draw(mailbox())
    wire = (draw(spelled("UID")).encode() + b" " if uid else b"") + draw(spelled(name)).encode()
    return wire + b" " + set_wire + b" " + box_wire, lambda tag: cls(tag, expected_set, box, uid=uid)


@st.composite
def uid_expunge(draw: st.DrawFn) -> tuple[bytes, Expected]:
    set_wire, expected_set = draw(sequence_set())
    wire = draw(spelled("UID")).encode() + b" " + draw(spelled("EXPUNGE")).encode() + b" " + set_wire
    return wire, lambda tag: Expunge(tag, uid=True, sequence_set=expected_set)


@st.composite
def date_time(draw: st.DrawFn) -> tuple[bytes, datetime]:
    minutes = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    zone = timezone(timedelta(minutes=minutes))
    when = draw(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31))).replace(
        microsecond=0, tzinfo=zone)
    day = draw(st.sampled_from([f"{when.day:02d}", f"{when.day:2d}"] + ([str(when.day)] if when.day < 10 else [])))
    sign, offset = ("-" if minutes < 0 else "+"), abs(minutes)
    month = draw(spelled(MONTHS[when.month - 1]))
    text = f'"{day}-{month}-{when.year:04d} {when:%H:%M:%S} {sign}{offset // 60:02d}{offset % 60:02d}"'
    return text.encode(), when


@st.composite
def append(draw: st.DrawFn) -> tuple[bytes, Expected]:
    box_wire, box = draw(mailbox())
    wire = draw(spelled("APPEND")).encode() + b" " + box_wire
    flags: tuple[str, ...] = ()
    if draw(st.booleans()):
        flags_wire, flags = draw(flag_list())
        wire += b" " + flags_wire
    when = None
    if draw(st.booleans()):
        when_wire, when = draw(date_time())
        wire += b" " + when_wire
    message = draw(st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"\x01")))
    wire += b" {%d%s}\r\n" % (len(message), draw(st.sampled_from([b"", b"+"]))) + message
    return wire, lambda tag: Append(tag, box, (AppendedMessage(message, flags, when),))


# FETCH ---------------------------------------------------------------------------------------------------

FETCH_ATTRIBUTES = ("ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
                    "BODY", "BODYSTRUCTURE", "UID", "MODSEQ")
MACROS = {"FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"), "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
          "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")}
field_names = st.text(alphabet="".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != ":"), min_size=1, max_size=12)


@st.composite
def body_section(draw: st.DrawFn) -> tuple[bytes, BodySection]:
    peek = draw(st.booleans())
    parts = tuple(draw(st.lists(st.integers(1, 2**31), max_size=3)))
    texts_allowed = [None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"] + (["MIME"] if parts else [])
    text = draw(st.sampled_from(texts_allowed))
    spec = ".".join(str(p) for p in parts)
    if text is not None:
        spec += ("." if parts else "") + draw(spelled(text))
    fields: tuple[str, ...] = ()
    wire = spec.encode()
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        fields = tuple(draw(st.lists(field_names, min_size=1, max_size=3)))
        wire += b" (" + b" ".join(draw(astring(name.encode())) for name in fields) + b")"
    partial = draw(st.none() | st.tuples(st.integers(0, MAX_NUMBER), st.integers(1, MAX_NUMBER)))
    wire = draw(spelled("BODY.PEEK" if peek else "BODY")).encode() + b"[" + wire + b"]"
    if partial is not None:
        wire += b"<%d.%d>" % partial
    return wire, BodySection(peek, parts, text, fields, partial)


@st.composite
def fetch_item(draw: st.DrawFn) -> tuple[bytes, BodySection | FetchAttribute]:
    if draw(st.booleans()):
        return draw(body_section())
    name = draw(st.sampled_from(FETCH_ATTRIBUTES))
    return draw(spelled(name)).encode(), FetchAttribute(name)


@st.composite
def fetch(draw: st.DrawFn) -> tuple[bytes, Expected]:
    uid = draw(st.booleans())
    set_wire, expected_set = draw(sequence_set())
    form = draw(st.sampled_from(["macro", "one", "list"]))
    if form == "macro":
        macro = draw(st.sampled_from(sorted(MACROS)))
        items_wire, items = draw(spelled(macro)).encode(), tuple(FetchAttribute(n) for n in MACROS[macro])
    elif form == "one":
        items_wire, item = draw(fetch_item())
        items = (item,)
    else:
        pairs = draw(st.lists(fetch_item(), min_size=1, max_size=4))
        items_wire, items = b"(" + b" ".join(w for w, _ in pairs) + b")", tuple(i for _, i in pairs)
    changed_since = draw(st.none() | st.integers(0, MAX_MODSEQ))
    wire = (draw(spelled("UID")).encode() + b" " if uid else b"") + draw(spelled("FETCH")).encode()
    wire += b" " + set_wire + b" " + items_wire
    if changed_since is not None:
        wire += b" (" + draw(spelled("CHANGEDSINCE")).encode() + b" %d)" % changed_since
    return wire, lambda tag: Fetch(tag, expected_set, items, uid=uid, changed_since=changed_since)


@st.composite
def store(draw: st.DrawFn) -> tuple[bytes, Expected]:
    uid, silent = draw(st.booleans()), draw(st.booleans())
    set_wire, expected_set = draw(sequence_set())
    mode = draw(st.sampled_from(list(StoreMode)))
    unchanged_since = draw(st.none() | st.integers(0, MAX_MODSEQ))
    wire = (draw(spelled("UID")).encode() + b" " if uid else b"") + draw(spelled("STORE")).encode() + b" " + set_wire
    if unchanged_since is not None:
        wire += b" (" + draw(spelled("UNCHANGEDSINCE")).encode() + b" %d)" % unchanged_since
    wire += b" " + mode.value.encode() + draw(spelled("FLAGS.SILENT" if silent else "FLAGS")).encode()
    if draw(st.booleans()):
        flags_wire, flags = draw(flag_list())
    else:
        pairs = draw(st.lists(flag(), min_size=1, max_size=4))
        flags_wire, flags = b" ".join(w for w, _ in pairs), tuple(f for _, f in pairs)
    wire += b" " + flags_wire
    return wire, lambda tag: Store(tag, expected_set, mode, flags, silent, uid, unchanged_since)


# SEARCH --------------------------------------------------------------------------------------------------

FLAG_KEYS = {"ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True), "DRAFT": ("\\Draft", True),
             "FLAGGED": ("\\Flagged", True), "RECENT": ("\\Recent", True), "SEEN": ("\\Seen", True),
             "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False), "UNDRAFT": ("\\Draft", False),
             "UNFLAGGED": ("\\Flagged", False), "UNSEEN": ("\\Seen", False), "OLD": ("\\Recent", False)}
DATE_KEYS = {"BEFORE": (DateRelation.BEFORE, False), "ON": (DateRelation.ON, False),
             "SINCE": (DateRelation.SINCE, False), "SENTBEFORE": (DateRelation.BEFORE, True),
             "SENTON": (DateRelation.ON, True), "SENTSINCE": (DateRelation.SINCE, True)}
search_texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10)


@st.composite
def search_leaf(draw: st.DrawFn) -> tuple[bytes, SearchKey]:
    kind = draw(st.sampled_from(["all", "flag", "new", "keyword", "header", "field", "text", "date", "size", "uid",
                                 "set", "modseq"]))
    if kind == "all":
        return draw(spelled("ALL")).encode(), AllKey()
    if kind == "flag":
        name = draw(st.sampled_from(sorted(FLAG_KEYS)))
        return draw(spelled(name)).encode(), FlagKey(*FLAG_KEYS[name])
    if kind == "new":
        return draw(spelled("NEW")).encode(), And((FlagKey("\\Recent", True), FlagKey("\\Seen", False)))
    if kind == "keyword":
        name, keyword = draw(st.sampled_from(["KEYWORD", "UNKEYWORD"])), draw(atoms)
        return draw(spelled(name)).encode() + b" " + keyword.encode(), FlagKey(keyword, present=name == "KEYWORD")
    if kind == "header":
        name, value = draw(st.sampled_from(["FROM", "TO", "CC", "BCC", "SUBJECT"])), draw(search_texts)
        return draw(spelled(name)).encode() + b" " + draw(astring(value.encode())), HeaderContains(name.lower(), value)
    if kind == "field":
        name, value = draw(field_names), draw(search_texts)
        wire = draw(spelled("HEADER")).encode() + b" " + draw(astring(name.encode())) + b" "
        return wire + draw(astring(value.encode())), HeaderContains(name.lower(), value)
    if kind == "text":
        name, value = draw(st.sampled_from(["BODY", "TEXT"])), draw(search_texts)
        return draw(spelled(name)).encode() + b" " + draw(astring(value.encode())), TextContains(value, name == "BODY")
    if kind == "date":
        name, day = draw(st.sampled_from(sorted(DATE_KEYS))), draw(st.dates(min_value=date(1000, 1, 1)))
        text = f"{day.day}-{draw(spelled(MONTHS[day.month - 1]))}-{day.year:04d}"
        text = draw(st.sampled_from([text, f'"{text}"']))
        kind_, sent = DATE_KEYS[name]
        return draw(spelled(name)).encode() + b" " + text.encode(), DateKey(kind_, day, sent)
    if kind == "size":
        name, size = draw(st.sampled_from(["LARGER", "SMALLER"])), draw(st.integers(0, MAX_NUMBER))
        return draw(spelled(name)).encode() + b" %d" % size, SizeKey(name == "LARGER", size)
    if kind in ("uid", "set"):
        set_wire, expected_set = draw(sequence_set())
        prefix = draw(spelled("UID")).encode() + b" " if kind == "uid" else b""
        return prefix + set_wire, SequenceKey(kind == "uid", expected_set)
    modseq = draw(st.integers(0, MAX_MODSEQ))
    entry = b""
    if draw(st.booleans()):
        entry = b'"/flags/\\\\Seen" ' + draw(spelled(draw(st.sampled_from(["PRIV", "SHARED", "ALL"])))).encode() + b" "
    return draw(spelled("MODSEQ")).encode() + b" " + entry + b"%d" % modseq, ModSeqKey(modseq)


def search_node(children: st.SearchStrategy[tuple[bytes, SearchKey]]) -> st.SearchStrategy[tuple[bytes, SearchKey]]:
    def negated(pair: tuple[bytes, SearchKey]) -> tuple[bytes, SearchKey]:
        return b"NOT " + pair[0], Not(pair[1])

    def either(pairs: tuple[tuple[bytes, SearchKey], tuple[bytes, SearchKey]]) -> tuple[bytes, SearchKey]:
        (left_wire, left), (right_wire, right) = pairs
        return b"OR " + left_wire + b" " + right_wire, Or(left, right)

    def group(pairs: list[tuple[bytes, SearchKey]]) -> tuple[bytes, SearchKey]:
        keys = tuple(key for _, key in pairs)
        return b"(" + b" ".join(w for w, _ in pairs) + b")", keys[0] if len(keys) == 1 else And(keys)

    return st.one_of(children.map(negated), st.tuples(children, children).map(either),
                     st.lists(children, min_size=1, max_size=3).map(group))


@st.composite
def search(draw: st.DrawFn) -> tuple[bytes, Expected]:
    uid = draw(st.booleans())
    charset = draw(st.sampled_from([None, "UTF-8", "US-ASCII"]))
    pairs = draw(st.lists(st.recursive(search_leaf(), search_node, max_leaves=8), min_size=1, max_size=3))
    keys = tuple(key for _, key in pairs)
    wire = (draw(spelled("UID")).encode() + b" " if uid else b"") + draw(spelled("SEARCH")).encode() + b" "
    if charset is not None:
        wire += draw(spelled("CHARSET")).encode() + b" " + draw(astring(draw(spelled(charset)).encode())) + b" "
    wire += b" ".join(w for w, _ in pairs)
    key = keys[0] if len(keys) == 1 else And(keys)
    return wire, lambda tag: Search(tag, key, charset, uid)


commands = st.one_of(login(), authenticate(), id_command(), one_mailbox(), select(), create(), rename(), status(),
                     copy_or_move(), uid_expunge(), append(), fetch(), store(), search())
tags = st.text(alphabet="".join(c for c in ATOM_CHARS if c != "+"), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(mailbox_names)
@example("ınbox")  # dotless i: upper() makes it "INBOX"
def test_mailbox_names_round_trip(name: str) -> None:
    """A Unicode mailbox name, in modified UTF-7, parses back to itself (INBOX in any ASCII case to INBOX)."""
    wire = encode_mailbox(name).encode("ascii")
    quoted = b'"' + wire.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    assert parse_command(b"a1 SELECT " + quoted + b"\r\n") == Select("a1", expected_mailbox(name))


@settings(max_examples=600, deadline=None)
@given(tags, commands)
def test_well_formed_commands_frame_and_parse_to_the_expected_object(tag: str, command: tuple[bytes, Expected]) -> None:
    body, expected = command
    wire = tag.encode() + b" " + body + b"\r\n"
    assert framed(wire, CommandFramer()) == [wire]
    assert parse_command(wire) == expected(tag)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(tags, commands), min_size=2, max_size=4))
def test_pipelined_commands_are_framed_one_by_one(batch: list[tuple[str, tuple[bytes, Expected]]]) -> None:
    """Commands sent back to back (LITERAL+ lets a client pipeline without waiting) come apart exactly."""
    wires = [tag.encode() + b" " + body + b"\r\n" for tag, (body, _) in batch]
    assert framed(b"".join(wires), CommandFramer()) == wires
