"""Message-IDs as both stores keep and deduplicate them."""

from __future__ import annotations

# PostgreSQL btree entries are limited to ~2.7 kB: longer Message-IDs cannot be indexed for dedup.
MAX_MESSAGE_ID_BYTES = 900


def dedup_key(message_id: str | None) -> str | None:
    """The Message-ID as stored and deduplicated on; None when absent, blank or too long to index."""
    if message_id is None:
        return None
    message_id = message_id.strip()
    if not message_id or len(message_id.encode("utf-8", "replace")) > MAX_MESSAGE_ID_BYTES:
        return None
    return message_id

