"""IMAP folders: special-use, \\Recent claims, subscriptions; dedup only for SMTP deliveries.

The unique (mailbox, Message-ID) index of 0001 made SMTP retries idempotent, but IMAP must store a
message twice when a client asks (APPEND of a draft saved again, COPY into a folder that holds the
same message). Deduplication moves to its own column, set only by SMTP delivery.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("messages", sa.Column("dedup_key", sa.Text(), nullable=True))
    op.execute("UPDATE messages SET dedup_key = message_id")
    op.drop_index("uq_messages_mailbox_id_message_id", table_name="messages")
    op.create_index(
        "uq_messages_mailbox_id_dedup_key",
        "messages",
        ["mailbox_id", "dedup_key"],
        unique=True,
        sqlite_where=sa.text("dedup_key IS NOT NULL"),
        postgresql_where=sa.text("dedup_key IS NOT NULL"),
    )
    op.add_column("accounts", sa.Column("uidvalidity_seq", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("mailboxes", sa.Column("special_use", sa.String(32), nullable=True))
    op.add_column("mailboxes", sa.Column("recent_uid", sa.BigInteger(), nullable=False, server_default="1"))
    op.create_table(
        "subscriptions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("account_id", BigId, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_subscriptions"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_subscriptions_account_id_accounts", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("account_id", "name", name="uq_subscriptions_account_id_name"),
    )


def downgrade() -> None:
    op.drop_table("subscriptions")
    op.drop_column("mailboxes", "recent_uid")
    op.drop_column("mailboxes", "special_use")
    op.drop_column("accounts", "uidvalidity_seq")
    op.drop_index("uq_messages_mailbox_id_dedup_key", table_name="messages")
    op.create_index(
        "uq_messages_mailbox_id_message_id",
        "messages",
        ["mailbox_id", "message_id"],
        unique=True,
        sqlite_where=sa.text("message_id IS NOT NULL"),
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )
    op.drop_column("messages", "dedup_key")
