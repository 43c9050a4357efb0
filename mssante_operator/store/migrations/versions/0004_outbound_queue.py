"""The durable outbound queue: queued messages and their recipients' delivery state.

A queued message points at a blob, which a Sent copy or local deliveries may share; each recipient
keeps its own status, attempts, next attempt and lease, so that several workers (processes or nodes)
share the queue and a crashed worker's recipients come back when its lease runs out.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen copies of the model types: a migration must not change when models.py evolves.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "outbound_messages",
        sa.Column("id", BigId, nullable=False),
        sa.Column("queue_id", sa.String(32), nullable=False),
        sa.Column("blob_id", BigId, nullable=False),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("envid", sa.Text(), nullable=True),
        sa.Column("ret", sa.String(8), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("submitted_by", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbound_messages"),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"], name="fk_outbound_messages_blob_id_blobs"),
        sa.UniqueConstraint("queue_id", name="uq_outbound_messages_queue_id"),
    )
    op.create_index("ix_outbound_messages_blob_id", "outbound_messages", ["blob_id"])
    op.create_table(
        "outbound_recipients",
        sa.Column("id", BigId, nullable=False),
        sa.Column("outbound_message_id", BigId, nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("orcpt", sa.Text(), nullable=True),
        sa.Column("notify", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_until", Timestamp, nullable=True),
        sa.Column("last_reply", sa.Text(), nullable=False),
        sa.Column("last_attempt_at", Timestamp, nullable=True),
        sa.Column("final_at", Timestamp, nullable=True),
        sa.Column("action", sa.String(16), nullable=True),
        sa.Column("remote_mta", sa.Text(), nullable=True),
        sa.Column("warned", sa.Boolean(), nullable=False),
        sa.Column("notified", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbound_recipients"),
        sa.ForeignKeyConstraint(
            ["outbound_message_id"], ["outbound_messages.id"],
            name="fk_outbound_recipients_outbound_message_id_outbound_messages", ondelete="CASCADE",
        ),
    )  # fmt: skip
    op.create_index(
        "ix_outbound_recipients_status_next_attempt_at", "outbound_recipients", ["status", "next_attempt_at"]
    )
    op.create_index("ix_outbound_recipients_domain", "outbound_recipients", ["domain"])
    op.create_index("ix_outbound_recipients_outbound_message_id", "outbound_recipients", ["outbound_message_id"])


def downgrade() -> None:
    op.drop_table("outbound_recipients")
    op.drop_table("outbound_messages")
