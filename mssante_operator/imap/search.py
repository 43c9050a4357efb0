"""SEARCH: does a message match a search key (RFC 3501 6.4.4, RFC 7162 MODSEQ, RFC 5032 OLDER/YOUNGER)?

Pure: a message is seen through ``Candidate`` (its place in the session's view, its stored
metadata, whether it is \\Recent for this session) and a lazily parsed ``MessageStructure``,
loaded only when a key needs the headers or the body: most searches (flags, UIDs, dates, sizes)
never read a message file.

String matching is case-insensitive (Unicode case folding) on decoded text, as clients expect;
dates compare calendar days only (INTERNALDATE in UTC, the Date: header in its own zone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime

from ..store.folders import MessageMeta
from .commands import (
    AgeKey,
    AllKey,
    And,
    DateKey,
    DateRelation,
    FlagKey,
    HeaderContains,
    ModSeqKey,
    Not,
    ObjectIdKey,
    Or,
    SavedDateKey,
    SearchKey,
    SequenceKey,
    SizeKey,
    TextContains,
)
from .message import MessageStructure
from .object_ids import email_id

RECENT = "\\Recent"


@dataclass
class Candidate:
    """One message of the selected folder, as a search sees it."""

    seq: int
    meta: MessageMeta
    recent: bool
    max_seq: int
    max_uid: int
    load: Callable[[], MessageStructure]
    now: datetime = field(default_factory=lambda: datetime.now(UTC))  # the SEARCH's time, one for all its messages
    _structure: MessageStructure | None = field(default=None, repr=False)

    @property
    def structure(self) -> MessageStructure:
        if self._structure is None:
            self._structure = self.load()
        return self._structure


def matches(key: SearchKey, message: Candidate) -> bool:
    """Whether ``message`` satisfies ``key``."""
    match key:
        case AllKey():
            return True
        case And(keys):
            return all(matches(k, message) for k in keys)
        case Or(left, right):
            return matches(left, message) or matches(right, message)
        case Not(inner):
            return not matches(inner, message)
        case FlagKey(name, present):
            has = message.recent if name == RECENT else _has_flag(message.meta.flags, name)
            return has == present
        case SequenceKey(uid, sequence_set):
            if uid:
                return sequence_set.contains(message.meta.uid, message.max_uid)
            return sequence_set.contains(message.seq, message.max_seq)
        case AgeKey(older, seconds):
            age = (message.now - message.meta.internaldate).total_seconds()
            return age >= seconds if older else age < seconds
        case SavedDateKey(kind, day):
            saved = message.meta.saved_at
            return saved is not None and _compare(saved.astimezone(UTC).date(), kind, day)
        case ObjectIdKey(kind, value):  # no threads are kept: THREADID is NIL and matches nothing
            return kind == "EMAILID" and email_id(message.meta.blob_key) == value
        case SizeKey(larger, size):
            return message.meta.size > size if larger else message.meta.size < size
        case ModSeqKey(modseq):
            return message.meta.modseq >= modseq
        case DateKey(kind, day, sent):
            found = _sent_date(message) if sent else message.meta.internaldate.date()
            return found is not None and _compare(found, kind, day)
        case HeaderContains(name, value):
            return _header_contains(message.structure, name, value)
        case TextContains(value, body_only):
            return _text_contains(message.structure, value, body_only)
    raise TypeError(f"unknown search key {key!r}")


def needs_content(key: SearchKey) -> bool:
    """Whether evaluating ``key`` may read the message file (to decide how to batch the work)."""
    match key:
        case HeaderContains() | TextContains() | DateKey(sent=True):
            return True
        case And(keys):
            return any(needs_content(k) for k in keys)
        case Or(left, right):
            return needs_content(left) or needs_content(right)
        case Not(inner):
            return needs_content(inner)
    return False


def _compare(found: date, kind: DateRelation, day: date) -> bool:
    if kind is DateRelation.BEFORE:
        return found < day
    if kind is DateRelation.ON:
        return found == day
    return found >= day


def _sent_date(message: Candidate) -> date | None:
    values = message.structure.header_values("date")
    if not values:
        return None
    try:
        sent: datetime = parsedate_to_datetime(values[0])
    except (TypeError, ValueError, IndexError):
        return None
    return sent.date()


def _fold(text: str) -> str:
    return text.casefold()


_ADDRESS_KEYS = frozenset({"from", "to", "cc", "bcc"})


def _header_contains(structure: MessageStructure, name: str, value: str) -> bool:
    """HEADER and FROM/TO/CC/BCC: a substring of the decoded field, or, for the address keys, of an
    address of the envelope field (RFC 3501 6.4.4), which a comment in the header would hide."""
    values = structure.header_values(name)
    if not values:
        return False
    needle = _fold(value)
    if any(needle in _fold(v) for v in values):
        return True
    return name.lower() in _ADDRESS_KEYS and any(needle in _fold(a) for a in structure.addresses(name))


def _text_contains(structure: MessageStructure, value: str, body_only: bool) -> bool:
    needle = _fold(value)
    if needle in _fold(structure.body_text()):
        return True
    if body_only:
        return False
    return needle in _fold(structure.header_bytes().decode("utf-8", "replace"))


def _has_flag(flags: frozenset[str], name: str) -> bool:
    """Flags are atoms: KEYWORD foo finds FOO (RFC 3501 9 note 1)."""
    if name in flags:
        return True
    lowered = name.lower()
    return any(flag.lower() == lowered for flag in flags)
