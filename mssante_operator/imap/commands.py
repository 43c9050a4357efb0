"""The parsed IMAP commands: small frozen dataclasses the session executes (the AST).

Values are already checked and normalised by the parser: mailbox names are Unicode (modified UTF-7
decoded, ``INBOX`` upper-cased), system flags are spelled ``\\Seen``, keywords, capability names and
options are as the grammar allows. Every command has ``tag`` and a class-level ``name`` (for the
``OK <name> completed`` reply); the ones the UID prefix applies to have ``uid``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import ClassVar

from .sequence import SequenceSet

_ATOM = re.compile(r"[!#$&'+-\[^-z|}~]+")
"""Header field names that can be echoed unquoted (ATOM-CHARs)."""

# --------------------------------------------------------------------------- fetch items

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
"""The flags of RFC 3501 2.3.2 a client may set (\\Recent is the server's)."""


@dataclass(frozen=True)
class FetchAttribute:
    """A plain FETCH item: ENVELOPE, FLAGS, INTERNALDATE, RFC822[.HEADER/.SIZE/.TEXT], BODY[STRUCTURE], UID, MODSEQ."""

    name: str

    def label(self) -> str:
        """The item name in the FETCH response."""
        return self.name


@dataclass(frozen=True)
class BodySection:
    """``BODY[section]<origin.count>`` or ``BODY.PEEK[...]``.

    ``text`` is None, HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME; ``fields`` holds the
    header names of HEADER.FIELDS[.NOT] as the client spelled them; ``partial`` is ``(origin, count)``.
    """

    peek: bool = False
    parts: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None

    def section(self) -> str:
        """The section spec between the brackets, e.g. ``1.2.HEADER.FIELDS (FROM TO)``."""
        spec = ".".join(str(p) for p in self.parts)
        if self.text is not None:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(_astring(f) for f in self.fields) + ")"
        return spec

    def label(self) -> str:
        """The response label: never PEEK, and only the origin of a partial (RFC 3501 section 7.4.2)."""
        origin = f"<{self.partial[0]}>" if self.partial is not None else ""
        return f"BODY[{self.section()}]{origin}"


FetchItem = FetchAttribute | BodySection


def _astring(value: str) -> str:
    """A header field name echoed as an atom when possible, otherwise quoted."""
    if _ATOM.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- search keys


class DateRelation(StrEnum):
    """How a SEARCH date key compares: BEFORE, ON or SINCE (dates only, time and zone ignored)."""

    BEFORE = "before"
    ON = "on"
    SINCE = "since"


@dataclass(frozen=True)
class AllKey:
    """ALL: every message."""


@dataclass(frozen=True)
class FlagKey:
    """A flag is set (``present``) or not: ANSWERED/UNANSWERED..., KEYWORD/UNKEYWORD, RECENT/OLD."""

    name: str
    present: bool = True


@dataclass(frozen=True)
class HeaderContains:
    """FROM, TO, CC, BCC, SUBJECT or HEADER: ``field`` (lower-cased) contains ``value``, case-insensitively.

    An empty ``value`` matches every message that has the field (RFC 3501 section 6.4.4).
    """

    field: str
    value: str


@dataclass(frozen=True)
class TextContains:
    """BODY (``body_only``) or TEXT (header and body) contains ``value``."""

    value: str
    body_only: bool


@dataclass(frozen=True)
class DateKey:
    """BEFORE/ON/SINCE on the internal date, or SENTBEFORE/SENTON/SENTSINCE (``sent``) on the Date: header."""

    kind: DateRelation
    date: date
    sent: bool = False


@dataclass(frozen=True)
class AgeKey:
    """OLDER (``older``) or YOUNGER ``seconds`` (RFC 5032 WITHIN), on the internal date against the time of
    the SEARCH: OLDER n matches a message received n seconds ago or earlier, YOUNGER n one received later
    (each message matches exactly one of the two)."""

    older: bool
    seconds: int


@dataclass(frozen=True)
class SavedDateKey:
    """SAVEDBEFORE/SAVEDON/SAVEDSINCE (RFC 8514): on the day the message was saved into its folder (UTC)."""

    kind: DateRelation
    date: date


@dataclass(frozen=True)
class ObjectIdKey:
    """EMAILID or THREADID ``value`` (RFC 8474 6)."""

    kind: str
    value: str


@dataclass(frozen=True)
class SizeKey:
    """LARGER (``larger``) or SMALLER than ``size`` octets (RFC822.SIZE), strictly."""

    larger: bool
    size: int


@dataclass(frozen=True)
class SequenceKey:
    """A bare sequence set, or ``UID set`` (``uid``)."""

    uid: bool
    sequence_set: SequenceSet


@dataclass(frozen=True)
class ModSeqKey:
    """MODSEQ n (RFC 7162): the message's mod-sequence is at least ``modseq``.

    The optional entry name and type (per-flag mod-sequences) are parsed and dropped: this server
    keeps one mod-sequence per message, which RFC 7162 section 3.1.5 allows.
    """

    modseq: int


@dataclass(frozen=True)
class Not:
    """NOT key."""

    key: SearchKey


@dataclass(frozen=True)
class Or:
    """OR key1 key2."""

    left: SearchKey
    right: SearchKey


@dataclass(frozen=True)
class And:
    """All of ``keys``: consecutive keys and parenthesised groups of more than one key."""

    keys: tuple[SearchKey, ...]


SearchKey = (
    AllKey | FlagKey | HeaderContains | TextContains | DateKey | AgeKey | SizeKey | SequenceKey | ModSeqKey
    | ObjectIdKey | SavedDateKey | Not | Or | And
)


# --------------------------------------------------------------------------- commands


class UnreadableName(str):
    """A mailbox name or LIST pattern that is well-formed IMAP but not valid modified UTF-7, as sent.

    The command is well-formed, so it is not BAD: no mailbox can have such a name, so a command
    naming one gets NO and a LIST or LSUB pattern matches nothing (as Dovecot answers)."""


@dataclass(frozen=True)
class Command:
    """Every command: its tag; ``name`` is the upper-case command name."""

    tag: str
    name: ClassVar[str] = ""

    def names_unreadable_mailbox(self) -> bool:
        """Whether a mailbox argument is an :class:`UnreadableName`."""
        return any(isinstance(value, UnreadableName) for value in vars(self).values())


@dataclass(frozen=True)
class Capability(Command):
    """CAPABILITY."""

    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True)
