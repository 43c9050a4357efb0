"""The bridge's store: patients, their messages and dossier, notifications, outbox, and the audit chain."""

from .documents import PATIENT_AUTHOR, DocumentNotFound
from .facade import BridgeStore
from .patients import KNOWN_STATES, PatientNotFound
from .records import (
    AttachmentRecord,
    Audience,
    AuditEntry,
    ChainReport,
    Child,
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
from .spaces import OVERRIDE_STATES, ActivationRefused

__all__ = [
    "KNOWN_STATES",
    "OVERRIDE_STATES",
    "PATIENT_AUTHOR",
    "ActivationRefused",
    "AttachmentRecord",
    "Audience",
    "AuditEntry",
    "BridgeStore",
    "ChainReport",
    "Child",
    "ConversationSummary",
    "DocumentFilter",
    "DocumentNotFound",
    "DocumentRecord",
    "LoginChallenge",
    "MessageMeta",
    "MessageRecord",
    "NewAttachment",
    "NewDocument",
    "NewPatient",
    "Notification",
    "OutboxItem",
    "PatientNotFound",
    "PatientRecord",
]
