"""The grammar of every command but FETCH, STORE and SEARCH, and :func:`parse_command`, the dispatch.

RFC 3501 section 9 with the extensions' additions (LITERAL+, SASL-IR, ID, ENABLE, UIDPLUS, MOVE,
SPECIAL-USE, CONDSTORE, APPENDLIMIT), read strictly: one SP between arguments, no trailing space.
Deliberate leniencies, each sent by real clients: 8-bit UTF-8 in quoted strings, single-digit days in
APPEND date-times, ``CHANGEDSINCE 0``, an empty ``ID ()`` list, and search strings decoded as UTF-8
whatever the CHARSET (US-ASCII is a subset).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from ..commands import (
    Append,
    AppendedMessage,
    Authenticate,
    Capability,
    Check,
    Close,
    Command,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    Rename,
    Select,
    StartTLS,
    Status,
    Subscribe,
    Unselect,
    Unsubscribe,
)
from .errors import ParseError
from .fetch import parse_fetch, parse_store
from .lexer import BASE64, SPECIAL_USES, TAG, Reader
from .search import parse_search


def parse_command(data: bytes) -> Command:
    """Parse one complete command (as returned by :class:`CommandFramer`; the final CRLF is optional)."""
    reader = Reader(data)
    if reader.at_end():
        raise ParseError(None, "Empty command line")
    tag = reader.take(TAG)
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


def _bare(cls: Callable[[str], Command]) -> Callable[[Reader, str, bool], Command]:
    """A handler for a command without arguments."""
    return lambda _reader, tag, _uid: cls(tag)


def _authenticate(r: Reader, tag: str, _uid: bool) -> Command:
    r.sp("authentication mechanism")
    mechanism = r.keyword("authentication mechanism")
    if not r.optional_sp():
        return Authenticate(tag, mechanism)
    token = r.take(BASE64)
    if token is None:
        raise r.expected("initial response")
    if token == b"=":
        return Authenticate(tag, mechanism, b"")
    try:
        return Authenticate(tag, mechanism, base64.b64decode(token, validate=True))
    except binascii.Error:
        raise r.fail("Initial response is not valid base64") from None


def _login(r: Reader, tag: str, _uid: bool) -> Command:
    r.sp("user name")
    username = r.text("user name")
    r.sp("password")
    return Login(tag, username, r.text("password"))


def _id(r: Reader, tag: str, _uid: bool) -> Command:
    r.sp("ID parameters")
    if r.nil():
        return Id(tag, None)

    def pair() -> tuple[str, str | None]:
        key = r.utf8(r.string("ID field name"), "ID field name")
        r.sp("ID field value")
        value = r.nstring("ID field value")
        return key, None if value is None else r.utf8(value, "ID field value")

    return Id(tag, tuple(r.items(pair, "ID parameter", allow_empty=True)))


def _enable(r: Reader, tag: str, _uid: bool) -> Command:
    r.sp("capability")
    capabilities = [r.keyword("capability")]
    while r.optional_sp():
        capabilities.append(r.keyword("capability"))
    return Enable(tag, tuple(capabilities))


def _select(cls: type[Select]) -> Callable[[Reader, str, bool], Command]:
    """SELECT and EXAMINE: mailbox then the RFC 4466 select-params, of which only CONDSTORE exists here."""

    def handler(r: Reader, tag: str, _uid: bool) -> Command:
        r.sp("mailbox name")
        mailbox = r.mailbox()
        if not r.optional_sp():
            return cls(tag, mailbox)
        for param in r.items(lambda: r.keyword("select parameter"), "select parameter"):
            if param != "CONDSTORE":
                raise r.fail(f"Unsupported {cls.name} parameter {param}")
        return cls(tag, mailbox, condstore=True)

    return handler


def _create(r: Reader, tag: str, _uid: bool) -> Command:
    r.sp("mailbox name")
    mailbox = r.mailbox()
    uses: list[str] = []
    if r.optional_sp():
        for attrs in r.items(lambda: _create_param(r), "create parameter"):
            uses.extend(attrs)
    return Create(tag, mailbox, tuple(uses))


def _create_param(r: Reader) -> list[str]:
    """``USE (attr...)`` (RFC 6154), the only create-param supported."""
    param = r.keyword("create parameter")
    if param != "USE":
        raise r.fail(f"Unsupported CREATE parameter {param}")
    r.sp("special-use attributes")
    return r.items(lambda: _use_attr(r), "special-use attribute", allow_empty=True)


def _use_attr(r: Reader) -> str:
    """``use-attr``: a known attribute in canonical spelling, or an extension ``\\Name`` kept as sent."""
    r.expect(b"\\", "special-use attribute")
    attr = "\\" + r.atom("special-use attribute")
    return SPECIAL_USES.get(attr.upper(), attr)


def _one_mailbox(cls: Callable[[str, str], Command]) -> Callable[[Reader, str, bool], Command]:
    """DELETE, SUBSCRIBE, UNSUBSCRIBE: a single mailbox argument."""

    def handler(r: Reader, tag: str, _uid: bool) -> Command:
        r.sp("mailbox name")
        return cls(tag, r.mailbox())

    return handler


def _rename(r: Reader, tag: str, _uid: bool) -> Command:
    r.sp("mailbox name")
    old = r.mailbox()
    r.sp("new mailbox name")
    return Rename(tag, old, r.mailbox())


_LIST_SELECTION = {"SPECIAL-USE"}
_LIST_RETURN = {"SPECIAL-USE", "CHILDREN"}


def _list(r: Reader, tag: str, _uid: bool) -> Command:
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


def _options(r: Reader, what: str, known: set[str]) -> list[str]:
    """A possibly empty list of option keywords, each one of ``known``."""
    options = r.items(lambda: r.keyword(what), what, allow_empty=True)
    for option in options:
        if option not in known:
            raise r.fail(f"Unsupported {what} {option}")
    return options


def _lsub(r: Reader, tag: str, _uid: bool) -> Command:
    r.sp("reference name")
    reference = r.mailbox_text(r.astring("reference name"))
    r.sp("mailbox pattern")
    return Lsub(tag, reference, r.list_mailbox())


_STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE", "APPENDLIMIT",
                 "MAILBOXID"}


def _status(r: Reader, tag: str, _uid: bool) -> Command:
    r.sp("mailbox name")
    mailbox = r.mailbox()
    r.sp("status items")
    items = r.items(lambda: r.keyword("status item"), "status item")
    for item in items:
        if item not in _STATUS_ITEMS:
            raise r.fail(f"Unknown status item {item}")
    return Status(tag, mailbox, tuple(items))


def _append(r: Reader, tag: str, _uid: bool) -> Command:
    r.sp("mailbox name")
    mailbox = r.mailbox()
    messages = []
    while True:  # MULTIAPPEND (RFC 3502): more messages after SP
        r.sp("message literal")
        messages.append(_appended_message(r))
        if r.at_end():
            return Append(tag, mailbox, tuple(messages))


def _appended_message(r: Reader) -> AppendedMessage:
    """[flag-list SP] [date-time SP] literal."""
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
    return AppendedMessage(r.literal(), flags, internal_date)


def _expunge(r: Reader, tag: str, uid: bool) -> Command:
    if not uid:
        return Expunge(tag)
    r.sp("UID set")
    return Expunge(tag, uid=True, sequence_set=r.sequence_set())


def _copy_or_move(cls: type[Copy] | type[Move]) -> Callable[[Reader, str, bool], Command]:
    """COPY and MOVE: sequence set then destination mailbox."""

    def handler(r: Reader, tag: str, uid: bool) -> Command:
        r.sp("sequence set")
        sequence_set = r.sequence_set()
        r.sp("mailbox name")
        return cls(tag, sequence_set, r.mailbox(), uid=uid)

    return handler


_COMMANDS: dict[str, Callable[[Reader, str, bool], Command]] = {
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
    "SEARCH": parse_search,
    "FETCH": parse_fetch,
    "STORE": parse_store,
    "COPY": _copy_or_move(Copy),
    "MOVE": _copy_or_move(Move),
    "IDLE": _bare(Idle),
}
_UID_COMMANDS = {"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE"}
