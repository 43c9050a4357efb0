"""BridgeStore: the bridge's one store, assembled from its parts (patients and their spaces' lives,
messages, dossier, logins, notifications, outbox, audit history). Calls are synchronous: async callers
run them in a thread."""

from __future__ import annotations

from .history import HistoryStore
from .logins import LoginStore
from .spaces import SpaceStore


class BridgeStore(SpaceStore, LoginStore, HistoryStore):
    """Patients, their messages and dossier, and the audit chain, over SQLite or PostgreSQL, with blob files."""
