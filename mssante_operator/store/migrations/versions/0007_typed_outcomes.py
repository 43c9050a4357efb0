"""The last reply of a queued recipient as typed columns (kind, code, enhanced code, text), not one string
that the DSN code parsed back; existing rows are split once, here.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BATCH = 1000
# Frozen copies (a migration must not change when the code evolves): how replies were written until now.
_CODE = re.compile(r"(\d{3}) (.*)", re.DOTALL)
_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}")
_KIND_OF_STATUS = {"delivered": "delivered", "deferred": "temporary", "failed": "permanent"}


def _typed(reply: str, status: str) -> dict[str, object]:
    """The typed columns of a stored reply line: "550 5.1.1 text", "4.3.0 text", "250 text" or a sentence.
    A split is kept only when joining the parts gives the line back, so `queue show` prints what it did."""
    code, rest = None, reply
    if (match := _CODE.fullmatch(reply)) is not None:
        code, rest = int(match.group(1)), match.group(2)
    enhanced, text = None, rest
    head, _, tail = rest.partition(" ")
    found = _ENHANCED.fullmatch(head)
    if found is not None and (code is None or str(code)[0] == found.group(1)) and (tail or rest == head):
        enhanced, text = head, tail
    if code is not None:
        kind = "delivered" if code < 400 else "temporary" if code < 500 else "permanent"
    else:
        kind = _KIND_OF_STATUS.get(status, "temporary")
    return {"b_kind": kind, "b_code": code, "b_enhanced": enhanced, "b_text": text}


def upgrade() -> None:
    op.add_column("outbound_recipients", sa.Column("last_kind", sa.String(16), nullable=True))
    op.add_column("outbound_recipients", sa.Column("last_code", sa.Integer(), nullable=True))
    op.add_column("outbound_recipients", sa.Column("last_enhanced", sa.String(16), nullable=True))
    op.add_column("outbound_recipients", sa.Column("last_text", sa.Text(), nullable=True))
    recipients = sa.table("outbound_recipients", sa.column("id", sa.BigInteger), sa.column("status", sa.String),
                          sa.column("last_reply", sa.Text), sa.column("last_kind", sa.String),
                          sa.column("last_code", sa.Integer), sa.column("last_enhanced", sa.String),
                          sa.column("last_text", sa.Text))
    fill = (recipients.update().where(recipients.c.id == sa.bindparam("b_id"))
            .values(last_kind=sa.bindparam("b_kind"), last_code=sa.bindparam("b_code"),
                    last_enhanced=sa.bindparam("b_enhanced"), last_text=sa.bindparam("b_text")))
    conn = op.get_bind()
    after = 0
    while True:  # rows never attempted (last_reply "") keep NULLs
        rows = conn.execute(sa.select(recipients.c.id, recipients.c.status, recipients.c.last_reply)
                            .where(recipients.c.id > after, recipients.c.last_reply != "")
                            .order_by(recipients.c.id).limit(_BATCH)).all()
        if not rows:
            break
        conn.execute(fill, [{"b_id": row.id, **_typed(row.last_reply, row.status)} for row in rows])
        after = rows[-1].id
    with op.batch_alter_table("outbound_recipients") as batch:
        batch.drop_column("last_reply")


def downgrade() -> None:
    op.add_column("outbound_recipients", sa.Column("last_reply", sa.Text(), nullable=False, server_default=""))
    recipients = sa.table("outbound_recipients", sa.column("last_reply", sa.Text), sa.column("last_code", sa.Integer),
                          sa.column("last_enhanced", sa.String), sa.column("last_text", sa.Text))
    code = sa.func.coalesce(sa.cast(recipients.c.last_code, sa.Text) + " ", "")
    enhanced = sa.func.coalesce(recipients.c.last_enhanced + " ", "")
    line = sa.func.rtrim(enhanced + sa.func.coalesce(recipients.c.last_text, ""), " ")
    op.execute(recipients.update().where(recipients.c.last_text.is_not(None)).values(last_reply=code + line))
    with op.batch_alter_table("outbound_recipients") as batch:
        batch.alter_column("last_reply", server_default=None)
        batch.drop_column("last_text")
        batch.drop_column("last_enhanced")
        batch.drop_column("last_code")
        batch.drop_column("last_kind")
