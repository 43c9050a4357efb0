"""SQLAlchemy models of the mail store.

The schema is shaped for IMAP from the start: every message row lives in a mailbox (folder) with its
own UID and MODSEQ, and mailboxes carry UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ so that UID allocation is a
single row update (the row lock serialises concurrent deliveries on PostgreSQL).
Message bytes never enter the database: a row points at a blob file.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mssante_base.storage.columns import NAMING_CONVENTION, BigId, UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Account(Base):
    """One mailbox address of the annuaire (a BAL): its folders, and how (whether) it may log in.

    A first delivery creates the row with ``kind`` NULL (mail only, no login of its own); ``account add``
    (or the one-time import of credentials.json) sets the login columns. Every node of one database sees
    the same accounts.
    """

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)  # lower case
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Last UIDVALIDITY given to a folder of this account: a folder deleted and created again within
    # the same second still gets a new one (RFC 3501 2.3.1.1).
    uidvalidity_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    kind: Mapped[str | None] = mapped_column(String(3))  # PER | ORG | APP as the annuaire said; NULL: mail only
    state: Mapped[str] = mapped_column(String(8), default="enabled", server_default="enabled")  # or disabled
    password_hash: Mapped[str | None] = mapped_column(Text)  # argon2 PHC string
    cert_sha256: Mapped[str | None] = mapped_column(String(64))  # an APP mailbox's bound certificate (DER)
    cert_pem: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Mailbox(Base):
    """An IMAP folder of an account; its counters are the source of UIDs and MODSEQs."""

    __tablename__ = "mailboxes"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=1)
    highestmodseq: Mapped[int] = mapped_column(BigInteger, default=1)
    special_use: Mapped[str | None] = mapped_column(String(32))  # \Sent, \Drafts, \Trash, \Junk, \Archive
    # First UID no session has shown as \Recent yet: a SELECT claims [recent_uid, uidnext) atomically,
    # so exactly one session, in any process, sees a new message as \Recent (RFC 3501 2.3.2).
    recent_uid: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")


class Subscription(Base):
    """A name in an account's LSUB list (it may name a folder that does not exist, RFC 3501 6.3.6)."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))


