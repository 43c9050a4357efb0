"""When each message row was saved into its folder (IMAP SAVEDATE, RFC 8514): delivery, APPEND and COPY set it;
rows from before take their received time.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("saved_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE messages SET saved_at = received_at")


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("saved_at")