class Noop(Command):
    """NOOP."""

    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True)
class Logout(Command):
    """LOGOUT."""

    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True)
class StartTLS(Command):
    """STARTTLS."""

    name: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True)
class Authenticate(Command):
    """AUTHENTICATE mechanism [initial-response] (SASL-IR, RFC 4959); ``b""`` is the ``=`` empty response."""

    mechanism: str
    initial_response: bytes | None = field(default=None, repr=False)
    name: ClassVar[str] = "AUTHENTICATE"


@dataclass(frozen=True)
class Login(Command):
    """LOGIN user password (the password is kept out of the repr, hence out of logs)."""

    username: str
    password: str = field(repr=False)
    name: ClassVar[str] = "LOGIN"


@dataclass(frozen=True)
class Id(Command):
    """ID (RFC 2971): ``None`` for NIL, else the field/value pairs in order (values may be None)."""

    parameters: tuple[tuple[str, str | None], ...] | None
    name: ClassVar[str] = "ID"


@dataclass(frozen=True)
class Enable(Command):
    """ENABLE capabilities (RFC 5161), upper-cased."""

    capabilities: tuple[str, ...]
    name: ClassVar[str] = "ENABLE"


@dataclass(frozen=True)
class Select(Command):
    """SELECT mailbox [(CONDSTORE)]; EXAMINE is the read-only subclass, so ``case Select()`` serves both."""

    mailbox: str
    condstore: bool = False
    name: ClassVar[str] = "SELECT"
    readonly: ClassVar[bool] = False


@dataclass(frozen=True)
class Examine(Select):
    """EXAMINE mailbox [(CONDSTORE)]."""

    name: ClassVar[str] = "EXAMINE"
    readonly: ClassVar[bool] = True


@dataclass(frozen=True)
class Create(Command):
    """CREATE mailbox [(USE (\\Sent ...))] (RFC 6154); unknown use-attrs are kept for a NO [USE-ATTR]."""

    mailbox: str
    special_use: tuple[str, ...] = ()
    name: ClassVar[str] = "CREATE"


@dataclass(frozen=True)
class Delete(Command):
    """DELETE mailbox."""

    mailbox: str
    name: ClassVar[str] = "DELETE"


@dataclass(frozen=True)
class Rename(Command):
    """RENAME mailbox new-name."""

    mailbox: str
    new_name: str
    name: ClassVar[str] = "RENAME"


@dataclass(frozen=True)
class Subscribe(Command):
    """SUBSCRIBE mailbox."""

    mailbox: str
    name: ClassVar[str] = "SUBSCRIBE"


@dataclass(frozen=True)
class Unsubscribe(Command):
    """UNSUBSCRIBE mailbox."""

    mailbox: str
    name: ClassVar[str] = "UNSUBSCRIBE"


