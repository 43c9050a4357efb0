"""The space's whole life: the opt-out window, when the space first took mail, deletion and purge,
legal representatives of children, and no-reply messages (the welcome).

Spaces that already take mail (or did: closed) count as opened at their creation: they get no
welcome message after the fact.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("bridge_patients") as batch:
        batch.add_column(sa.Column("window_ends_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("space_opened_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("deleted_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("purged_at", Timestamp, nullable=True))
    op.execute("UPDATE bridge_patients SET space_opened_at = created_at "
               "WHERE state IN ('active', 'not_activated', 'closed')")
    with op.batch_alter_table("bridge_messages") as batch:
        batch.add_column(sa.Column("no_reply", sa.Boolean(), nullable=False, server_default="0"))
    op.create_table(
        "bridge_representatives",
        sa.Column("child", sa.String(15), nullable=False),
        sa.Column("representative", sa.String(15), nullable=False),
        sa.Column("since", Timestamp, nullable=False),
        sa.Column("ended_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("child", "representative", name="pk_bridge_representatives"),
    )
    op.create_index("ix_bridge_representatives_representative", "bridge_representatives", ["representative"])


def downgrade() -> None:
    raise NotImplementedError("a space's history cannot be removed: restore a backup instead")
