"""The audit log's hash chain, as pure functions: how a link is hashed, and how a run of links is checked.

Each link's hash covers the previous link's hash and the link's own fields in a canonical JSON form, so
changing, removing or reordering any entry breaks every hash after it; the head row (the last hash)
also catches entries cut off the end. The database refuses UPDATE and DELETE on the log (triggers); the
chain is what shows tampering done around them (a restored backup, a hand-edited file).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64  # the "previous hash" of the first entry


def canonical_detail(detail: dict[str, Any]) -> str:
    """The detail as stored and hashed: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def link_hash(prev_hash: str, *, at: datetime, actor: str, action: str, ins: str | None, detail: str) -> str:
    """The hash of one entry, chained to ``prev_hash``; ``detail`` is the canonical JSON text."""
    stamp = at.astimezone(UTC).isoformat(timespec="microseconds")
    payload = json.dumps([prev_hash, stamp, actor, action, ins, detail], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def first_broken(rows: Iterable[Any], head_hash: str | None) -> tuple[int, int | None, str | None]:
    """Check rows (id, at, actor, action, ins, detail, prev_hash, hash) in id order.

    Returns (entries checked, id of the first bad entry or None, why). A head that does not name the
    last entry's hash means entries were removed from the end (reported with id None but a reason).
    """
    expected = GENESIS
    count = 0
    for row in rows:
        count += 1
        if row.prev_hash != expected:
            return count, row.id, "its previous-hash does not match the entry before it (removed or reordered)"
        if link_hash(row.prev_hash, at=row.at, actor=row.actor, action=row.action, ins=row.ins,
                     detail=row.detail) != row.hash:
            return count, row.id, "its content does not match its hash (modified)"
        expected = row.hash
    if (head_hash or GENESIS) != expected:
        return count, None, "the chain's head does not match the last entry (entries removed from the end)"
    return count, None, None
