"""mes_bridge's first schema (patients, messages, audit), as create_all made it before migrations.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the model types: a migration must not change when schema.py evolves.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "bridge_patients",
        sa.Column("ins", sa.String(15), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("given_name", sa.String(200), nullable=True),
        sa.Column("family_name", sa.String(200), nullable=True),
        sa.Column("password_hash", sa.String(300), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("ins", name="pk_bridge_patients"),
    )
    op.create_table(
        "bridge_messages",
        sa.Column("id", BigId, nullable=False),
        sa.Column("ins", sa.String(15), nullable=False),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("message_id", sa.String(1000), nullable=True),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("blob_key", sa.String(32), nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bridge_messages"),
        sa.UniqueConstraint("ins", "direction", "message_id", name="uq_bridge_messages_ins_direction_message_id"),
    )
    op.create_index("ix_bridge_messages_ins_at", "bridge_messages", ["ins", "at"])
    op.create_table(
        "bridge_audit",
        sa.Column("id", BigId, nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("ins", sa.String(15), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bridge_audit"),
    )
    op.create_index("ix_bridge_audit_at", "bridge_audit", ["at"])
    op.create_index("ix_bridge_audit_ins", "bridge_audit", ["ins"])


def downgrade() -> None:
    op.drop_table("bridge_audit")
    op.drop_table("bridge_messages")
    op.drop_table("bridge_patients")
