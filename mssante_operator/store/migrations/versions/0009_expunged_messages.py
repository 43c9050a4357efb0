"""The expunge log: which UIDs left a folder at which MODSEQ, so that a cached UID list (SELECT) is brought
up to date by two range reads instead of a full one, and QRESYNC can answer VANISHED (EARLIER) later.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "expunged_messages",
        sa.Column("mailbox_id", BigId, nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"], name="fk_expunged_messages_mailbox_id_mailboxes",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("mailbox_id", "uid", name="pk_expunged_messages"),
    )
    op.create_index("ix_expunged_messages_mailbox_id_modseq", "expunged_messages", ["mailbox_id", "modseq"])


def downgrade() -> None:
    op.drop_index("ix_expunged_messages_mailbox_id_modseq", table_name="expunged_messages")
    op.drop_table("expunged_messages")
