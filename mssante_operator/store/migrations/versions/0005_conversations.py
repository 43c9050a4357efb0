"""Patient conversations: one row per (patient, professional mailbox) with its status, and every change.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Frozen copies of the model types: a migration must not change when models.py evolves.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", BigId, nullable=False),
        sa.Column("patient_ins", sa.String(15), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("opened_at", Timestamp, nullable=False),
        sa.Column("opened_by", sa.Text(), nullable=False),
        sa.Column("opened_by_message_id", sa.Text(), nullable=True),
        sa.Column("ended_at", Timestamp, nullable=True),
        sa.Column("ended_by", sa.Text(), nullable=True),
        sa.Column("ended_by_message_id", sa.Text(), nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.UniqueConstraint("patient_ins", "mailbox", name="uq_conversations_patient_ins_mailbox"),
    )
    op.create_index("ix_conversations_mailbox", "conversations", ["mailbox"])
    op.create_table(
        "conversation_events",
        sa.Column("id", BigId, nullable=False),
        sa.Column("patient_ins", sa.String(15), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversation_events"),
    )
    op.create_index("ix_conversation_events_patient_ins_mailbox", "conversation_events", ["patient_ins", "mailbox"])


def downgrade() -> None:
    op.drop_table("conversation_events")
    op.drop_table("conversations")
