"""Keep the time zone of a message's INTERNALDATE.

RFC 3501 returns INTERNALDATE with the zone the client gave in APPEND (``"17-Jul-1996 02:44:25
-0700"``), and date searches (BEFORE/ON/SINCE) use the date in that zone. The instant stays in
``internaldate`` (UTC); its offset east of UTC, in minutes, goes in a column of its own.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("internaldate_offset", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("internaldate_offset")
