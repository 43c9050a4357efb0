"""The bridge's store: patients, their messages and dossier, notifications, outbox, and the audit chain."""

from .documents import PATIENT_AUTHOR, DocumentNotFound
from .facade import BridgeStore
from .patients import KNOWN_STATES, ActivationRefused, PatientNotFound
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
    NewAttachment,
    NewDocument,
    NewPatient,
    Notification,
    OutboxItem,
    PatientRecord,
)

__all__ = [
    "KNOWN_STATES", "PATIENT_AUTHOR", "ActivationRefused", "AttachmentRecord", "AuditEntry", "BridgeStore",
    "ChainReport", "ConversationSummary", "DocumentFilter", "DocumentNotFound", "DocumentRecord", "LoginChallenge",
    "MessageMeta", "MessageRecord", "NewAttachment", "NewDocument", "NewPatient", "Notification", "OutboxItem",
    "PatientNotFound", "PatientRecord",
]
