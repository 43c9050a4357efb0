"""What the bridge's store hands out and takes in: frozen records, no SQL, no session.

The web space, the intake and the command line share these; every reading method of the store takes
the patient's INS and returns only that patient's rows (None when an id is another patient's).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mssante_base.patients.ins import Ins
from mssante_base.patients.states import PatientState

from ..filing.categories import Category


@dataclass(frozen=True)
class PatientRecord:
    ins: str
    state: PatientState
    given_name: str | None
    family_name: str | None
    password_hash: str | None
    created_at: datetime
    updated_at: datetime
    birth_date: str | None = None  # ISO date, as the INS identity traits give it
    sex: str | None = None  # "M", "F" or "U"
    email: str | None = None  # personal address for notifications (never a message's content)
    activated_at: datetime | None = None
    window_ends_at: datetime | None = None  # pending: when the space is created by default
    space_opened_at: datetime | None = None  # when it first took mail (its welcome message)
    deleted_at: datetime | None = None  # deletion asked: archived, readable by no one
    purged_at: datetime | None = None  # archive purged: only this row and the audit trail remain

    @property
    def display_name(self) -> str:
        return " ".join(part for part in (self.given_name, self.family_name) if part)


class Audience(enum.Enum):
    """Who is reading a space: the person, or a legal representative (a parent in a child's space).
    Documents hidden from the patient (INVISIBLE_PATIENT) are hidden from both; those hidden from legal
    representatives (INVISIBLE_REP_LEGAUX) from the representative only, with their traces."""

    PATIENT = "patient"
    REPRESENTATIVE = "representative"


@dataclass(frozen=True)
class Child:
    """A child's space as their representative sees it in their own session."""

    ins: str
    given_name: str | None
    family_name: str | None
    state: PatientState
    birth_date: str | None

    @property
    def display_name(self) -> str:
        return " ".join(part for part in (self.given_name, self.family_name) if part) or self.ins


@dataclass(frozen=True)
class NewPatient:
    """A patient as patients.json, the command line or a test describes one."""

    ins: Ins
    state: PatientState
    given_name: str | None = None
    family_name: str | None = None
    password_hash: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    email: str | None = None
    activation_code_hash: str | None = None  # a provisional code sent by letter (patients.json: a demo's child)
    representatives: tuple[Ins, ...] = ()  # legal representatives (a child's parents), known spaces


@dataclass(frozen=True)
class MessageMeta:
    """What the bridge records of a message besides its bytes (headers already decoded)."""

    message_id: str | None
    sender: str  # the envelope sender
    recipients: tuple[str, ...]
    subject: str
    from_address: str = ""  # the From header's address, lower-case (the conversation's mailbox)
    from_name: str = ""  # the From header's display name (or the annuaire's name)
    sent_at: datetime | None = None  # the Date header
    in_reply_to: str | None = None
    mdn_to: str | None = None  # Disposition-Notification-To: a read receipt is due on first opening
    ends_exchange: bool = False  # X-MSS-MES: FIN or a subject of exactly [FIN]
    attachments: int = 0


@dataclass(frozen=True)
class MessageRecord:
    id: int
    ins: str
    direction: str  # "in": to the patient; "out": the patient's own
    message_id: str | None
    sender: str
    recipients: tuple[str, ...]
    subject: str
    size: int
    blob_key: str
    at: datetime
    from_address: str = ""
    from_name: str = ""
    sent_at: datetime | None = None
    in_reply_to: str | None = None
    mdn_to: str | None = None
    ends_exchange: bool = False
    attachments: int = 0
    read_at: datetime | None = None  # first opened by the patient (None: unread)
    no_reply: bool = False  # the service's own message (the welcome): no reply form, a reply refused


@dataclass(frozen=True)
class AttachmentRecord:
    """One attachment of a stored message (its bytes stay inside the message's blob)."""

    message: int  # MessageRecord.id
    index: int  # ordinal among the message's attachments (mes_bridge.filing.mime walk order)
    filename: str | None
    detected_type: str  # from the content (python-magic), never from the name or Content-Type
    size: int
    document: int | None  # the dossier document it was filed as, if any


@dataclass(frozen=True)
class NewDocument:
    """A document to file: from a message (intake), an attachment the patient saves, or an upload."""

    data: bytes
    mime_type: str  # detected from the content
    title: str
    category: Category
    structured: bool = False  # a CDA R2 document
    filename: str | None = None
    document_date: datetime | None = None  # when the document was made (XDM creationTime), if known
    author_address: str | None = None  # the sender mailbox (None: the patient)
    author_name: str | None = None  # its annuaire identity (or the XDM author)
    masked_from_professionals: bool = False  # MASQUE_PS
    hidden_from_patient: bool = False  # INVISIBLE_PATIENT: until released
    hidden_from_legal_reps: bool = False  # INVISIBLE_REP_LEGAUX
    message: int | None = None  # the source MessageRecord.id
    attachment_index: int | None = None
    xdm_unique_id: str | None = None


@dataclass(frozen=True)
class DocumentRecord:
    id: int
    ins: str
    title: str
    category: Category
    mime_type: str
    structured: bool
    size: int
    sha256: str
    blob_key: str
    filename: str | None
    document_date: datetime | None
    deposited_at: datetime
    deposited_by: str  # "patient" or the professional's mailbox
    author_address: str | None
    author_name: str | None
    masked_from_professionals: bool
    hidden_from_patient: bool
    hidden_from_legal_reps: bool
    message: int | None
    attachment_index: int | None
    xdm_unique_id: str | None


@dataclass(frozen=True)
class DocumentFilter:
    """The documents page's filters; None means any."""

    category: Category | None = None
    author: str | None = None  # a sender mailbox address, or "patient"
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class ConversationSummary:
    """The patient's exchange with one professional mailbox, as the bridge saw its messages."""

    mailbox: str
    name: str
    open: bool  # False once the professional's last message ended the exchange (FIN)
    last_at: datetime
    messages: int
    unread: int


@dataclass(frozen=True)
class AuditEntry:
    """One link of the hash-chained audit log."""

    id: int
    at: datetime
    actor: str  # "patient:<INS>", "professional:<address>", "operator:<user>", a certificate DN …
    action: str
    ins: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainReport:
    entries: int
    ok: bool
    first_bad: int | None = None  # the id of the first entry whose hash does not follow
    reason: str | None = None


@dataclass(frozen=True)
class Notification:
    """A notice for the patient's personal address; it never carries a message's content."""

    id: int
    ins: str
    email: str | None
    kind: str  # "message", "document", "login-code", "activation", "first-access"
    subject: str
    body: str
    created_at: datetime
    sent_at: datetime | None = None


@dataclass(frozen=True)
class LoginChallenge:
    id: str
    ins: str
    code_hash: str
    expires_at: datetime
    attempts: int


@dataclass(frozen=True)
class OutboxItem:
    """A message the bridge must submit to the operator on the patient's behalf (read receipts)."""

    id: int
    ins: str
    kind: str  # "mdn"
    recipient: str
    raw: bytes
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewAttachment:
    """An attachment of a message being delivered, as the intake found it (bytes stay in the message)."""

    index: int
    filename: str | None
    detected_type: str
    size: int