@dataclass(frozen=True)
class List(Command):
    """LIST, basic or the RFC 5258 subset: selection (SPECIAL-USE), RETURN (SPECIAL-USE CHILDREN), patterns.

    ``patterns`` holds one pattern for the basic form; the options are upper-cased and de-duplicated.
    ``extended`` tells whether any extended syntax was used (RFC 5258 section 3).
    """

    reference: str
    patterns: tuple[str, ...]
    selection_options: frozenset[str] = frozenset()
    return_options: frozenset[str] = frozenset()
    extended: bool = False
    name: ClassVar[str] = "LIST"


@dataclass(frozen=True)
class Lsub(Command):
    """LSUB reference pattern."""

    reference: str
    pattern: str
    name: ClassVar[str] = "LSUB"


@dataclass(frozen=True)
class Namespace(Command):
    """NAMESPACE (RFC 2342)."""

    name: ClassVar[str] = "NAMESPACE"


@dataclass(frozen=True)
class Status(Command):
    """STATUS mailbox (items): MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE APPENDLIMIT."""

    mailbox: str
    items: tuple[str, ...]
    name: ClassVar[str] = "STATUS"


@dataclass(frozen=True)
class AppendedMessage:
    """One message of an APPEND: its bytes, flags and internal date (timezone-aware, or None: now)."""

    message: bytes = field(repr=False)
    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None


@dataclass(frozen=True)
class Append(Command):
    """APPEND mailbox [flags] [date-time] literal, repeated for MULTIAPPEND (RFC 3502): every message or none."""

    mailbox: str
    messages: tuple[AppendedMessage, ...]
    name: ClassVar[str] = "APPEND"


@dataclass(frozen=True)
class Check(Command):
    """CHECK."""

    name: ClassVar[str] = "CHECK"


@dataclass(frozen=True)
class Close(Command):
    """CLOSE."""

    name: ClassVar[str] = "CLOSE"


@dataclass(frozen=True)
class Unselect(Command):
    """UNSELECT (RFC 3691)."""

    name: ClassVar[str] = "UNSELECT"


@dataclass(frozen=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE set (RFC 4315): ``sequence_set`` is given only with ``uid``."""

    uid: bool = False
    sequence_set: SequenceSet | None = None
    name: ClassVar[str] = "EXPUNGE"


@dataclass(frozen=True)
class Search(Command):
    """[UID] SEARCH [RETURN (options)] [CHARSET c] keys; ``charset`` is "UTF-8", "US-ASCII" or None; strings are
    decoded. ``returns``: None for a plain SEARCH, else the ESEARCH result options asked (RFC 4731: MIN, MAX,
    ALL, COUNT; ``RETURN ()`` means ALL)."""

    key: SearchKey
    charset: str | None = None
    uid: bool = False
    returns: tuple[str, ...] | None = None
    name: ClassVar[str] = "SEARCH"


@dataclass(frozen=True)
class Fetch(Command):
    """[UID] FETCH set items [(CHANGEDSINCE n)]; macros are expanded into ``items``."""

    sequence_set: SequenceSet
    items: tuple[FetchItem, ...]
    uid: bool = False
    changed_since: int | None = None
    name: ClassVar[str] = "FETCH"

    def response_items(self) -> tuple[FetchItem, ...]:
        """``items`` plus the implied ones: UID for UID FETCH (RFC 3501 6.4.8), MODSEQ with CHANGEDSINCE (RFC 7162)."""
        items = self.items
        if self.changed_since is not None and FetchAttribute("MODSEQ") not in items:
            items = (*items, FetchAttribute("MODSEQ"))
        if self.uid and FetchAttribute("UID") not in items:
            items = (FetchAttribute("UID"), *items)
        return items


class StoreMode(StrEnum):
    """FLAGS replaces, +FLAGS adds, -FLAGS removes."""

    REPLACE = ""
    ADD = "+"
    REMOVE = "-"


@dataclass(frozen=True)
class Store(Command):
    """[UID] STORE set [(UNCHANGEDSINCE n)] (+|-)FLAGS[.SILENT] flags."""

    sequence_set: SequenceSet
    mode: StoreMode
    flags: tuple[str, ...]
    silent: bool = False
    uid: bool = False
    unchanged_since: int | None = None
    name: ClassVar[str] = "STORE"


@dataclass(frozen=True)
class Copy(Command):
    """[UID] COPY set mailbox."""

    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False
    name: ClassVar[str] = "COPY"


@dataclass(frozen=True)
class Move(Command):
    """[UID] MOVE set mailbox (RFC 6851)."""

    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False
    name: ClassVar[str] = "MOVE"


@dataclass(frozen=True)
class Idle(Command):
    """IDLE (RFC 2177): the session waits for the DONE line (see ``parser.is_done_line``)."""

    name: ClassVar[str] = "IDLE"
