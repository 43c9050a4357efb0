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
from collections.abc import Iterable
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
    """One session's view of one folder."""

    def __init__(self, folder: Folder, readonly: bool, metas: list[MessageMeta], first_recent_uid: int,
                 *, condstore: bool = False) -> None:
        self.folder = folder
        self.readonly = readonly
        self.condstore = condstore
        self.uids: list[int] = [m.uid for m in metas]
        self.metas: dict[int, MessageMeta] = {m.uid: m for m in metas}
        self.recent: set[int] = {m.uid for m in metas if m.uid >= first_recent_uid}
        self.uidnext = folder.uidnext
        self.highestmodseq = folder.highestmodseq
        self._pending_expunges: set[int] = set()
        self._keywords: dict[str, str] = {}  # lower case -> as first seen: what FLAGS has announced
        self.learn_keywords(metas)

    @property
    def flags(self) -> list[str]:
        """The FLAGS response's list: the system flags, then every keyword announced so far."""
        return [*SYSTEM_FLAGS, *sorted(self._keywords.values())]

    def learn_keywords(self, metas: Iterable[MessageMeta]) -> bool:
        """Add the keywords these messages carry; True when one is new (RFC 3501 7.2.6: the client
        must get a FLAGS response naming a keyword before a FETCH that shows it)."""
        new = False
        for meta in metas:
            for flag in meta.flags:
                if not flag.startswith("\\") and flag.lower() not in self._keywords:
                    self._keywords[flag.lower()] = flag
                    new = True
        return new

    @property
    def has_pending_expunges(self) -> bool:
        """Expunges seen in the store but not yet announced (held back during FETCH/STORE/SEARCH)."""
        return bool(self._pending_expunges)

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

    def first_unseen(self) -> int | None:
        for seq, uid in enumerate(self.uids, start=1):
            if "\\Seen" not in self.metas[uid].flags:
                return seq
        return None

    def apply(self, current_uids: list[int], changed: list[MessageMeta], *, expunges_allowed: bool,
              new_recent_from: int | None = None, highestmodseq: int | None = None) -> Updates:
        """Bring the view up to date with the store and say what to announce.

        ``current_uids``: every UID in the folder now; ``changed``: metas with a MODSEQ above the
        view's; ``new_recent_from``: first UID this session claimed as \\Recent, if it claimed any.
        """
        updates = Updates(new_keywords=self.learn_keywords(changed))
        present = set(current_uids)
        self._pending_expunges |= {uid for uid in self.uids if uid not in present}
        if expunges_allowed and self._pending_expunges:
            # Announce from the highest sequence number down: each EXPUNGE shifts only later numbers.
            for uid in sorted(self._pending_expunges, reverse=True):
                seq = self.seq_of(uid)
                if seq is not None:
                    updates.expunged.append(seq)
                    del self.uids[seq - 1]
                    self.metas.pop(uid, None)
                    self.recent.discard(uid)
            self._pending_expunges.clear()
        known = set(self.uids)
        new = sorted((m for m in changed if m.uid not in known and m.uid > self.max_uid), key=lambda m: m.uid)
        for meta in sorted(changed, key=lambda m: m.uid):
            if meta.uid in known and meta.uid not in self._pending_expunges:
                if self.metas[meta.uid].flags != meta.flags or (self.condstore and meta.modseq !=
                                                                 self.metas[meta.uid].modseq):
                    seq = self.seq_of(meta.uid)
                    if seq is not None:
                        updates.flags.append((seq, meta))
                self.metas[meta.uid] = meta
        if new:
            for meta in new:
                self.uids.append(meta.uid)
                self.metas[meta.uid] = meta
                if new_recent_from is not None and meta.uid >= new_recent_from:
                    self.recent.add(meta.uid)
            updates.exists = self.exists
            updates.recent = len(self.recent)
        elif updates.expunged:
            updates.exists = None  # EXPUNGE responses already tell the new count
        if changed:
            self.highestmodseq = max(self.highestmodseq, max(m.modseq for m in changed))
        if highestmodseq is not None:
            self.highestmodseq = max(self.highestmodseq, highestmodseq)
        self.uidnext = max(self.uidnext, self.max_uid + 1)
        return updates
