"""The per-process index of folders' UIDs, unseen UIDs and keywords: what SELECT needs, without reading
every message of the folder each time (as Dovecot's index files spare it).

An entry holds, for the folder counters (UIDNEXT, HIGHESTMODSEQ) it was read at, the folder's UIDs,
the UIDs without \\Seen and the keywords ever seen in it (announcing a keyword no message carries any
more is allowed). It is brought up to date from the store by two indexed range reads: the messages
with a MODSEQ above the entry's (new ones and flag changes: every change takes a new MODSEQ) and the
expunge log above it (``expunged_messages``, written by the write unit with every removal). Both can
see changes newer than the counters read first: applying a change twice is harmless, so the entry
keeps the counters it was read at, never newer ones, and nothing is missed across processes or nodes.

Entries are never changed once published: an update builds a new one (a copy of two integer arrays),
so the sessions' threads need no lock to read them.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

SEEN = "\\Seen"


@dataclass(frozen=True)
class FolderIndex:
    """A folder's UIDs (ascending), its UIDs without \\Seen (ascending) and its keywords, at
    (``uidvalidity``, ``uidnext``, ``highestmodseq``)."""

    uidvalidity: int
    uidnext: int
    highestmodseq: int
    uids: array[int]
    unseen: array[int]
    keywords: frozenset[str]

    @property
    def first_unseen(self) -> int | None:
        return self.unseen[0] if self.unseen else None

    @classmethod
    def build(cls, counters: tuple[int, int, int], rows: Iterable[tuple[int, str]]) -> FolderIndex:
        """An entry from every (uid, flags) of the folder, in UID order."""
        uids, unseen, keywords = array("q"), array("q"), set()
        for uid, text in rows:
            uids.append(uid)
            flags = text.split()
            if SEEN not in flags:
                unseen.append(uid)
            keywords.update(flag for flag in flags if not flag.startswith("\\"))
        return cls(*counters, uids, unseen, frozenset(keywords))

    def updated(self, counters: tuple[int, int, int], changed: Iterable[tuple[int, str]],
                expunged: Iterable[int]) -> FolderIndex:
        """A new entry: this one with the messages changed (new or with new flags) and expunged since
        its MODSEQ applied, at ``counters`` (read before the changes)."""
        uids, unseen, keywords = self.uids[:], self.unseen[:], set(self.keywords)
        for uid, text in changed:
            flags = text.split()
            _insert(uids, uid)
            (_remove if SEEN in flags else _insert)(unseen, uid)
            keywords.update(flag for flag in flags if not flag.startswith("\\"))
        gone = set(expunged)
        if gone:
            uids, unseen = _without(uids, gone), _without(unseen, gone)
        return FolderIndex(*counters, uids, unseen, frozenset(keywords))

    @property
    def size(self) -> int:
        return len(self.uids) + len(self.unseen)


def _insert(ordered: array[int], uid: int) -> None:
    if not ordered or uid > ordered[-1]:
        ordered.append(uid)  # the usual case: a new message
        return
    at = bisect.bisect_left(ordered, uid)
    if at == len(ordered) or ordered[at] != uid:
        ordered.insert(at, uid)


def _remove(ordered: array[int], uid: int) -> None:
    at = bisect.bisect_left(ordered, uid)
    if at < len(ordered) and ordered[at] == uid:
        del ordered[at]


def _without(ordered: array[int], gone: set[int]) -> array[int]:
    if len(gone) < 32:
        for uid in gone:
            _remove(ordered, uid)
        return ordered
    return array("q", (uid for uid in ordered if uid not in gone))


class FolderIndexes:
    """The entries of one process, least recently used first, up to ``limit`` UIDs in all."""

    def __init__(self, limit: int = 2_000_000) -> None:
        self._entries: OrderedDict[int, FolderIndex] = OrderedDict()
        self._lock = threading.Lock()
        self._size = 0
        self._limit = limit

    def get(self, folder_id: int) -> FolderIndex | None:
        with self._lock:
            entry = self._entries.get(folder_id)
            if entry is not None:
                self._entries.move_to_end(folder_id)
            return entry

    def put(self, folder_id: int, entry: FolderIndex) -> None:
        """Keep ``entry`` unless a newer one was published meanwhile (by another session's thread)."""
        with self._lock:
            current = self._entries.get(folder_id)
            if current is not None:
                if current.uidvalidity == entry.uidvalidity and \
                        (current.uidnext, current.highestmodseq) > (entry.uidnext, entry.highestmodseq):
                    return
                self._size -= current.size
            self._entries[folder_id] = entry
            self._entries.move_to_end(folder_id)
            self._size += entry.size
            while self._size > self._limit and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                self._size -= dropped.size

    def drop(self, folder_id: int) -> None:
        with self._lock:
            entry = self._entries.pop(folder_id, None)
            if entry is not None:
                self._size -= entry.size
