"""The cluster's identity: one row whose id the blob directory's marker file repeats (see Store.migrate);
and who sends a queued recipient's notice (notice_owner, notice_until): one report per outcome.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen copies of the model types: a migration must not change when models.py evolves.
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "store_identity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_store_identity"),
    )
    op.add_column("outbound_recipients", sa.Column("notice_owner", sa.String(128), nullable=True))
    op.add_column("outbound_recipients", sa.Column("notice_until", Timestamp, nullable=True))
    # Final notices owed before this version: claimable at once by any worker (a claim given back).
    recipients = sa.table("outbound_recipients", sa.column("final_at", Timestamp), sa.column("notified", sa.Boolean),
                          sa.column("notice_owner", sa.String))
    op.execute(recipients.update()
               .where(recipients.c.final_at.is_not(None), recipients.c.notified.is_(False))
               .values(notice_owner=""))


def downgrade() -> None:
    with op.batch_alter_table("outbound_recipients") as batch:
        batch.drop_column("notice_until")
        batch.drop_column("notice_owner")
    op.drop_table("store_identity")
