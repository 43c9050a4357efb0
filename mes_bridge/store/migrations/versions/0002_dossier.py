"""The dossier: identity traits and activation, message details, attachments, documents, notifications,
login challenges, the read-receipt outbox, and the audit log made append-only and hash-chained.

Existing audit entries (free text) get their detail wrapped as {"text": …} and are chained in id order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from datetime import UTC

import sqlalchemy as sa
from alembic import op

from mes_bridge.store.chain import GENESIS, canonical_detail, link_hash

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)

APPEND_ONLY_SQLITE = [
    "CREATE TRIGGER bridge_audit_no_update BEFORE UPDATE ON bridge_audit "
    "BEGIN SELECT RAISE(ABORT, 'bridge_audit is append-only'); END",
    "CREATE TRIGGER bridge_audit_no_delete BEFORE DELETE ON bridge_audit "
    "BEGIN SELECT RAISE(ABORT, 'bridge_audit is append-only'); END",
]
APPEND_ONLY_POSTGRESQL = [
    "CREATE FUNCTION bridge_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'bridge_audit is append-only'; END $$",
    "CREATE TRIGGER bridge_audit_no_change BEFORE UPDATE OR DELETE ON bridge_audit "
    "FOR EACH ROW EXECUTE FUNCTION bridge_audit_append_only()",
]


def _chain_existing_entries() -> None:
    conn = op.get_bind()
    audit = sa.table("bridge_audit", sa.column("id", BigId), sa.column("at", sa.DateTime(timezone=True)),
                     sa.column("actor", sa.Text()), sa.column("action", sa.String()), sa.column("ins", sa.String()),
                     sa.column("detail", sa.Text()), sa.column("prev_hash", sa.String()),
                     sa.column("hash", sa.String()))
    prev = GENESIS
    last_id = None
    for row in conn.execute(sa.select(audit).order_by(audit.c.id)).all():
        at = row.at if row.at.tzinfo is not None else row.at.replace(tzinfo=UTC)
        detail = canonical_detail({"text": row.detail})
        digest = link_hash(prev, at=at, actor=row.actor, action=row.action, ins=row.ins, detail=detail)
        conn.execute(sa.update(audit).where(audit.c.id == row.id).values(detail=detail, prev_hash=prev, hash=digest))
        prev, last_id = digest, row.id
    if last_id is not None:
        conn.execute(sa.text("INSERT INTO bridge_audit_head (id, last_id, hash) VALUES (1, :last, :hash)"),
                     {"last": last_id, "hash": prev})


def upgrade() -> None:
    with op.batch_alter_table("bridge_patients") as batch:
        batch.add_column(sa.Column("birth_date", sa.String(10), nullable=True))
        batch.add_column(sa.Column("sex", sa.String(1), nullable=True))
        batch.add_column(sa.Column("email", sa.String(320), nullable=True))
        batch.add_column(sa.Column("activation_code_hash", sa.String(300), nullable=True))
        batch.add_column(sa.Column("activation_expires_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("activated_at", Timestamp, nullable=True))
    with op.batch_alter_table("bridge_messages") as batch:
        batch.add_column(sa.Column("from_address", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("from_name", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("sent_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("in_reply_to", sa.Text(), nullable=True))
        batch.add_column(sa.Column("mdn_to", sa.Text(), nullable=True))
        batch.add_column(sa.Column("ends_exchange", sa.Boolean(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("attachments", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("read_at", Timestamp, nullable=True))
    op.create_index("ix_bridge_messages_ins_direction_id", "bridge_messages", ["ins", "direction", "id"])
    op.create_index("ix_bridge_messages_ins_from_address_id", "bridge_messages", ["ins", "from_address", "id"])
    op.create_table(
        "bridge_attachments",
        sa.Column("id", BigId, nullable=False),
        sa.Column("message", BigId, nullable=False),
        sa.Column("ins", sa.String(15), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("detected_type", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("document", BigId, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bridge_attachments"),
        sa.ForeignKeyConstraint(["message"], ["bridge_messages.id"],
                                name="fk_bridge_attachments_message_bridge_messages"),
        sa.UniqueConstraint("message", "idx", name="uq_bridge_attachments_message_idx"),
    )
    op.create_table(
        "bridge_documents",
        sa.Column("id", BigId, nullable=False),
        sa.Column("ins", sa.String(15), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("mime_type", sa.String(100), nullable=False),
        sa.Column("structured", sa.Boolean(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("blob_key", sa.String(32), nullable=False),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("document_date", Timestamp, nullable=True),
        sa.Column("deposited_at", Timestamp, nullable=False),
        sa.Column("deposited_by", sa.Text(), nullable=False),
        sa.Column("author_address", sa.Text(), nullable=True),
        sa.Column("author_name", sa.Text(), nullable=True),
        sa.Column("masked_from_professionals", sa.Boolean(), nullable=False),
        sa.Column("hidden_from_patient", sa.Boolean(), nullable=False),
        sa.Column("hidden_from_legal_reps", sa.Boolean(), nullable=False),
        sa.Column("message", BigId, nullable=True),
        sa.Column("attachment_index", sa.Integer(), nullable=True),
        sa.Column("xdm_unique_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bridge_documents"),
    )
    op.create_index("ix_bridge_documents_ins_hidden_from_patient_id", "bridge_documents",
                    ["ins", "hidden_from_patient", "id"])
    op.create_index("ix_bridge_documents_ins_category_id", "bridge_documents", ["ins", "category", "id"])
    op.create_index("ix_bridge_documents_ins_author_address_id", "bridge_documents", ["ins", "author_address", "id"])
    op.create_table(
        "bridge_notifications",
        sa.Column("id", BigId, nullable=False),
        sa.Column("ins", sa.String(15), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("sent_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bridge_notifications"),
    )
    op.create_index("ix_bridge_notifications_ins", "bridge_notifications", ["ins"])
    op.create_table(
        "bridge_login_challenges",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("ins", sa.String(15), nullable=False),
        sa.Column("code_hash", sa.String(300), nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bridge_login_challenges"),
    )
    op.create_table(
        "bridge_outbox",
        sa.Column("id", BigId, nullable=False),
        sa.Column("ins", sa.String(15), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("message", BigId, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("sent_at", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bridge_outbox"),
    )
    op.create_index("ix_bridge_outbox_sent_at_next_attempt_at", "bridge_outbox", ["sent_at", "next_attempt_at"])
    op.create_table(
        "bridge_audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_id", BigId, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bridge_audit_head"),
    )
    with op.batch_alter_table("bridge_audit") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("document", BigId, nullable=True))
    _chain_existing_entries()
    dialect = op.get_bind().dialect.name
    for statement in APPEND_ONLY_POSTGRESQL if dialect == "postgresql" else APPEND_ONLY_SQLITE:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the dossier cannot be removed: restore a backup instead")
