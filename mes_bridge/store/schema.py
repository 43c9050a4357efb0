"""The bridge's tables. Alembic migrations (``migrations/``) build them; this module is their description.

One database per bridge. Every row that belongs to a patient carries the INS, and every query of the
store filters on it, so a patient's session can never reach another patient's rows by id.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mssante_base.storage.columns import NAMING_CONVENTION, BigId, UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class BridgePatient(Base):
    __tablename__ = "bridge_patients"

    ins: Mapped[str] = mapped_column(String(15), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    given_name: Mapped[str | None] = mapped_column(String(200))
    family_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    birth_date: Mapped[str | None] = mapped_column(String(10))
    sex: Mapped[str | None] = mapped_column(String(1))
    email: Mapped[str | None] = mapped_column(String(320))
    activation_code_hash: Mapped[str | None] = mapped_column(String(300))
    activation_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    window_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # pending: the opt-out window's end
    space_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # first took mail (welcome given)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # deletion asked: archived from then
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # archive purged: the row is a tombstone


class BridgeRepresentative(Base):
    """A legal representative (a parent) of a child's space; the representation ends at the configured
    age (computed from the child's birth date) or when ``ended_at`` is set."""

    __tablename__ = "bridge_representatives"
    __table_args__ = (Index(None, "representative"),)

    child: Mapped[str] = mapped_column(String(15), primary_key=True)
    representative: Mapped[str] = mapped_column(String(15), primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class BridgeMessage(Base):
    __tablename__ = "bridge_messages"
    __table_args__ = (
        UniqueConstraint("ins", "direction", "message_id"),
        Index(None, "ins", "at"),
        Index(None, "ins", "direction", "id"),
        Index(None, "ins", "from_address", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ins: Mapped[str] = mapped_column(String(15))
    direction: Mapped[str] = mapped_column(String(3))  # "in": to the patient; "out": the patient's own
    message_id: Mapped[str | None] = mapped_column(String(1000))  # None: absent, never deduplicated
    sender: Mapped[str] = mapped_column(Text)
    recipients: Mapped[str] = mapped_column(Text)  # JSON list of addresses
    subject: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    blob_key: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    from_address: Mapped[str] = mapped_column(Text, default="", server_default="")
    from_name: Mapped[str] = mapped_column(Text, default="", server_default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    mdn_to: Mapped[str | None] = mapped_column(Text)
    ends_exchange: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    attachments: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    no_reply: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")  # the welcome message


class BridgeAttachment(Base):
    """An attachment of a stored message; its bytes stay in the message's blob."""

    __tablename__ = "bridge_attachments"
    __table_args__ = (UniqueConstraint("message", "idx"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message: Mapped[int] = mapped_column(BigId, ForeignKey("bridge_messages.id"))
    ins: Mapped[str] = mapped_column(String(15))
    idx: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str | None] = mapped_column(Text)
    detected_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    document: Mapped[int | None] = mapped_column(BigId)


class BridgeDocument(Base):
    """A document of the patient's dossier ("mes documents de santé"), with its own blob."""

    __tablename__ = "bridge_documents"
    __table_args__ = (
        Index(None, "ins", "hidden_from_patient", "id"),
        Index(None, "ins", "category", "id"),
        Index(None, "ins", "author_address", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ins: Mapped[str] = mapped_column(String(15))
    title: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(16))
    mime_type: Mapped[str] = mapped_column(String(100))
    structured: Mapped[bool] = mapped_column(Boolean)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str | None] = mapped_column(Text)
    document_date: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deposited_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deposited_by: Mapped[str] = mapped_column(Text)  # "patient" or the professional's mailbox
    author_address: Mapped[str | None] = mapped_column(Text)
    author_name: Mapped[str | None] = mapped_column(Text)
    masked_from_professionals: Mapped[bool] = mapped_column(Boolean)
    hidden_from_patient: Mapped[bool] = mapped_column(Boolean)
    hidden_from_legal_reps: Mapped[bool] = mapped_column(Boolean)
    message: Mapped[int | None] = mapped_column(BigId)
    attachment_index: Mapped[int | None] = mapped_column(Integer)
    xdm_unique_id: Mapped[str | None] = mapped_column(Text)


class BridgeAudit(Base):
    """The append-only audit log: each row's hash covers the previous row's (one chain per store)."""

    __tablename__ = "bridge_audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(32))
    ins: Mapped[str | None] = mapped_column(String(15), index=True)
    detail: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64), default="", server_default="")
    hash: Mapped[str] = mapped_column(String(64), default="", server_default="")
    document: Mapped[int | None] = mapped_column(BigId)  # detail["document"], so history can leave hidden ones out


class BridgeAuditHead(Base):
    """The chain's last link, one row: writers lock it (FOR UPDATE) so links are appended one at a time."""

    __tablename__ = "bridge_audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(BigId)
    hash: Mapped[str] = mapped_column(String(64))


class BridgeNotification(Base):
    __tablename__ = "bridge_notifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ins: Mapped[str] = mapped_column(String(15), index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class BridgeLoginChallenge(Base):
    __tablename__ = "bridge_login_challenges"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ins: Mapped[str] = mapped_column(String(15))
    code_hash: Mapped[str] = mapped_column(String(300))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class BridgeOutbox(Base):
    """Messages the bridge owes the operator (read receipts): kept until the operator accepts them."""

    __tablename__ = "bridge_outbox"
    __table_args__ = (Index(None, "sent_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ins: Mapped[str] = mapped_column(String(15))
    kind: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    message: Mapped[int | None] = mapped_column(BigId)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
