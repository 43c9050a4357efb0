"""Mail storage: accounts, IMAP mailboxes, message rows (SQLAlchemy) and message files (blobs).

Everything that touches SQL lives in this package; the rest of the operator uses `Store`.
"""

from mssante_operator.store.facade import (
    INBOX,
    DeliveryOutcome,
    MessageNotFoundError,
    NewMessage,
    Store,
    StoredMessage,
    normalize_address,
)

__all__ = [
    "INBOX",
    "DeliveryOutcome",
    "MessageNotFoundError",
    "NewMessage",
    "Store",
    "StoredMessage",
    "normalize_address",
]
