"""Who points at a blob: message rows (mailbox copies) and queued outbound messages.

A submitted message is one blob shared by the sender's Sent copy, local recipients' INBOX rows and
the outbound queue entry; its row and file go only when the last of them does.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, delete, select

from .models import Blob, Message, OutboundMessage


def drop_unreferenced_blobs(conn: Connection, blob_ids: Iterable[int]) -> list[str]:
    """Delete the blob rows nothing points at any more; returns their keys (remove the files after commit).

    PostgreSQL: the blob rows are locked first, in id order, and only then are references counted. Two
    transactions each dropping the last-but-one reference (an EXPUNGE and a queue drop) thus take turns,
    and the second, whose next statement sees the first's commit, deletes the blob instead of both
    keeping it for ever. (SQLite's write transaction is exclusive already.)
    """
    ids = sorted(set(blob_ids))
    if not ids:
        return []
    if conn.dialect.name == "postgresql":
        conn.execute(select(Blob.id).where(Blob.id.in_(ids)).order_by(Blob.id).with_for_update()).all()
    used = set(conn.scalars(select(Message.blob_id).where(Message.blob_id.in_(ids))))
    used.update(conn.scalars(select(OutboundMessage.blob_id).where(OutboundMessage.blob_id.in_(ids))))
    unused = [blob_id for blob_id in ids if blob_id not in used]
    if not unused:
        return []
    keys = list(conn.scalars(select(Blob.key).where(Blob.id.in_(unused))))
    conn.execute(delete(Blob).where(Blob.id.in_(unused)))
    return keys
