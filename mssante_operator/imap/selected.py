"""The selected folder as one session sees it: message sequence numbers, flags, \\Recent, and the
untagged updates other sessions' changes call for.

IMAP numbers messages 1..n in the session's own view; that view only changes at moments the RFC
allows. ``refresh`` compares the store with the view and returns what to announce: new messages
(EXISTS, RECENT), flag changes (FETCH FLAGS), and expunges (EXPUNGE), the latter held back while
a FETCH, STORE or SEARCH by sequence number runs (RFC 3501 7.4.1), because the client would
otherwise misread the numbers it just sent.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..store.folders import Folder, MessageMeta
from .commands import SYSTEM_FLAGS


@dataclass
class Updates:
    """Untagged data to send: expunged sequence numbers (in sending order), EXISTS/RECENT counts,
    and messages whose flags changed (sequence number, meta)."""

    expunged: list[int] = field(default_factory=list)
    new_keywords: bool = False  # a keyword the client has not been told of: send FLAGS first
    exists: int | None = None
    recent: int | None = None
    flags: list[tuple[int, MessageMeta]] = field(default_factory=list)


class SelectedFolder:
    """One session's view of one folder: its UIDs in sequence order, not the messages themselves.

    Metas (flags, sizes, dates) are read from the store by each command for the messages it names,
    so a SELECT of a 30,000-message folder costs a list of integers (8 bytes each) and an idle
    session holds almost nothing.
    """

    def __init__(self, folder: Folder, readonly: bool, uids: Iterable[int], first_recent_uid: int, *,
                 condstore: bool = False, keywords: Iterable[str] = (), first_unseen: int | None = None) -> None:
        self.folder = folder
        self.readonly = readonly
        self.condstore = condstore
        # A copy (of the shared index's array: a memory copy, not a loop): this view changes on its own.
        self.uids = uids[:] if isinstance(uids, array) else array("q", uids)
        self.first_unseen = first_unseen  # at SELECT: its UID, for [UNSEEN n]
        self.recent: set[int] = {uid for uid in self.uids[bisect.bisect_left(self.uids, first_recent_uid):]}
        self.uidnext = max(folder.uidnext, self.max_uid + 1)
        self.highestmodseq = folder.highestmodseq
        self._pending_expunges: set[int] = set()
        self._own: dict[int, int] = {}  # our own flag changes not yet seen by a refresh: UID -> MODSEQ
        self._keywords: dict[str, str] = {}  # lower case -> as first seen: what FLAGS has announced
        self._learn(keywords)

    @property
    def flags(self) -> list[str]:
        """The FLAGS response's list: the system flags, then every keyword announced so far."""
        return [*SYSTEM_FLAGS, *sorted(self._keywords.values())]

    def _learn(self, flags: Iterable[str]) -> bool:
        new = False
        for flag in flags:
            if not flag.startswith("\\") and flag.lower() not in self._keywords:
                self._keywords[flag.lower()] = flag
                new = True
        return new

    def learn_keywords(self, metas: Iterable[MessageMeta]) -> bool:
        """Add the keywords these messages carry; True when one is new (RFC 3501 7.2.6: the client
        must get a FLAGS response naming a keyword before a FETCH that shows it)."""
        return self._learn(flag for meta in metas for flag in meta.flags)

    def remember(self, metas: Iterable[MessageMeta]) -> None:
        """Our own flag changes, already reported to the client: the next refresh must not repeat them."""
        for meta in metas:
            self._own[meta.uid] = meta.modseq

    def forget(self, uids: Iterable[int]) -> list[int]:
        """Drop expunged messages; returns their sequence numbers, highest first (the EXPUNGE order)."""
        gone = set(uids)
        seqs = sorted((seq for uid in gone if (seq := self.seq_of(uid)) is not None), reverse=True)
        for seq in seqs:
            del self.uids[seq - 1]
        self.recent -= gone
        self._pending_expunges -= gone
        return seqs

    @property
    def has_pending_expunges(self) -> bool:
        """Expunges seen in the store but not yet announced (held back during FETCH/STORE/SEARCH)."""
        return bool(self._pending_expunges)

    def count_after(self, changed: Iterable[MessageMeta]) -> int:
        """How many messages the folder holds if, besides these changes, nothing new was expunged."""
        max_uid = self.max_uid
        return self.exists - len(self._pending_expunges) + sum(1 for meta in changed if meta.uid > max_uid)

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def max_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def seq_of(self, uid: int) -> int | None:
        index = bisect.bisect_left(self.uids, uid)
        return index + 1 if index < len(self.uids) and self.uids[index] == uid else None

    def uid_of(self, seq: int) -> int:
        return self.uids[seq - 1]

    def next_uid(self, uidnext: int, changed: Iterable[MessageMeta]) -> int:
        """The UIDNEXT of the view once ``changed`` is applied: every message below it has been read
        (``uidnext`` is the folder's, read before ``changed``), so \\Recent may be claimed up to it."""
        return max(self.uidnext, uidnext, *(meta.uid + 1 for meta in changed))

    def apply(self, current_uids: Sequence[int] | None, changed: list[MessageMeta], *, expunges_allowed: bool,
              recent: tuple[int, int] | None = None, highestmodseq: int | None = None) -> Updates:
        """Bring the view up to date with the store and say what to announce.

        ``current_uids``: every UID in the folder now, or None when the caller knows nothing was
        expunged; ``changed``: metas with a MODSEQ above the view's; ``recent``: the UIDs [first, to)
        that are \\Recent for this session, ``to`` being :meth:`next_uid`, when new messages came.
        """
        updates = Updates(new_keywords=self.learn_keywords(changed))
        if current_uids is not None:
            present = set(current_uids)
            self._pending_expunges |= {uid for uid in self.uids if uid not in present}
        if expunges_allowed and self._pending_expunges:
            # Announce from the highest sequence number down: each EXPUNGE shifts only later numbers.
            updates.expunged = self.forget(self._pending_expunges)
        max_uid = self.max_uid
        new = sorted((m for m in changed if m.uid > max_uid), key=lambda m: m.uid)
        for meta in sorted(changed, key=lambda m: m.uid):
            if meta.uid > max_uid or meta.uid in self._pending_expunges or self._own.get(meta.uid) == meta.modseq:
                continue
            seq = self.seq_of(meta.uid)
            if seq is not None:
                updates.flags.append((seq, meta))
        self._own.clear()
        if new:
            for meta in new:
                self.uids.append(meta.uid)
                if recent is not None and recent[0] <= meta.uid < recent[1]:
                    self.recent.add(meta.uid)
            updates.exists = self.exists
            updates.recent = len(self.recent)
        elif updates.expunged:
            updates.exists = None  # EXPUNGE responses already tell the new count
        if changed:
            self.highestmodseq = max(self.highestmodseq, max(m.modseq for m in changed))
        if highestmodseq is not None:
            self.highestmodseq = max(self.highestmodseq, highestmodseq)
        self.uidnext = max(self.uidnext, self.max_uid + 1, recent[1] if recent is not None else 0)
        return updates
