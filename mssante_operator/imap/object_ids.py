"""OBJECTID (RFC 8474): stable identifiers for mailboxes and messages.

MAILBOXID names a folder for its whole life, across RENAME (a renamed folder keeps its row), and never
names another (the row id with the folder's UIDVALIDITY, which grows with every folder an account
creates). EMAILID names a message's content: copies and moves share the stored file, so they share
the id, as the RFC asks; it is derived from the file's random key, not the key itself. Threads are
not kept: THREADID is NIL (RFC 8474 5.2 allows it).
"""

from __future__ import annotations

import hashlib

from ..store.folders import Folder


def mailbox_id(folder: Folder) -> str:
    return f"M{folder.id}-{folder.uidvalidity}"


def email_id(blob_key: str) -> str:
    return "E" + hashlib.blake2b(blob_key.encode(), digest_size=12).hexdigest()
