"""The bridge's store: patients, their messages and dossier, notifications, outbox, and the audit chain."""

from .facade import KNOWN_STATES, BridgeStore, PatientNotFound
from .records import (
    AttachmentRecord,
    AuditEntry,
    ChainReport,
    ConversationSummary,
    DocumentFilter,
    DocumentRecord,
    LoginChallenge,
    MessageMeta,
    MessageRecord,
    NewDocument,
    NewPatient,
    Notification,
    OutboxItem,
    PatientRecord,
)

__all__ = [
    "KNOWN_STATES", "AttachmentRecord", "AuditEntry", "BridgeStore", "ChainReport", "ConversationSummary",
    "DocumentFilter", "DocumentRecord", "LoginChallenge", "MessageMeta", "MessageRecord", "NewDocument",
    "NewPatient", "Notification", "OutboxItem", "PatientNotFound", "PatientRecord",
]