class StoreIdentity(Base):
    """The one row naming this database's cluster; the blob directory holds the same id (blobs.CLUSTER_MARKER),
    so that a node pointed at another blob storage refuses to start instead of losing the queue's files."""

    __tablename__ = "store_identity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    cluster_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Blob(Base):
    """A message file under the blob directory; one blob may serve several recipients."""

    __tablename__ = "blobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Message(Base):
    """A message as seen in one mailbox: UID, MODSEQ, flags and the decoded headers `mailbox ls` shows."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "uid"),
        # SMTP deliveries dedup by Message-ID per mailbox (a peer retrying after a lost 250); IMAP
        # APPEND and COPY leave dedup_key NULL: a client may store the same message twice.
        Index(
            "uq_messages_mailbox_id_dedup_key",
            "mailbox_id",
            "dedup_key",
            unique=True,
            sqlite_where=text("dedup_key IS NOT NULL"),
            postgresql_where=text("dedup_key IS NOT NULL"),
        ),
        Index("ix_messages_mailbox_id_modseq", "mailbox_id", "modseq"),  # CONDSTORE CHANGEDSINCE
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    modseq: Mapped[int] = mapped_column(BigInteger)
    # Space-separated IMAP flags; updates happen under the mailbox row lock (MODSEQ bump), so atomic.
    flags: Mapped[str] = mapped_column(Text, default="")
    internaldate: Mapped[datetime] = mapped_column(UTCDateTime())
    internaldate_offset: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # minutes east of UTC
    size: Mapped[int] = mapped_column(BigInteger)
    blob_id: Mapped[int] = mapped_column(ForeignKey("blobs.id"), index=True)
    message_id: Mapped[str | None] = mapped_column(Text)
    dedup_key: Mapped[str | None] = mapped_column(Text)
    from_addr: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    authentication_results: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    saved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # into this folder (SAVEDATE)


class ExpungedMessage(Base):
    """A UID removed from a folder (EXPUNGE, MOVE, INBOX's messages moved by a rename), at the MODSEQ of its
    removal, written in the same transaction. A cached UID list is brought up to date from it (UIDs
    expunged since the cache's MODSEQ), and QRESYNC's VANISHED (EARLIER) (RFC 7162 3.2.10) needs the same."""

    __tablename__ = "expunged_messages"
    __table_args__ = (Index("ix_expunged_messages_mailbox_id_modseq", "mailbox_id", "modseq"),)

    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # a folder never gives a UID twice
    modseq: Mapped[int] = mapped_column(BigInteger)


class RecipientStatus(enum.StrEnum):
    """The states of a queued recipient (OutboundRecipient.status)."""

    SCHEDULED = "scheduled"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    FAILED = "failed"


class OutboundMessage(Base):
    """A message waiting in the outbound queue (or kept until its notices are sent and it is purged).

    The bytes are a blob, possibly shared with the sender's Sent copy or local recipients' rows.
    """

    __tablename__ = "outbound_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    queue_id: Mapped[str] = mapped_column(String(32), unique=True)  # what operators see and type
    blob_id: Mapped[int] = mapped_column(ForeignKey("blobs.id"), index=True)
    sender: Mapped[str] = mapped_column(Text)  # "" is the null reverse-path (a DSN: never bounced)
    envid: Mapped[str | None] = mapped_column(Text)  # RFC 3461 ENVID, decoded
    ret: Mapped[str | None] = mapped_column(String(8))  # RFC 3461 RET: FULL | HDRS
    message_id: Mapped[str | None] = mapped_column(Text)
    submitted_by: Mapped[str] = mapped_column(Text)  # the principal's login (audit trail)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OutboundRecipient(Base):
    """One recipient of a queued message: its own status, attempts, lease and last reply (typed columns).

    A worker leases due rows (lease_owner/lease_until) before trying them; a lease that runs out
    (crashed worker) makes them claimable again, so a crash never loses a recipient.
    """

    __tablename__ = "outbound_recipients"
    __table_args__ = (
        Index("ix_outbound_recipients_status_next_attempt_at", "status", "next_attempt_at"),  # the claim query
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    outbound_message_id: Mapped[int] = mapped_column(
        ForeignKey("outbound_messages.id", ondelete="CASCADE"), index=True
    )
    address: Mapped[str] = mapped_column(Text)
    domain: Mapped[str] = mapped_column(String(255), index=True)  # lower case: the next hop's key
    orcpt: Mapped[str | None] = mapped_column(Text)  # RFC 3461 ORCPT, decoded ("rfc822;a@b.fr")
    notify: Mapped[str | None] = mapped_column(String(64))  # comma list of NOTIFY keywords; NULL: not given
    status: Mapped[str] = mapped_column(String(16))  # scheduled | deferred | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The last attempt's reply, typed (outcomes.Reply); all NULL until the first attempt.
    last_kind: Mapped[str | None] = mapped_column(String(16))  # delivered | temporary | permanent
    last_code: Mapped[int | None] = mapped_column(Integer)  # the reply code; NULL: no reply came, or our reason
    last_enhanced: Mapped[str | None] = mapped_column(String(16))  # RFC 3463 code, when there is one
    last_text: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    final_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    action: Mapped[str | None] = mapped_column(String(16))  # DSN action of the last outcome
    remote_mta: Mapped[str | None] = mapped_column(Text)
    warned: Mapped[bool] = mapped_column(Boolean, default=False)  # delay warning sent
    notified: Mapped[bool] = mapped_column(Boolean, default=False)  # final notice sent (or none owed)
    # The worker that owes the notice (final report or delay warning) until notice_until: one sender per report.
    notice_owner: Mapped[str | None] = mapped_column(String(128))
    notice_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Conversation(Base):
    """A patient's conversation with one professional mailbox: open until the mailbox (or an operator) ends it.

    One row per (patient, mailbox), updated in place; `conversation_events` keeps every change.
    """

    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("patient_ins", "mailbox"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_ins: Mapped[str] = mapped_column(String(15))  # canonical INS (upper-case 2A/2B)
    mailbox: Mapped[str] = mapped_column(String(320), index=True)  # lower case
    status: Mapped[str] = mapped_column(String(8))  # open | ended
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    opened_by: Mapped[str] = mapped_column(Text)  # actor: login, peer DN or "operator:<user>"
    opened_by_message_id: Mapped[str | None] = mapped_column(Text)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_by: Mapped[str | None] = mapped_column(Text)
    ended_by_message_id: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ConversationEventRow(Base):
    """One open or end of a conversation (the audit trail `conversation ls --history` prints)."""

    __tablename__ = "conversation_events"
    __table_args__ = (Index("ix_conversation_events_patient_ins_mailbox", "patient_ins", "mailbox"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_ins: Mapped[str] = mapped_column(String(15))
    mailbox: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(8))  # open | end
    message_id: Mapped[str | None] = mapped_column(Text)  # None: an operator's command
    actor: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
