"""Accounts that log in: kind, state, password hash, an APP mailbox's bound certificate, timestamps (they
lived in HOME's credentials.json, which the first start imports once).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Frozen copies of the model types: a migration must not change when models.py evolves.
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("accounts", sa.Column("kind", sa.String(3), nullable=True))
    op.add_column("accounts", sa.Column("state", sa.String(8), nullable=False, server_default="enabled"))
    op.add_column("accounts", sa.Column("password_hash", sa.Text(), nullable=True))
    op.add_column("accounts", sa.Column("cert_sha256", sa.String(64), nullable=True))
    op.add_column("accounts", sa.Column("cert_pem", sa.Text(), nullable=True))
    op.add_column("accounts", sa.Column("updated_at", Timestamp, nullable=True))
    op.add_column("accounts", sa.Column("last_login_at", Timestamp, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        for column in ("last_login_at", "updated_at", "cert_pem", "cert_sha256", "password_hash", "state", "kind"):
            batch.drop_column(column)
