"""Initial schema: accounts, mailboxes (IMAP folders), blobs, messages.

Revision ID: 0001
Revises:
Create Date: 2024-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the model types: a migration must not change when models.py evolves.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", BigId, nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("address", name="uq_accounts_address"),
    )
    op.create_table(
        "mailboxes",
        sa.Column("id", BigId, nullable=False),
        sa.Column("account_id", BigId, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uidnext", sa.BigInteger(), nullable=False),
        sa.Column("highestmodseq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mailboxes"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_mailboxes_account_id_accounts", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("account_id", "name", name="uq_mailboxes_account_id_name"),
    )
    op.create_table(
        "blobs",
        sa.Column("id", BigId, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_blobs"),
        sa.UniqueConstraint("key", name="uq_blobs_key"),
    )
    op.create_table(
        "messages",
        sa.Column("id", BigId, nullable=False),
        sa.Column("mailbox_id", BigId, nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.Column("flags", sa.Text(), nullable=False),
        sa.Column("internaldate", Timestamp, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("blob_id", BigId, nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("from_addr", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("authentication_results", sa.Text(), nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["mailbox_id"], ["mailboxes.id"], name="fk_messages_mailbox_id_mailboxes", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"], name="fk_messages_blob_id_blobs"),
        sa.UniqueConstraint("mailbox_id", "uid", name="uq_messages_mailbox_id_uid"),
    )
    op.create_index(
        "uq_messages_mailbox_id_message_id",
        "messages",
        ["mailbox_id", "message_id"],
        unique=True,
        sqlite_where=sa.text("message_id IS NOT NULL"),
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )
    op.create_index("ix_messages_mailbox_id_modseq", "messages", ["mailbox_id", "modseq"])
    op.create_index("ix_messages_blob_id", "messages", ["blob_id"])


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_table("blobs")
    op.drop_table("mailboxes")
    op.drop_table("accounts")
