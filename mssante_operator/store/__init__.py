"""Mail storage: accounts, IMAP mailboxes, message rows (SQLAlchemy) and message files (blobs).

Everything that touches SQL lives in this package; the rest of the operator uses `Store`. Inside it, the
layers are: models and blobs; the database (database.py) and its write unit (write_unit.py), through
which every change to mail goes; the parts over them (folders, queue, conversations, accounts); the `Store` facade
(facade.py) that holds them with delivery; submissions (submission.py) over the facade.
"""

from mssante_operator.store.database import INBOX
from mssante_operator.store.facade import MessageNotFoundError, Store, StoredMessage
from mssante_operator.store.write_unit import DeliveryOutcome, NewMessage, normalize_address

__all__ = [
    "INBOX",
    "DeliveryOutcome",
    "MessageNotFoundError",
    "NewMessage",
    "Store",
    "StoredMessage",
    "normalize_address",
]
